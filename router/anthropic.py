"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API
over the same chat models. Errors on these routes take Anthropic's shape
(router/errors.py picks it by path)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from modelyard.adapters.base import ChatRequest, Sampling, ToolCalling
from modelyard.router.deps import resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    Prompt,
    ReasoningDelta,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.router.generation import ChoiceBuilder, model_output
from modelyard.router.limits import check_message_count, check_prompt, check_tools, limits_for, reject_lone_surrogates
from modelyard.router.surface import Frame, answer
from modelyard.schemas import anthropic as an

router = APIRouter()
ENDPOINT = "/v1/messages"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, an.TextBlock):
            parts.append(block.text)
        else:
            raise invalid_request(f"Content blocks of type '{block.type}' are not supported by this model; send text.")
    return "\n".join(parts)


def to_backend_messages(system: Any, messages: list[an.MessageParam]) -> list[dict[str, Any]]:
    """Anthropic's turns → the OpenAI-style messages the adapters render."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": text_of(system)})
    for index, message in enumerate(messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in message.content:
            if isinstance(block, an.TextBlock):
                texts.append(block.text)
            elif isinstance(block, an.ToolUseBlock) and message.role == "assistant":
                calls.append(
                    {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": json.dumps(block.input)}}
                )
            elif isinstance(block, an.ToolResultBlock) and message.role == "user":
                result = text_of(block.content)
                out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": ("Error: " if block.is_error else "") + result})
            elif isinstance(block, (an.ThinkingBlock, an.RedactedThinkingBlock)):
                continue  # earlier thinking is not sent back to the model
            else:
                raise invalid_request(f"messages[{index}]: content blocks of type '{block.type}' are not supported here.")
        if texts or calls:
            entry: dict[str, Any] = {"role": message.role, "content": "\n".join(texts)}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
    return out


def tool_calling(tools: list[an.Tool] | None, choice: an.ToolChoice | None) -> ToolCalling | None:
    if not tools or (choice is not None and choice.type == "none"):
        return None
    definitions = [
        {"type": "function", "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema}}
        for t in tools
    ]
    parallel = not (choice is not None and choice.disable_parallel_tool_use)
    if choice is None or choice.type == "auto":
        return ToolCalling(definitions, mode="auto", parallel=parallel)
    if choice.type == "any":
        return ToolCalling(definitions, mode="required", parallel=parallel)
    if not choice.name or choice.name not in [t.name for t in tools]:
        raise invalid_request(f"tool_choice names '{choice.name}', which is not among the tools.")
    return ToolCalling(definitions, mode="named", name=choice.name, parallel=False)


def backend_request(body: an.MessagesRequest | an.CountTokensRequest) -> ChatRequest:
    if body.thinking and body.thinking.get("type") not in (None, "disabled"):
        raise invalid_request("Extended thinking is not supported by this server.")
    sampling = Sampling()
    if isinstance(body, an.MessagesRequest):
        sampling = Sampling(
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            stop=[s for s in body.stop_sequences or [] if s],
        )
    return ChatRequest(
        messages=to_backend_messages(body.system, body.messages),
        sampling=sampling,
        tools=tool_calling(body.tools, body.tool_choice),
    )


def checked_request(body: an.MessagesRequest | an.CountTokensRequest, request: Request) -> ChatRequest:
    """The backend request, once the body is within `[limits]`."""
    limits = limits_for(request)
    check_message_count(len(body.messages), limits, "messages")  # cheap, before anything walks them
    reject_lone_surrogates(body)
    chat_request = backend_request(body)
    check_prompt(chat_request.messages, chat_request.tools, limits, "messages")
    if isinstance(body, an.MessagesRequest):  # counting tokens builds no grammar
        check_tools(chat_request.tools, limits, "tools[{}].input_schema")
    return chat_request


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


@router.post(ENDPOINT, response_model=an.Message)
async def create_message(body: an.MessagesRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    chat_request = checked_request(body, request)
    builder = ChoiceBuilder(0, entry.model.reasoning_tags, chat_request.tools is not None)
    renderer = MessageRenderer(f"msg_{uuid.uuid4().hex[:24]}", entry.id)
    return await answer(request, model_output(entry.stream("chat", chat_request), builder), renderer, bool(body.stream))


def usage_of(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, int]:
    """Anthropic's usage: input_tokens counts the prompt tokens not read from the cache."""
    return {
        "input_tokens": prompt_tokens - cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached_tokens,
        "output_tokens": output_tokens,
    }


def stop_reason_of(finish: Finish) -> str:
    return "stop_sequence" if finish.stop_sequence else STOP_REASONS.get(finish.finish_reason, "end_turn")


