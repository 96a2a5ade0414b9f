"""What one Responses API run does, apart from HTTP and storage: turn input
items into a chat conversation, and turn the model's output into the
Response object and the stream events that build it.

`ResponseRun` is a plain state machine: each call returns the events it
caused (dicts with `type` and `sequence_number`) and updates the response.
The same events serve `stream: true`, background runs (kept for late
subscribers) and plain requests (which only keep the final object).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from modelyard.adapters.base import Finished, PromptTokens, TextDelta
from modelyard.router import events as ev
from modelyard.router import reasoning
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.generation import ChoiceBuilder, fed, wire_logprobs
from modelyard.router.response_tools import LOCAL_SHELL, ToolTarget, call_arguments
from modelyard.router.response_tools import model_name as tools_model_name
from modelyard.router.surface import COMMENT_KEEPALIVE, Frame
from modelyard.schemas import responses as rs

Event = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# --- input items → conversation ---------------------------------------------


def _parts(content: str | list[Any], role: str, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if role == "assistant":
            return [{"type": "output_text", "text": content, "annotations": []}]
        return [{"type": "input_text", "text": content}]
    parts = []
    for index, part in enumerate(content):
        if isinstance(part, rs.OtherPart):
            raise invalid_request(
                f"Content of type '{part.type}' is not supported by this model; send text.", param=f"{param}[{index}]"
            )
        parts.append(part.model_dump(mode="json", exclude_none=True))
    return parts


def _stored(item: Any, prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = item.model_dump(mode="json", exclude_none=True)
    data["id"] = data.get("id") or new_id(prefix)
    return data


def normalize_input(value: str | list[Any]) -> list[dict[str, Any]]:
    """The request's input as stored items, each with an id and a status."""
    if isinstance(value, str):
        value = [rs.MessageItem(role="user", content=value)]
    items: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if isinstance(item, rs.MessageItem):
            items.append(
                {
                    "id": item.id or new_id("msg"),
                    "type": "message",
                    "role": item.role,
                    "content": _parts(item.content, item.role, f"{param}.content"),
                    "status": "completed",
                }
            )
        elif isinstance(item, rs.FunctionCallItem):
            call = {
                "id": item.id or new_id("fc"),
                "type": "function_call",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": item.arguments,
                "status": "completed",
            }
            if item.namespace:
                call["namespace"] = item.namespace
            items.append(call)
        elif isinstance(item, rs.FunctionCallOutputItem | rs.CustomToolCallOutputItem):
            output = item.output if isinstance(item.output, str) else _parts(item.output, "tool", f"{param}.output")
            prefix = "fco" if item.type == "function_call_output" else "ctco"
            items.append({"id": item.id or new_id(prefix), "type": item.type, "call_id": item.call_id, "output": output, "status": "completed"})
        elif isinstance(item, rs.LocalShellCallOutputItem):
            call_id = item.call_id or item.id
            if not call_id:
                raise invalid_request("A local_shell_call_output needs the call's id (call_id or id).", param=f"{param}.call_id")
            items.append({"id": item.id or call_id, "type": item.type, "call_id": call_id, "output": item.output, "status": "completed"})
        elif isinstance(item, rs.CustomToolCallItem | rs.LocalShellCallItem | rs.ReasoningItem):
            prefix = {"custom_tool_call": "ctc", "local_shell_call": "lsh", "reasoning": "rs"}[item.type]
            items.append(_stored(item, prefix))
        elif item.type in rs.UNREAD_ITEM_TYPES:
            # Kept in the history (input_items); left out of the prompt.
            items.append({**item.model_dump(mode="json", exclude_none=True), "id": getattr(item, "id", None) or new_id("item")})
        else:
            raise invalid_request(
                f"Input items of type '{item.type}' are not supported by this server; send messages, tool calls "
                "and their outputs, and reasoning items.",
                param=f"{param}.type",
            )
    return items


def unread_items(items: list[dict[str, Any]]) -> list[str]:
    """The types of the items the model will not see (hosted tool calls, compaction)."""
    return sorted({item["type"] for item in items if item["type"] in rs.UNREAD_ITEM_TYPES})


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", part.get("refusal", "")) for part in content)


def _reasoning_text(item: dict[str, Any], so_far: int) -> str:
    """The reasoning an item carries: this server's encoded content, or its
    reasoning_text parts. `so_far` characters of reasoning came before it."""
    budget = reasoning.MAX_REASONING_CHARS - so_far
    try:
        opened = reasoning.unseal(item.get("encrypted_content"), budget)
    except reasoning.ReasoningTooLong as exc:
        raise invalid_request(f"input: {exc}.", param="input", code="limit_exceeded") from None
    if opened is not None:
        return opened
    parts = item.get("content") or ()
    # Parts of other shapes (not OpenAI's {"type": "reasoning_text", "text": ...}) carry nothing to show.
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and part.get("type") == "reasoning_text" and isinstance(part.get("text"), str)
    )


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _shell_arguments(action: dict[str, Any]) -> str:
    arguments = {"command": action.get("command") or []}
    if action.get("working_directory"):
        arguments["workdir"] = action["working_directory"]
    if action.get("timeout_ms") is not None:
        arguments["timeout_ms"] = action["timeout_ms"]
    return json.dumps(arguments, ensure_ascii=False)


