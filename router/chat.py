"""POST /v1/chat/completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from adapters.base import ChatRequest, Finished, TextDelta
from router.deps import request_id, resolve_model
from router.errors import APIError, invalid_request
from router.streaming import DONE, ClientGone, EventStreamResponse, error_event, sse, until_disconnected
from schemas import openai as oa

router = APIRouter()
ENDPOINT = "/v1/chat/completions"


def reject_unsupported(body: oa.ChatCompletionRequest) -> None:
    for name, neutral in oa.NOT_SUPPORTED.items():
        value = getattr(body, name)
        allowed = neutral if isinstance(neutral, tuple) else (neutral,)
        if value not in allowed:
            raise invalid_request(f"'{name}' is not supported by this server yet.", param=name, code="unsupported_parameter")
    if (body.n or 1) != 1:
        raise invalid_request("Only n=1 is supported by this server yet.", param="n", code="unsupported_parameter")
    fmt = (body.response_format or {}).get("type", "text")
    if fmt != "text":
        raise invalid_request(
            f"response_format type '{fmt}' is not supported by this server yet.", param="response_format", code="unsupported_parameter"
        )


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


def backend_request(body: oa.ChatCompletionRequest) -> ChatRequest:
    return ChatRequest(
        messages=to_backend_messages(body.messages),
        max_tokens=body.token_limit(),
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
    )


async def first_item(events: AsyncIterator[Any]) -> Any:
    """Wait for the first event, so that a failure before any output is still
    answered with a proper status code instead of a 200 stream."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise APIError(500, "The model returned nothing.", code="backend_error") from None


@router.post(ENDPOINT, response_model=oa.ChatCompletion, responses={400: {"model": oa.ErrorResponse}})
async def create_chat_completion(body: oa.ChatCompletionRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    reject_unsupported(body)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    events = entry.stream("chat", backend_request(body))
    if body.stream:
        try:
            first = await until_disconnected(request, first_item(events))
        except BaseException:
            await events.aclose()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        framed = stream_chunks(completion_id, created, entry.id, first, events, include_usage, request_id(request))
        return EventStreamResponse(framed)
    try:
        return JSONResponse(await until_disconnected(request, collect(completion_id, created, entry.id, events)))
    except ClientGone:
        return Response(status_code=499)


async def collect(completion_id: str, created: int, model: str, events: AsyncIterator[Any]) -> dict[str, Any]:
    text: list[str] = []
    finished: Finished | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, Finished):
            finished = event
    if finished is None:
        raise APIError(500, "The model stopped without finishing its answer.", code="backend_error")
    completion = oa.ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[
            oa.Choice(
                index=0,
                message=oa.ResponseMessage(content="".join(text)),
                finish_reason=finished.finish_reason,  # type: ignore[arg-type]
            )
        ],
        usage=oa.Usage(
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            total_tokens=finished.prompt_tokens + finished.completion_tokens,
        ),
    )
    return completion.model_dump(mode="json")


async def stream_chunks(
    completion_id: str,
    created: int,
    model: str,
    first: Any,
    events: AsyncIterator[Any],
    include_usage: bool,
    req_id: str | None,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        body = oa.ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[oa.ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)],
        ).model_dump(mode="json")
        if not include_usage:
            del body["usage"]
        return sse(body)

    try:
        yield chunk({"role": "assistant", "content": ""})
        event = first
        while True:
            if isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, Finished):
                yield chunk({}, event.finish_reason)
                if include_usage:
                    usage = oa.Usage(
                        prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens,
                        total_tokens=event.prompt_tokens + event.completion_tokens,
                    )
                    yield sse(
                        oa.ChatCompletionChunk(
                            id=completion_id, created=created, model=model, choices=[], usage=usage
                        ).model_dump(mode="json")
                    )
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
    except Exception as exc:
        yield error_event(exc, req_id)
    finally:
        await events.aclose()
    yield DONE
