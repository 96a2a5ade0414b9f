"""How a text surface answers: start the model call, wait for its first
event (so that a failure before any output still gets its status code),
then either stream the renderer's frames or collect them into the JSON
answer. A client that goes away raises ClientGone, which errors.install
answers with a quiet 499; a stream that fails midway ends with the
surface's own error event (`Renderer.failure`).

The first event is the model's PromptTokens, sent once the prompt is
tokenized and checked, before it is evaluated: a stream's headers and
opening events go out at once, and while a long prompt is evaluated the
stream sends the surface's keep-alive every `[server] stream_keepalive`
seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from modelyard.router.deps import get_yard, request_id
from modelyard.router.errors import APIError
from modelyard.router.events import Event
from modelyard.router.streaming import (
    KEEPALIVE,
    EventStreamResponse,
    first_item,
    paced,
    sse,
    stream_failure,
    until_disconnected,
)


class Frame(NamedTuple):
    """One server-sent event before framing: its payload and, for the APIs
    that name events, its name; or, with `comment`, an SSE comment line."""

    data: Any
    event: str | None = None
    comment: bool = False

    def text(self) -> str:
        return KEEPALIVE if self.comment else sse(self.data, self.event)


# The keep-alive of the OpenAI streams: a comment, which SSE clients skip.
COMMENT_KEEPALIVE = Frame(None, comment=True)


class Renderer(Protocol):
    """One API surface's rendering of the model's events."""

    def opening(self) -> list[Frame]:
        """What a stream sends before the model's first event."""
        ...

    def render(self, event: Event) -> list[Frame]: ...

    def keepalive(self) -> list[Frame]:
        """What a stream sends when the model has been quiet for a while (a long prompt)."""
        ...

    def closing(self) -> list[Frame]:
        """What a stream sends after the model's last event."""
        ...

    def failure(self, error: APIError) -> list[Frame]:
        """What a stream sends when the model fails midway."""
        ...

    def result(self) -> dict[str, Any]:
        """The whole answer, for a request that does not stream."""
        ...


def keepalive_interval(request: Request) -> float:
    """`[server] stream_keepalive` of the config in force."""
    interval: float = get_yard(request).generation.loaded.config.server.stream_keepalive
    return interval


async def aclose(events: AsyncIterator[Any]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


async def pump(
    renderer: Renderer,
    first: Event,
    events: AsyncIterator[Event],
    req_id: str | None,
    after: Callable[[], Awaitable[None]] | None = None,
    keepalive: float = 10.0,
) -> AsyncIterator[str]:
    """The framed stream, with the renderer's keep-alive after each `keepalive`
    seconds without an event. `after` runs once the answer ended (completed
    or failed), not when the client went away."""
    quiet = paced(events, keepalive)
    try:
        for frame in renderer.opening() + renderer.render(first):
            yield frame.text()
        async for event in quiet:
            for frame in renderer.keepalive() if event is None else renderer.render(event):
                yield frame.text()
        for frame in renderer.closing():
            yield frame.text()
    except Exception as exc:
        for frame in renderer.failure(stream_failure(exc, req_id)):
            yield frame.text()
    finally:
        await aclose(quiet)
        await aclose(events)  # in case `quiet` never started
    if after is not None:
        await after()


async def collect(renderer: Renderer, first: Event, events: AsyncIterator[Event]) -> dict[str, Any]:
    try:
        renderer.opening()  # a renderer may keep state from it (Responses' lifecycle)
        renderer.render(first)
        async for event in events:
            renderer.render(event)
    finally:
        await aclose(events)
    return renderer.result()


async def answer(
    request: Request,
    events: AsyncIterator[Event],
    renderer: Renderer,
    stream: bool,
    after: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """Run a text surface's model call to its HTTP answer; `after` runs once
    the answer is complete (for a stream: completed or failed)."""
    first = await until_disconnected(request, first_item(events))
    if stream:
        return EventStreamResponse(pump(renderer, first, events, request_id(request), after, keepalive_interval(request)))
    result = await until_disconnected(request, collect(renderer, first, events))
    if after is not None:
        await after()
    return JSONResponse(result)