def chat_messages(
    instructions: str | None, items: list[dict[str, Any]], reasoning_tags: list[str] | None = None
) -> list[dict[str, Any]]:
    """Stored items as the plain chat messages a ChatRequest takes.

    `instructions` and the system and developer messages before the first
    other item become one leading system message (strict chat templates take
    one, first). A system or developer message later in the conversation
    becomes a user turn that starts with `[developer message]` (or
    `[system message]`), and consecutive user turns are joined, so that
    templates that insist on alternating turns accept the conversation.
    Reasoning items after the last user message (the reasoning of the turn
    in progress) go back into the prompt inside the model's reasoning tags,
    before the assistant text or calls that followed them; older ones, as
    chat templates do, are left out. Hosted tool calls are left out.
    """
    system = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    users = [i for i, item in enumerate(items) if item["type"] == "message" and item["role"] == "user"]
    current_turn = users[-1] if users else -1
    thinking = ""  # reasoning items waiting for the model output they came with

    def assistant(text: str) -> dict[str, Any]:
        """A new assistant turn, led by the pending reasoning."""
        nonlocal thinking
        if thinking and reasoning_tags:
            text = f"{reasoning_tags[0]}{thinking}{reasoning_tags[1]}" + (f"\n{text}" if text else "")
        thinking = ""
        message = {"role": "assistant", "content": text}
        messages.append(message)
        return message

    def calling() -> dict[str, Any]:
        """The assistant turn a tool call belongs to: the one just written, or a new one."""
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and not thinking:
            return last
        return assistant("")

    def user(text: str) -> None:
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "user":
            last["content"] += "\n\n" + text
        else:
            messages.append({"role": "user", "content": text})

    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "message" and item["role"] in ("system", "developer"):
            if not messages:
                system.append(_text(item["content"]))
            else:
                user(f"[{item['role']} message]\n{_text(item['content'])}")
        elif kind == "message" and item["role"] == "user":
            user(_text(item["content"]))
        elif kind == "message":
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not thinking and not last.get("tool_calls"):
                last["content"] = "\n".join(t for t in (last["content"], _text(item["content"])) if t)
            else:
                assistant(_text(item["content"]))
        elif kind == "reasoning":
            if index > current_turn:
                thinking += _reasoning_text(item, len(thinking))
        elif kind == "function_call":
            name = tools_model_name(item["name"], item.get("namespace"))
            calling().setdefault("tool_calls", []).append(_call(item["call_id"], name, item["arguments"]))
        elif kind == "custom_tool_call":
            name = tools_model_name(item["name"], item.get("namespace"))
            arguments = json.dumps({"input": item["input"]}, ensure_ascii=False)
            calling().setdefault("tool_calls", []).append(_call(item["call_id"], name, arguments))
        elif kind == "local_shell_call":
            call = _call(item["call_id"], LOCAL_SHELL, _shell_arguments(item.get("action") or {}))
            calling().setdefault("tool_calls", []).append(call)
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            messages.append({"role": "tool", "content": _text(item["output"]), "tool_call_id": item["call_id"]})
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return messages


# --- model output → response and events -------------------------------------


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

    def snapshot(self) -> dict[str, Any]:
        data = self.response.model_dump(mode="json")
        for name in ("usage", "user"):  # OpenAI's schema has them absent, not null
            if data[name] is None:
                del data[name]
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
        arguments = call_arguments(self.arguments)
        text = arguments.get("input") if arguments is not None else None
        item.input = text if isinstance(text, str) else self.arguments
        return [
            self._event("response.custom_tool_call_input.delta", item_id=item.id, output_index=index, delta=item.input),
            self._event("response.custom_tool_call_input.done", item_id=item.id, output_index=index, input=item.input),
        ]

    def _close_shell(self, item: rs.LocalShellCallOutput) -> None:
        arguments = call_arguments(self.arguments) or {}
        command = arguments.get("command")
        if isinstance(command, str):
            command = [command]
        item.action.command = [str(part) for part in command] if isinstance(command, list) else []
        workdir, timeout = arguments.get("workdir"), arguments.get("timeout_ms")
        item.action.working_directory = workdir if isinstance(workdir, str) else None
        item.action.timeout_ms = timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else None

    def _add(self, item: rs.OutputMessage | rs.ToolCallItem | rs.ReasoningOutput) -> list[Event]:
        self.response.output.append(item)
        self.open = item
        return [self._event("response.output_item.added", output_index=self._index, item=item.model_dump(mode="json"))]

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
            self._close_shell(item)
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
        events.append(self._event("response.output_item.done", output_index=index, item=item.model_dump(mode="json")))
        return events

    def _part_done(self, item_id: str, index: int, part: rs.OutputText | rs.ReasoningText) -> Event:
        return self._event(
            "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part.model_dump(mode="json")
        )


def framed(events: list[Event]) -> list[Frame]:
    return [Frame(event, event["type"]) for event in events]


async def drive(run: ResponseRun, events: AsyncIterator[Any]) -> AsyncIterator[Event]:
    """Feed a model's events to `run` and yield the stream events; model
    failures propagate. Closing this does not close `events`."""
    async for event in fed(events, run):
        yield event
