"""POST /v1/chat/completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import ChatRequest, Finished, TextDelta, ToolCalling
from modelyard.router.deps import request_id, resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.generation import ChoiceBuilder
from modelyard.router.limits import (
    check_constraint,
    check_message_count,
    check_prompt,
    check_tools,
    limits_for,
    reject_lone_surrogates,
)
from modelyard.router.registry import ModelEntry
from modelyard.router.sampling import constraint_from, sampling_from, seed_for_choice
from modelyard.router.streaming import (
    DONE,
    ClientGone,
    EventStreamResponse,
    choices_in_turn,
    error_event,
    first_item,
    sse,
    until_disconnected,
)
from modelyard.schemas import openai as oa

router = APIRouter()
ENDPOINT = "/v1/chat/completions"


def reject_unsupported(body: oa.ChatCompletionRequest) -> None:
    for name, neutral in oa.NOT_SUPPORTED.items():
        value = getattr(body, name)
        allowed = neutral if isinstance(neutral, tuple) else (neutral,)
        if value not in allowed:
            raise invalid_request(f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter")
    if body.top_logprobs and not body.logprobs:
        raise invalid_request("top_logprobs needs logprobs set to true.", param="top_logprobs")


def text_of(content: Any, index: int) -> str:
    """Flatten OpenAI content (a string or a list of parts) to the text a chat template takes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, oa.TextPart):
            texts.append(part.text)
        elif isinstance(part, oa.RefusalPart):
            texts.append(part.refusal)
        else:
            raise invalid_request(
                f"Content of type '{part.type}' is not supported by this model; send text.",
                param=f"messages[{index}].content",
            )
    return "\n".join(texts)