class MessageRenderer:
    """Anthropic's Messages: message_start, then each content block's start,
    deltas and stop, then message_delta and message_stop; or the whole message.
    message_start goes out with the model's first event (Prompt, before the
    prompt is evaluated), which gives its input_tokens; `ping` is the keep-alive."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.blocks: list[dict[str, Any]] = []  # the content so far, as the whole message has it
        self.open = False  # whether the last block is still open
        self.finish: Finish | None = None
        self.started = False  # whether message_start went out

    @staticmethod
    def frame(kind: str, **data: Any) -> Frame:
        return Frame({"type": kind, **data}, kind)

    def opening(self) -> list[Frame]:
        return []  # message_start waits for the prompt's size: the first event

    def keepalive(self) -> list[Frame]:
        return [self.frame("ping")]

    def _message_start(self, first: Event) -> list[Frame]:
        self.started = True
        prompt = first if isinstance(first, (Prompt, Finish)) else None
        usage = usage_of(prompt.prompt_tokens, prompt.cached_tokens, 0) if prompt else usage_of(0, 0, 0)
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [self.frame("message_start", message=message), self.frame("ping")]

    def _close(self) -> list[Frame]:
        if not self.open:
            return []
        self.open = False
        return [self.frame("content_block_stop", index=len(self.blocks) - 1)]

    def _start(self, block: dict[str, Any]) -> list[Frame]:
        frames = self._close()
        self.blocks.append(block)
        self.open = True
        start = {k: v for k, v in block.items() if k != "arguments"}  # a copy: the block grows with its deltas
        if block["type"] == "tool_use":
            start["input"] = {}
        return frames + [self.frame("content_block_start", index=len(self.blocks) - 1, content_block=start)]

    def _delta(self, kind: str, field: str, text: str, start: dict[str, Any]) -> list[Frame]:
        frames = [] if self.open and self.blocks[-1]["type"] == start["type"] else self._start(dict(start))
        self.blocks[-1][field] += text
        delta = {"type": kind, field: text}
        return frames + [self.frame("content_block_delta", index=len(self.blocks) - 1, delta=delta)]

    def render(self, event: Event) -> list[Frame]:
        frames = [] if self.started else self._message_start(event)
        if isinstance(event, ReasoningDelta):
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            frames += self._delta("thinking_delta", "thinking", event.text, empty)
        elif isinstance(event, ContentDelta):
            frames += self._delta("text_delta", "text", event.text, {"type": "text", "text": ""})
        elif isinstance(event, ToolCallOpened):
            frames += self._start({"type": "tool_use", "id": tool_use_id(event.id), "name": event.name, "arguments": ""})
        elif isinstance(event, ToolArgumentsDelta):
            self.blocks[-1]["arguments"] += event.arguments
            if event.arguments:
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                frames.append(self.frame("content_block_delta", index=len(self.blocks) - 1, delta=delta))
        elif isinstance(event, Finish):
            frames += self._finish(event)
        return frames

    def _finish(self, finish: Finish) -> list[Frame]:
        self.finish = finish
        frames = [] if self.blocks else self._start({"type": "text", "text": ""})  # an empty answer has one text block
        delta = {"stop_reason": stop_reason_of(finish), "stop_sequence": finish.stop_sequence}
        usage = usage_of(finish.prompt_tokens, finish.cached_tokens, finish.completion_tokens)
        frames += self._close()
        return frames + [self.frame("message_delta", delta=delta, usage=usage), self.frame("message_stop")]

    def closing(self) -> list[Frame]:
        return []

    def failure(self, error: APIError) -> list[Frame]:
        return [self.frame("error", error=error.body(ENDPOINT)["error"])]

    def result(self) -> dict[str, Any]:
        finish = self.finish
        assert finish is not None
        reasoning = "".join(b["thinking"] for b in self.blocks if b["type"] == "thinking")
        text = "".join(b["text"] for b in self.blocks if b["type"] == "text")
        calls = [b for b in self.blocks if b["type"] == "tool_use"]
        content: list[dict[str, Any]] = []
        if reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
        if text.strip() or not calls:
            content.append({"type": "text", "text": text})
        content += [
            {"type": "tool_use", "id": c["id"], "name": c["name"], "input": json.loads(c["arguments"])} for c in calls
        ]
        return an.Message(
            id=self.message_id,
            content=content,
            model=self.model,
            stop_reason=stop_reason_of(finish),  # type: ignore[arg-type]
            stop_sequence=finish.stop_sequence,
            usage=an.Usage(**usage_of(finish.prompt_tokens, finish.cached_tokens, finish.completion_tokens)),
        ).model_dump(mode="json")


@router.post(ENDPOINT + "/count_tokens")
async def count_tokens(body: an.CountTokensRequest, request: Request) -> dict[str, int]:
    entry = resolve_model(request, body.model, "chat", ENDPOINT + "/count_tokens")
    count: int | None = None
    async for item in entry.stream("count_tokens", checked_request(body, request)):
        count = item
    if count is None:
        raise APIError(500, "The model could not count the tokens.")
    return {"input_tokens": count}
