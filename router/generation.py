"""What every text surface (chat completions, Anthropic Messages,
Responses) does with a model's output: split reasoning from the answer,
parse tool calls, keep logprobs; as the typed events of
`modelyard.router.events`, which each surface renders in its own format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from modelyard.adapters.base import Finished, PromptTokens, TextDelta, TokenLogprob
from modelyard.router.errors import APIError
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    PromptSize,
    ReasoningDelta,
    TokenLogprobs,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.router.textparse import ParsedCall, Piece, ReasoningSplitter, ToolCallParser

R = TypeVar("R")
Out = TypeVar("Out")


def wire_logprobs(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": e.token,
            "logprob": e.logprob,
            "bytes": e.bytes,
            "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in e.top],
        }
        for e in entries
    ]


class ChoiceBuilder:
    """Turns one choice's text deltas into typed events: reasoning, answer
    text and tool calls, parsed as they stream."""

    def __init__(self, index: int, reasoning_tags: list[str], parse_tools: bool) -> None:
        self.index = index
        self.splitter = ReasoningSplitter(reasoning_tags)
        self.tool_parser = ToolCallParser() if parse_tools else None
        self.calls = 0

    def accept(self, accepted: PromptTokens) -> list[Event]:
        return [PromptSize(accepted.count, accepted.cached, choice=self.index)]

    def feed(self, delta: TextDelta) -> list[Event]:
        events: list[Event] = []
        if delta.logprobs:
            events.append(TokenLogprobs(tuple(delta.logprobs), choice=self.index))
        return events + self._pieces(self.splitter.feed(delta.text))

    def finish(self, finished: Finished) -> list[Event]:
        events = self._pieces(self.splitter.flush())
        if self.tool_parser is not None:
            events += self._content(self.tool_parser.flush(truncated=finished.finish_reason == "length"))
        return events + [
            Finish(
                finished.prompt_tokens,
                finished.completion_tokens,
                finished.finish_reason,
                finished.stop_sequence,
                self.calls,
                finished.cached_tokens,
                choice=self.index,
            )
        ]

    def _pieces(self, pieces: list[Piece]) -> list[Event]:
        events: list[Event] = []
        for piece in pieces:
            if piece.kind == "reasoning":
                events.append(ReasoningDelta(piece.text, choice=self.index))
            elif self.tool_parser is not None:
                events += self._content(self.tool_parser.feed(piece.text))
            else:
                events += self._content([piece.text])
        return events

    def _content(self, parts: list[str | ParsedCall]) -> list[Event]:
        events: list[Event] = []
        for part in parts:
            if isinstance(part, ParsedCall):
                position = self.calls
                self.calls += 1
                events.append(ToolCallOpened(position, part.id, part.name, choice=self.index))
                events.append(ToolArgumentsDelta(position, part.arguments, choice=self.index))
            elif part:
                events.append(ContentDelta(part, choice=self.index))
        return events


class FeedsOn(Protocol[Out]):
    """What turns adapter events into output: ChoiceBuilder (typed events),
    ResponseRun (Responses stream events)."""

    def accept(self, accepted: PromptTokens) -> list[Out]: ...

    def feed(self, delta: TextDelta) -> list[Out]: ...

    def finish(self, finished: Finished) -> list[Out]: ...


async def fed(events: AsyncIterator[Any], consumer: FeedsOn[Out]) -> AsyncIterator[Out]:
    """Feed one call's adapter events (PromptTokens, TextDelta … Finished)
    to `consumer` and yield what it makes; a call that ends without Finished
    is an error. Closing this does not close `events`."""
    finished = False
    async for item in events:
        if isinstance(item, PromptTokens):
            for out in consumer.accept(item):
                yield out
        elif isinstance(item, TextDelta):
            for out in consumer.feed(item):
                yield out
        elif isinstance(item, Finished):
            finished = True
            for out in consumer.finish(item):
                yield out
    if not finished:
        raise APIError(500, "The model stopped without finishing its answer.", code="backend_error")


async def model_output(events: AsyncIterator[Any], builder: ChoiceBuilder) -> AsyncIterator[Event]:
    """One call's adapter events as typed events. Closing this closes `events`."""
    try:
        async for event in fed(events, builder):
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def choices(
    call: Callable[[R], AsyncIterator[Any]], requests: Sequence[R], builders: Sequence[ChoiceBuilder], width: int
) -> AsyncIterator[Event]:
    """The typed events of one call per choice (`n`), up to `width` at once."""
    sources = [lambda r=request, b=builder: model_output(call(r), b) for request, builder in zip(requests, builders)]
    async for event in interleaved(sources, width):
        yield event


async def interleaved(sources: Sequence[Callable[[], AsyncIterator[Event]]], width: int) -> AsyncIterator[Event]:
    """The events of several choices' calls, up to `width` running at once (a
    model with several slots decodes them together), as they come; each event
    names its choice. With a width of 1 the calls run one after another. The
    first failure ends them all."""
    if width <= 1 or len(sources) <= 1:
        for source in sources:
            output = source()
            try:
                async for event in output:
                    yield event
            finally:
                await output.aclose()  # type: ignore[attr-defined]
        return
    ended = object()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    room = asyncio.Semaphore(width)

    async def pump(source: Callable[[], AsyncIterator[Event]]) -> None:
        try:
            async with room:
                output = source()
                try:
                    async for event in output:
                        queue.put_nowait(event)
                finally:
                    await output.aclose()  # type: ignore[attr-defined]
            queue.put_nowait(ended)
        except Exception as exc:
            queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(source)) for source in sources]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is ended:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
