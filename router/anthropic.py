"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API
over the same chat models. Errors on these routes take Anthropic's shape
(router/errors.py picks it by path)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import ChatRequest, Finished, Sampling, TextDelta, ToolCalling
from modelyard.router.deps import request_id, resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.generation import ChoiceBuilder
from modelyard.router.limits import check_message_count, check_prompt, check_tools, limits_for, reject_lone_surrogates
from modelyard.router.registry import ModelEntry
from modelyard.router.streaming import ClientGone, EventStreamResponse, first_item, until_disconnected
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


def tool_use_block(call: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_" + call.id.removeprefix("call_"), "name": call.name, "input": json.loads(call.arguments)}


@router.post(ENDPOINT, response_model=an.Message)
async def create_message(body: an.MessagesRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    chat_request = checked_request(body, request)
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    builder = ChoiceBuilder(0, entry.model.reasoning_tags, chat_request.tools is not None)
    events = entry.stream("chat", chat_request)
    if body.stream:
        first = await until_disconnected(request, first_item(events))
        return EventStreamResponse(stream_events(message_id, entry, builder, first, events, request_id(request)))
    try:
        return JSONResponse(await until_disconnected(request, collect(message_id, entry, builder, events)))
    except ClientGone:
        return Response(status_code=499)


async def collect(message_id: str, entry: ModelEntry, builder: ChoiceBuilder, events: AsyncIterator[Any]) -> dict[str, Any]:
    finished: Finished | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            builder.feed(event)
        elif isinstance(event, Finished):
            finished = event
    builder.flush()
    if finished is None:
        raise APIError(500, "The model stopped without finishing its answer.")
    content: list[dict[str, Any]] = []
    reasoning = "".join(builder.reasoning)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = "".join(builder.content)
    if text.strip() or not builder.calls:
        content.append({"type": "text", "text": text})
    content += [tool_use_block(call) for call in builder.calls]
    reason = builder.finish_reason(finished)
    stop_reason = "stop_sequence" if finished.stop_sequence else STOP_REASONS.get(reason, "end_turn")
    return an.Message(
        id=message_id,
        content=content,
        model=entry.id,
        stop_reason=stop_reason,  # type: ignore[arg-type]
        stop_sequence=finished.stop_sequence,
        usage=an.Usage(input_tokens=finished.prompt_tokens, output_tokens=finished.completion_tokens),
    ).model_dump(mode="json")


def event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"


async def stream_events(
    message_id: str,
    entry: ModelEntry,
    builder: ChoiceBuilder,
    first: Any,
    events: AsyncIterator[Any],
    req_id: str | None,
) -> AsyncIterator[str]:
    """Anthropic's event sequence: message_start, then each content block's
    start, deltas and stop, then message_delta and message_stop."""
    open_block: str | None = None  # "text" | "thinking" | "tool_use"
    index = -1
    output_tokens = 0

    def start(kind: str, block: dict[str, Any]) -> list[str]:
        nonlocal open_block, index
        out = close()
        index += 1
        open_block = kind
        out.append(event("content_block_start", {"index": index, "content_block": block}))
        return out

    def close() -> list[str]:
        nonlocal open_block
        if open_block is None:
            return []
        open_block = None
        return [event("content_block_stop", {"index": index})]

    usage = {"input_tokens": 0, "output_tokens": 0}
    yield event(
        "message_start",
        {
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": entry.id,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            }
        },
    )
    yield event("ping", {})
    try:
        item = first
        last_ping = time.monotonic()
        while True:
            if isinstance(item, TextDelta):
                for delta in builder.feed(item):
                    for frame in translate(delta, start, lambda: open_block, lambda: index):
                        yield frame
            elif isinstance(item, Finished):
                for delta in builder.flush():
                    for frame in translate(delta, start, lambda: open_block, lambda: index):
                        yield frame
                if index < 0:  # an empty answer still has one text block
                    for frame in start("text", {"type": "text", "text": ""}):
                        yield frame
                for frame in close():
                    yield frame
                output_tokens = item.completion_tokens
                reason = builder.finish_reason(item)
                stop_reason = "stop_sequence" if item.stop_sequence else STOP_REASONS.get(reason, "end_turn")
                yield event(
                    "message_delta",
                    {
                        "delta": {"stop_reason": stop_reason, "stop_sequence": item.stop_sequence},
                        "usage": {"input_tokens": item.prompt_tokens, "output_tokens": output_tokens},
                    },
                )
                yield event("message_stop", {})
            if time.monotonic() - last_ping > 10:
                last_ping = time.monotonic()
                yield event("ping", {})
            try:
                item = await anext(events)
            except StopAsyncIteration:
                break
    except Exception as exc:
        error = exc if isinstance(exc, APIError) else APIError(500, f"Internal error (request id {req_id}).")
        yield event("error", {"error": error.body("/v1/messages")["error"]})
    finally:
        await events.aclose()


def translate(delta: dict[str, Any], start: Any, current: Any, index: Any) -> list[str]:
    """One OpenAI-style delta from the ChoiceBuilder → Anthropic block events."""
    frames: list[str] = []
    if "reasoning_content" in delta:
        if current() != "thinking":
            frames += start("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        frames.append(event("content_block_delta", {"index": index(), "delta": {"type": "thinking_delta", "thinking": delta["reasoning_content"]}}))
    elif "content" in delta:
        if current() != "text":
            frames += start("text", {"type": "text", "text": ""})
        frames.append(event("content_block_delta", {"index": index(), "delta": {"type": "text_delta", "text": delta["content"]}}))
    elif "tool_calls" in delta:
        call = delta["tool_calls"][0]
        if "id" in call:
            tool_id = "toolu_" + call["id"].removeprefix("call_")
            frames += start("tool_use", {"type": "tool_use", "id": tool_id, "name": call["function"]["name"], "input": {}})
        elif call["function"].get("arguments"):
            frames.append(
                event("content_block_delta", {"index": index(), "delta": {"type": "input_json_delta", "partial_json": call["function"]["arguments"]}})
            )
    return frames


@router.post(ENDPOINT + "/count_tokens")
async def count_tokens(body: an.CountTokensRequest, request: Request) -> dict[str, int]:
    entry = resolve_model(request, body.model, "chat", ENDPOINT + "/count_tokens")
    count: int | None = None
    async for item in entry.stream("count_tokens", checked_request(body, request)):
        count = item
    if count is None:
        raise APIError(500, "The model could not count the tokens.")
    return {"input_tokens": count}