def to_backend_messages(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if isinstance(message, oa.FunctionMessage):
            raise invalid_request("The deprecated 'function' role is not supported; use 'tool'.", param=f"messages[{index}].role")
        # Most chat templates know no "developer" role; it is the system prompt.
        role = "system" if message.role == "developer" else message.role
        plain: dict[str, Any] = {"role": role, "content": text_of(message.content, index)}
        if isinstance(message, oa.AssistantMessage) and message.tool_calls:
            plain["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if isinstance(message, oa.ToolMessage):
            plain["tool_call_id"] = message.tool_call_id
        out.append(plain)
    return out


def tool_calling(body: oa.ChatCompletionRequest) -> ToolCalling | None:
    choice = body.tool_choice
    tools = body.tools or []
    if choice == "none" or (not tools and choice in (None, "auto")):
        return None
    if not tools:
        raise invalid_request("tool_choice needs tools to choose from.", param="tool_choice")
    definitions = [tool.model_dump(exclude_none=True) for tool in tools]
    parallel = body.parallel_tool_calls is not False
    if isinstance(choice, oa.NamedToolChoice):
        names = [tool.function.name for tool in tools]
        if choice.function.name not in names:
            raise invalid_request(
                f"tool_choice names '{choice.function.name}', which is not among the tools ({', '.join(names)}).",
                param="tool_choice",
            )
        return ToolCalling(definitions, mode="named", name=choice.function.name, parallel=False)
    return ToolCalling(definitions, mode=choice or "auto", parallel=parallel)


def backend_request(body: oa.ChatCompletionRequest) -> ChatRequest:
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return ChatRequest(
        messages=to_backend_messages(body.messages),
        sampling=sampling_from(body, max_tokens=body.token_limit(), logprobs=logprobs),
        constraint=constraint_from(body.response_format, body.grammar),
        tools=tool_calling(body),
    )


@router.post(ENDPOINT, response_model=oa.ChatCompletion, responses={400: {"model": oa.ErrorResponse}})
async def create_chat_completion(body: oa.ChatCompletionRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    reject_unsupported(body)
    limits = limits_for(request)
    check_message_count(len(body.messages), limits, "messages")  # cheap, before anything walks them
    reject_lone_surrogates(body)
    base = backend_request(body)
    check_prompt(base.messages, base.tools, limits, "messages")
    check_constraint(base.constraint, limits, "response_format.json_schema.schema")
    check_tools(base.tools, limits, "tools[{}].function.parameters")
    n = body.n or 1
    requests = [replace(base, sampling=replace(base.sampling, seed=seed_for_choice(base.sampling.seed, i))) for i in range(n)]
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    builders = [ChoiceBuilder(i, entry.model.reasoning_tags, base.tools is not None) for i in range(n)]
    if body.stream:
        events = entry.stream("chat", requests[0])
        first = await until_disconnected(request, first_item(events))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        framed = stream_chunks(
            completion_id, created, entry, requests, builders, first, events, include_usage, request_id(request)
        )
        return EventStreamResponse(framed)
    try:
        return JSONResponse(await until_disconnected(request, collect(completion_id, created, entry, requests, builders)))
    except ClientGone:
        return Response(status_code=499)


async def collect(
    completion_id: str, created: int, entry: ModelEntry, requests: list[ChatRequest], builders: list[ChoiceBuilder]
) -> dict[str, Any]:
    choices: list[oa.Choice] = []
    prompt_tokens = completion_tokens = 0
    for chat_request, builder in zip(requests, builders):
        finished: Finished | None = None
        async for event in entry.stream("chat", chat_request):
            if isinstance(event, TextDelta):
                builder.feed(event)
            elif isinstance(event, Finished):
                finished = event
        builder.flush()
        if finished is None:
            raise APIError(500, "The model stopped without finishing its answer.", code="backend_error")
        prompt_tokens = finished.prompt_tokens
        completion_tokens += finished.completion_tokens
        choices.append(
            oa.Choice(
                index=builder.index,
                message=builder.message(),
                logprobs=oa.ChoiceLogprobs(content=builder.logprobs) if builder.logprobs is not None else None,  # type: ignore[arg-type]
                finish_reason=builder.finish_reason(finished),  # type: ignore[arg-type]
            )
        )
    completion = oa.ChatCompletion(
        id=completion_id,
        created=created,
        model=entry.id,
        choices=choices,
        usage=oa.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens),
    )
    body = completion.model_dump(mode="json")
    for choice in body["choices"]:
        message = choice["message"]
        for optional in ("tool_calls", "reasoning_content"):
            if message[optional] is None:
                del message[optional]
    return body


async def stream_chunks(
    completion_id: str,
    created: int,
    entry: ModelEntry,
    requests: list[ChatRequest],
    builders: list[ChoiceBuilder],
    first: Any,
    first_events: AsyncIterator[Any],
    include_usage: bool,
    req_id: str | None,
) -> AsyncIterator[str]:
    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None, logprobs: list[Any] | None = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": entry.id,
            "choices": [
                {
                    "index": index,
                    "delta": delta,
                    "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if include_usage:
            body["usage"] = None
        return sse(body)

    prompt_tokens = completion_tokens = 0
    started: set[int] = set()
    turns = choices_in_turn(lambda r: entry.stream("chat", r), requests, first, first_events)
    try:
        async with aclosing(turns):
            async for position, event in turns:
                builder = builders[position]
                if position not in started:
                    started.add(position)
                    yield chunk(builder.index, {"role": "assistant", "content": ""})
                if isinstance(event, TextDelta):
                    for delta in builder.feed(event):
                        yield chunk(builder.index, delta, logprobs=builder.take_logprobs())
                elif isinstance(event, Finished):
                    for delta in builder.flush():
                        yield chunk(builder.index, delta, logprobs=builder.take_logprobs())
                    yield chunk(builder.index, {}, builder.finish_reason(event), builder.take_logprobs())
                    prompt_tokens = event.prompt_tokens
                    completion_tokens += event.completion_tokens
        if include_usage:
            usage = oa.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)
            yield sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": entry.id,
                    "choices": [],
                    "usage": usage.model_dump(),
                }
            )
    except Exception as exc:
        yield error_event(exc, req_id)
    yield DONE
