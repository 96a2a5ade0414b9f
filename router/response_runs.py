"""What one Responses API run does with the model's output, apart from HTTP
and storage: turn the typed model events (modelyard.router.events) into the
Response object and the stream events that build it. The request's input
becomes the chat conversation in modelyard.router.response_input.

`ResponseRun` is a plain state machine: each call returns the events it
caused (dicts with `type` and `sequence_number`) and updates the response.
The same events serve `stream: true`, background runs (kept for late
subscribers) and plain requests (which only keep the final object).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from modelyard.adapters.base import Finished, PromptTokens, TextDelta
from modelyard.router import events as ev
from modelyard.router import reasoning
from modelyard.router.errors import APIError
from modelyard.router.generation import ChoiceBuilder, wire_logprobs
from modelyard.router.response_tools import ToolTarget, custom_input, shell_action
from modelyard.router.surface import COMMENT_KEEPALIVE, Frame
from modelyard.schemas import responses as rs
from pydantic import BaseModel

Event = dict[str, Any]


def new_id(prefix: str) -> str:
    """An id of the form OpenAI gives a response and its items: `msg_…`, `fc_…`, `resp_…`."""
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseRun:
    """Builds one response from a model's text deltas."""

    def __init__(
        self,
        response: rs.ResponseObject,
        reasoning_tags: list[str],
        parse_tools: bool,
        targets: dict[str, ToolTarget] | None = None,
        seal_reasoning: bool = False,
    ) -> None:
        self.response = response
        self.builder = ChoiceBuilder(0, reasoning_tags, parse_tools)
        # The names the model calls → the tools the client declared (modelyard.router.response_tools).
        self.targets = targets or {}
        self.seal_reasoning = seal_reasoning
        self.sequence = 0
        self.open: rs.OutputMessage | rs.ToolCallItem | rs.ReasoningOutput | None = None
        self.arguments = ""  # the open custom or local shell call's JSON arguments, as they come
        # Whitespace before a message opens: dropped if a tool call comes instead.
        self.pending_space = ""
        self.pending_logprobs: list[dict[str, Any]] = []

    @property
    def id(self) -> str:
        return self.response.id

    @property
    def terminal(self) -> bool:
        return self.response.status not in ("queued", "in_progress")

    def stored(self) -> dict[str, Any]:
        """The response as the store keeps it (every field of every item)."""
        data = self.response.model_dump(mode="json")
        for name in ("usage", "user"):  # OpenAI's schema has them absent, not null
            if data[name] is None:
                del data[name]
        return data

    def snapshot(self) -> dict[str, Any]:
        """The response as the client sees it (router/response_hosted.py leaves out what `include` did not ask for)."""
        return self.stored()

    def _item_json(self, item: BaseModel) -> dict[str, Any]:
        """An output item as a stream event carries it."""
        data: dict[str, Any] = item.model_dump(mode="json")
        return data

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _lifecycle(self, kind: str) -> Event:
        return self._event(kind, response=self.snapshot())

    @property
    def _index(self) -> int:
        return len(self.response.output) - 1

    # lifecycle

    def created(self) -> list[Event]:
        events = [self._lifecycle("response.created")]
        if self.response.status == "queued":
            events.append(self._lifecycle("response.queued"))
        return events

    def started(self) -> list[Event]:
        self.response.status = "in_progress"
        return [self._lifecycle("response.in_progress")]

    def accept(self, accepted: PromptTokens) -> list[Event]:
        return [event for typed in self.builder.accept(accepted) for event in self.apply(typed)]

    def feed(self, delta: TextDelta) -> list[Event]:
        return [event for typed in self.builder.feed(delta) for event in self.apply(typed)]

    def finish(self, finished: Finished) -> list[Event]:
        return [event for typed in self.builder.finish(finished) for event in self.apply(typed)]

    def apply(self, event: ev.Event) -> list[Event]:
        """One typed model event → the stream events it causes."""
        if isinstance(event, ev.PromptSize):
            return []  # response.created and response.in_progress went out already
        if isinstance(event, ev.TokenLogprobs):
            self.pending_logprobs += wire_logprobs(event.entries)
            return []
        if isinstance(event, ev.ReasoningDelta):
            return self._reasoning(event.text)
        if isinstance(event, ev.ContentDelta):
            return self._content(event.text)
        if isinstance(event, ev.ToolCallOpened):
            return self._close() + self._add(self._call_item(event))
        if isinstance(event, ev.ToolArgumentsDelta):
            if not isinstance(self.open, rs.FunctionCallOutput):
                self.arguments += event.arguments  # a custom or shell call: its item is built when it closes
                return []
            self.open.arguments += event.arguments
            kind = "response.function_call_arguments.delta"
            return [self._event(kind, item_id=self.open.id, output_index=self._index, delta=event.arguments)]
        return self._finished(event)

    def _finished(self, finished: ev.Finish) -> list[Event]:
        events: list[Event] = []
        if not self.response.output:
            # Always answer with a message, even an empty one.
            events += self._open_message()
            if self.pending_space:
                events.append(self._text_delta(self.pending_space))
        truncated = finished.stop_reason == "length"
        events += self._close("incomplete" if truncated else "completed")
        self.response.usage = rs.ResponseUsage(
            input_tokens=finished.prompt_tokens,
            input_tokens_details=rs.InputTokensDetails(cached_tokens=finished.cached_tokens),
            output_tokens=finished.completion_tokens,
            total_tokens=finished.prompt_tokens + finished.completion_tokens,
        )
        if truncated:
            self.response.status = "incomplete"
            self.response.incomplete_details = rs.IncompleteDetails(reason="max_output_tokens")
            return events + [self._lifecycle("response.incomplete")]
        self.response.status = "completed"
        self.response.completed_at = int(time.time())
        return events + [self._lifecycle("response.completed")]

    def fail(self, error: APIError) -> list[Event]:
        events = self._close("incomplete")
        self.response.status = "failed"
        code = "invalid_prompt" if error.status == 400 else "server_error"
        self.response.error = rs.ResponseError(code=code, message=error.message)
        return events + [self._lifecycle("response.failed")]

    def cancel(self) -> list[Event]:
        events = self._close("incomplete")
        self.response.status = "cancelled"
        return events

    # as a renderer (modelyard.router.surface): the same events, as frames

    def opening(self) -> list[Frame]:
        return framed(self.created() + self.started())

    def render(self, event: ev.Event) -> list[Frame]:
        return framed(self.apply(event))

    def keepalive(self) -> list[Frame]:
        return [COMMENT_KEEPALIVE]

    def closing(self) -> list[Frame]:
        return []

    def failure(self, error: APIError) -> list[Frame]:
        return framed(self.fail(error))

    def result(self) -> dict[str, Any]:
        return self.snapshot()

    # output items

    def _call_item(self, event: ev.ToolCallOpened) -> rs.ToolCallItem:
        """The output item of a call, by what the called name stands for."""
        self.arguments = ""
        target = self.targets.get(event.name)
        if target is None or target.kind == "function":
            name, namespace = (target.name, target.namespace) if target is not None else (event.name, None)
            return rs.FunctionCallOutput(id=new_id("fc"), call_id=event.id, name=name, namespace=namespace)
        if target.kind == "custom":
            return rs.CustomToolCallOutput(id=new_id("ctc"), call_id=event.id, name=target.name, namespace=target.namespace)
        return rs.LocalShellCallOutput(id=new_id("lsh"), call_id=event.id)

    def _close_custom(self, item: rs.CustomToolCallOutput, index: int) -> list[Event]:
        item.input = custom_input(self.arguments)
        return [
            self._event("response.custom_tool_call_input.delta", item_id=item.id, output_index=index, delta=item.input),
            self._event("response.custom_tool_call_input.done", item_id=item.id, output_index=index, input=item.input),
        ]

    def _add(self, item: rs.OutputMessage | rs.ToolCallItem | rs.ReasoningOutput) -> list[Event]:
        self.response.output.append(item)
        self.open = item
        return [self._event("response.output_item.added", output_index=self._index, item=self._item_json(item))]

    def _part_added(self, item_id: str, part: rs.OutputText | rs.ReasoningText) -> Event:
        return self._event(
            "response.content_part.added",
            item_id=item_id,
            output_index=self._index,
            content_index=0,
            part=part.model_dump(mode="json"),
        )

    def _open_message(self) -> list[Event]:
        events = self._close()
        message = rs.OutputMessage(id=new_id("msg"))
        events += self._add(message)
        part = rs.OutputText()
        message.content.append(part)
        return events + [self._part_added(message.id, part)]

    def _content(self, text: str) -> list[Event]:
        events: list[Event] = []
        if not isinstance(self.open, rs.OutputMessage):
            if not text.strip():
                self.pending_space += text
                return []
            events += self._open_message()
            text, self.pending_space = self.pending_space + text, ""
        return events + [self._text_delta(text)]

    def _text_delta(self, text: str) -> Event:
        assert isinstance(self.open, rs.OutputMessage)
        part = self.open.content[0]
        part.text += text
        logprobs, self.pending_logprobs = self.pending_logprobs, []
        part.logprobs += logprobs
        return self._event(
            "response.output_text.delta",
            item_id=self.open.id,
            output_index=self._index,
            content_index=0,
            delta=text,
            logprobs=logprobs,
        )

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = []
        if not isinstance(self.open, rs.ReasoningOutput):
            events += self._close()
            item = rs.ReasoningOutput(id=new_id("rs"))
            events += self._add(item)
            part = rs.ReasoningText()
            item.content.append(part)
            events.append(self._part_added(item.id, part))
        assert isinstance(self.open, rs.ReasoningOutput)
        self.open.content[0].text += text
        return events + [
            self._event(
                "response.reasoning_text.delta", item_id=self.open.id, output_index=self._index, content_index=0, delta=text
            )
        ]

    def _close(self, status: rs.ItemStatus = "completed") -> list[Event]:
        item, self.open = self.open, None
        if item is None:
            return []
        item.status = status
        index = self._index
        events: list[Event] = []
        if isinstance(item, rs.OutputMessage):
            part = item.content[0]
            events.append(
                self._event(
                    "response.output_text.done",
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    text=part.text,
                    logprobs=part.logprobs,
                )
            )
            events.append(self._part_done(item.id, index, part))
        elif isinstance(item, rs.ReasoningOutput):
            thought = item.content[0]
            if self.seal_reasoning:
                item.encrypted_content = reasoning.seal(thought.text)
            events.append(
                self._event(
                    "response.reasoning_text.done", item_id=item.id, output_index=index, content_index=0, text=thought.text
                )
            )
            events.append(self._part_done(item.id, index, thought))
        elif isinstance(item, rs.CustomToolCallOutput):
            events += self._close_custom(item, index)
        elif isinstance(item, rs.LocalShellCallOutput):
            item.action = shell_action(self.arguments)
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=index,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=self._item_json(item)))
        return events

    def _part_done(self, item_id: str, index: int, part: rs.OutputText | rs.ReasoningText) -> Event:
        return self._event(
            "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part.model_dump(mode="json")
        )


def framed(events: list[Event]) -> list[Frame]:
    return [Frame(event, event["type"]) for event in events]
