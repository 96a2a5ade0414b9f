"""POST /v1/completions: OpenAI's legacy text completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import CompletionRequest, Constraint, Finished, TextDelta, TokenLogprob
from modelyard.router.deps import request_id, resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.limits import (
    check_constraint,
    check_message_count,
    check_prompt_chars,
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
from modelyard.schemas.config import LimitsConfig

router = APIRouter()
ENDPOINT = "/v1/completions"


def prompts_of(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def backend_requests(body: oa.CompletionRequest) -> list[CompletionRequest]:
    n = body.n or 1
    if body.best_of is not None and body.best_of != n:
        raise invalid_request("best_of is only supported equal to n.", param="best_of", code="unsupported_parameter")
    if body.echo and body.logprobs is not None:
        raise invalid_request(
            "echo with logprobs is not supported (prompt tokens have no logprobs here).", param="echo", code="unsupported_parameter"
        )
    if body.max_tokens == 0 and not body.echo:
        raise invalid_request("max_tokens=0 needs echo=true.", param="max_tokens")
    sampling = sampling_from(body, max_tokens=body.max_tokens, logprobs=body.logprobs)
    constraint = constraint_from(None, body.grammar)
    requests: list[CompletionRequest] = []
    for index, prompt in enumerate(prompts_of(body.prompt)):
        if isinstance(prompt, str) and not prompt and body.suffix is None:
            raise invalid_request(f"prompt[{index}] is empty.", param="prompt")
        if isinstance(prompt, list) and not prompt:
            raise invalid_request(f"prompt[{index}] has no tokens.", param="prompt")
        for choice in range(n):
            seed = seed_for_choice(body.seed, choice)
            requests.append(
                CompletionRequest(
                    prompt=prompt,
                    sampling=replace(sampling, seed=seed),
                    echo=bool(body.echo),
                    suffix=body.suffix,
                    constraint=constraint,
                )
            )
    return requests


def check_limits(body: oa.CompletionRequest, limits: LimitsConfig) -> None:
    prompts = prompts_of(body.prompt)
    check_message_count(len(prompts), limits, "prompt")
    check_prompt_chars(sum(len(p) for p in prompts) + len(body.suffix or ""), limits, "prompt")
    if body.grammar is not None:
        check_constraint(Constraint(gbnf=body.grammar), limits, "grammar")


def legacy_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    tokens, values, tops, offsets = [], [], [], []
    for entry in entries:
        tokens.append(entry.token)
        values.append(entry.logprob)
        # The legacy format maps each candidate's text to its logprob; the
        # chosen token is always among them, as OpenAI sends it.
        tops.append({entry.token: entry.logprob, **{t.token: t.logprob for t in entry.top}})
        offsets.append(offset)
        offset += len(entry.token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


@router.post(ENDPOINT, response_model=oa.Completion, responses={400: {"model": oa.ErrorResponse}})
async def create_completion(body: oa.CompletionRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    reject_lone_surrogates(body)
    check_limits(body, limits_for(request))
    requests = backend_requests(body)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        events = entry.stream("complete", requests[0])
        first = await until_disconnected(request, first_item(events))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        framed = stream_chunks(completion_id, created, entry, requests, first, events, include_usage, request_id(request))
        return EventStreamResponse(framed)
    try:
        return JSONResponse(await until_disconnected(request, collect(completion_id, created, entry, requests)))
    except ClientGone:
        return Response(status_code=499)


async def collect(completion_id: str, created: int, entry: ModelEntry, requests: list[CompletionRequest]) -> dict[str, Any]:
    choices = []
    prompt_tokens = completion_tokens = 0
    counted_prompts: set[int] = set()
    for index, completion_request in enumerate(requests):
        text: list[str] = []
        logprobs: list[TokenLogprob] = []
        finished: Finished | None = None
        async for event in entry.stream("complete", completion_request):
            if isinstance(event, TextDelta):
                text.append(event.text)
                logprobs += event.logprobs or []
            elif isinstance(event, Finished):
                finished = event
        if finished is None:
            raise APIError(500, "The model stopped without finishing its answer.", code="backend_error")
        if id(completion_request.prompt) not in counted_prompts:
            counted_prompts.add(id(completion_request.prompt))
            prompt_tokens += finished.prompt_tokens
        completion_tokens += finished.completion_tokens
        echoed = completion_request.prompt if completion_request.echo and isinstance(completion_request.prompt, str) else ""
        choices.append(
            {
                "text": "".join(text),
                "index": index,
                "logprobs": legacy_logprobs(logprobs, len(echoed)) if completion_request.sampling.logprobs is not None else None,
                "finish_reason": finished.finish_reason,
            }
        )
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": entry.id,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


async def stream_chunks(
    completion_id: str,
    created: int,
    entry: ModelEntry,
    requests: list[CompletionRequest],
    first: Any,
    first_events: AsyncIterator[Any],
    include_usage: bool,
    req_id: str | None,
) -> AsyncIterator[str]:
    def chunk(index: int, text: str, finish_reason: str | None = None, logprobs: Any = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": entry.id,
            "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}],
        }
        if include_usage:
            body["usage"] = None
        return sse(body)

    prompt_tokens = completion_tokens = 0
    counted_prompts: set[int] = set()
    offsets = [0] * len(requests)
    turns = choices_in_turn(lambda r: entry.stream("complete", r), requests, first, first_events)
    try:
        async with aclosing(turns):
            async for index, event in turns:
                completion_request = requests[index]
                if isinstance(event, TextDelta):
                    wants = completion_request.sampling.logprobs is not None
                    logprobs = legacy_logprobs(event.logprobs or [], offsets[index]) if wants else None
                    yield chunk(index, event.text, logprobs=logprobs)
                    offsets[index] += len(event.text)
                elif isinstance(event, Finished):
                    yield chunk(index, "", event.finish_reason)
                    if id(completion_request.prompt) not in counted_prompts:
                        counted_prompts.add(id(completion_request.prompt))
                        prompt_tokens += event.prompt_tokens
                    completion_tokens += event.completion_tokens
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
            yield sse({"id": completion_id, "object": "text_completion", "created": created, "model": entry.id, "choices": [], "usage": usage})
    except Exception as exc:
        yield error_event(exc, req_id)
    yield DONE
