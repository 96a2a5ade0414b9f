"""POST /v1/completions: OpenAI's legacy text completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from modelyard.adapters.base import CompletionRequest, Constraint, Finished, PromptTokens, TextDelta, TokenLogprob
from modelyard.router.deps import resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.events import ContentDelta, Event, Finish, PromptSize, TokenLogprobs
from modelyard.router.generation import interleaved
from modelyard.router.limits import (
    check_constraint,
    check_message_count,
    check_prompt_chars,
    limits_for,
    reject_lone_surrogates,
)
from modelyard.router.openai_chunks import OpenAIChunks
from modelyard.router.registry import ModelEntry
from modelyard.router.sampling import constraint_from, sampling_from, seed_for_choice
from modelyard.router.surface import COMMENT_KEEPALIVE, Frame, answer
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


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
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
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    renderer = CompletionRenderer(f"cmpl-{uuid.uuid4().hex}", int(time.time()), entry.id, requests, include_usage)
    sources = [lambda i=index, r=one: verbatim_choice(entry, i, r) for index, one in enumerate(requests)]
    return await answer(request, interleaved(sources, entry.admission.capacity), renderer, bool(body.stream))


async def verbatim_choice(entry: ModelEntry, index: int, completion_request: CompletionRequest) -> AsyncIterator[Event]:
    """The typed events of one choice's call: the text as the model wrote it
    (no reasoning or tool parsing), one ContentDelta per delta."""
    finished = False
    events = entry.stream("complete", completion_request)
    try:
        async for item in events:
            if isinstance(item, PromptTokens):
                yield PromptSize(item.count, item.cached, choice=index)
            elif isinstance(item, TextDelta):
                if item.logprobs:
                    yield TokenLogprobs(tuple(item.logprobs), choice=index)
                yield ContentDelta(item.text, choice=index)
            elif isinstance(item, Finished):
                finished = True
                tokens = (item.prompt_tokens, item.completion_tokens)
                yield Finish(*tokens, item.finish_reason, item.stop_sequence, cached_tokens=item.cached_tokens, choice=index)
    finally:
        await events.aclose()
    if not finished:
        raise APIError(500, "The model stopped without finishing its answer.", code="backend_error")


class CompletionRenderer(OpenAIChunks):
    """Legacy completions: `text_completion` chunks, or the whole `text_completion`."""

    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        requests: list[CompletionRequest],
        include_usage: bool = False,
    ) -> None:
        super().__init__(completion_id, "text_completion", created, model, include_usage)
        self.requests = requests
        self.texts: list[list[str]] = [[] for _ in requests]
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in requests]
        self.pending: list[list[TokenLogprob]] = [[] for _ in requests]
        self.offsets = [0] * len(requests)
        self.finishes: list[Finish | None] = [None] * len(requests)
        self.counted_prompts: set[int] = set()

    def _chunk(self, index: int, text: str, finish_reason: str | None = None, logprobs: Any = None) -> Frame:
        return self.chunk({"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason})

    def keepalive(self) -> list[Frame]:
        return [COMMENT_KEEPALIVE]

    def render(self, event: Event) -> list[Frame]:
        index = event.choice
        if isinstance(event, TokenLogprobs):
            self.pending[index] += event.entries
            self.logprobs[index] += event.entries
        elif isinstance(event, ContentDelta):
            wants = self.requests[index].sampling.logprobs is not None
            logprobs = legacy_logprobs(self.pending[index], self.offsets[index]) if wants else None
            self.pending[index] = []
            self.texts[index].append(event.text)
            self.offsets[index] += len(event.text)
            return [self._chunk(index, event.text, logprobs=logprobs)]
        elif isinstance(event, Finish):
            self.finishes[index] = event
            prompt = self.requests[index].prompt
            if id(prompt) not in self.counted_prompts:  # n choices of one prompt count it once
                self.counted_prompts.add(id(prompt))
                self.prompt_tokens += event.prompt_tokens
                self.cached_tokens += event.cached_tokens
            self.completion_tokens += event.completion_tokens
            return [self._chunk(index, "", event.finish_reason)]
        return []

    def result(self) -> dict[str, Any]:
        choices = []
        for index, completion_request in enumerate(self.requests):
            finish = self.finishes[index]
            assert finish is not None
            prompt = completion_request.prompt
            echoed = prompt if completion_request.echo and isinstance(prompt, str) else ""
            wants = completion_request.sampling.logprobs is not None
            choices.append(
                {
                    "text": "".join(self.texts[index]),
                    "index": index,
                    "logprobs": legacy_logprobs(self.logprobs[index], len(echoed)) if wants else None,
                    "finish_reason": finish.finish_reason,
                }
            )
        return {**self.head, "choices": choices, "usage": self.usage()}
