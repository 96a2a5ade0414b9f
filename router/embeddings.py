"""POST /v1/embeddings, with request coalescing.

Concurrent requests to one embeddings model are gathered into one backend
batch (bounded in inputs, waiting `batch_wait_ms` at most) and split back
per request. The adapter reports a bad input per input, so one request's bad
input fails only that request.
"""

from __future__ import annotations

import array
import asyncio
import base64
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import Embeddings, EmbedRequest
from modelyard.router.deps import resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.limits import reject_lone_surrogates
from modelyard.router.registry import ModelEntry
from modelyard.router.streaming import ClientGone, until_disconnected
from modelyard.schemas import openai as oa
from modelyard.schemas.config import EmbeddingsSettings

router = APIRouter()
ENDPOINT = "/v1/embeddings"


async def embed_once(entry: ModelEntry, request: EmbedRequest) -> Embeddings:
    result: Embeddings | None = None
    async for item in entry.stream("embed", request):
        result = item
    if result is None or len(result.vectors) != len(request.inputs):
        raise APIError(500, f"The model '{entry.id}' returned no embeddings.", code="backend_error")
    return result


@dataclass
class Pending:
    inputs: list[str | list[int]]
    future: asyncio.Future[Embeddings] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    arrived: float = field(default_factory=time.monotonic)


class Coalescer:
    """Gathers concurrent requests to one model into shared backend batches."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.queue: list[Pending] = []
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.requests = 0

    @property
    def settings(self) -> EmbeddingsSettings:
        # Read each time: a reload may change the limits of a running model.
        return self.entry.model.embeddings

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "backend_batches": self.batches}

    async def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        pending = Pending(inputs)
        self.queue.append(pending)
        self.requests += 1
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"embed-batches-{self.entry.id}")
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            pending.future.cancel()  # its client went away: drop its inputs from the next batch
            raise

    async def _run(self) -> None:
        # One batch in the backend at a time; while it runs, the next gathers.
        while self.queue:
            # Wait for company only until the oldest request has waited
            # batch_wait_ms: after a busy batch, the queue is sent at once.
            wait = self.queue[0].arrived + self.settings.batch_wait_ms / 1000 - time.monotonic()
            if wait > 0 and sum(len(p.inputs) for p in self.queue) < self.settings.batch_size:
                await asyncio.sleep(wait)
            batch: list[Pending] = []
            size = 0
            while self.queue and (not batch or size + len(self.queue[0].inputs) <= self.settings.batch_size):
                item = self.queue.pop(0)
                if item.future.done():  # its client went away
                    continue
                batch.append(item)
                size += len(item.inputs)
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[Pending]) -> None:
        inputs = [text for p in batch for text in p.inputs]
        self.batches += 1
        try:
            result = await embed_once(self.entry, self.request(inputs))
        except Exception as exc:
            if len(batch) == 1:
                self._settle(batch[0], exc)
                return
            # Something in the batch broke the whole call: try each request
            # alone, so that only the one to blame fails.
            for item in batch:
                try:
                    self._settle(item, await embed_once(self.entry, self.request(item.inputs)))
                except Exception as single:
                    self._settle(item, single)
            return
        offset = 0
        for item in batch:
            end = offset + len(item.inputs)
            self._settle(
                item, Embeddings(result.vectors[offset:end], result.token_counts[offset:end], result.errors[offset:end])
            )
            offset = end

    def request(self, inputs: list[str | list[int]]) -> EmbedRequest:
        return EmbedRequest(inputs, self.settings.max_input_tokens, self.settings.truncate)

    @staticmethod
    def _settle(item: Pending, outcome: Embeddings | BaseException) -> None:
        if item.future.done():
            return
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)


def coalescer_for(entry: ModelEntry) -> Coalescer:
    coalescer = entry.surface_state.get("coalescer")
    if coalescer is None:
        coalescer = entry.surface_state["coalescer"] = Coalescer(entry)
    assert isinstance(coalescer, Coalescer)
    return coalescer


def inputs_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


def floats(vector: bytes) -> array.array[float]:
    """Little-endian float32 bytes (as workers send them) as floats, on any machine."""
    values = array.array("f")
    values.frombytes(vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def shortened(vector: bytes, dimensions: int) -> bytes:
    """The first `dimensions` values, re-normalised (Matryoshka truncation)."""
    values = floats(vector[: dimensions * 4])
    norm = math.sqrt(sum(v * v for v in values))
    if norm:
        values = array.array("f", (v / norm for v in values))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def wire_vector(vector: bytes, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector).decode("ascii")
    return floats(vector).tolist()


@router.post(ENDPOINT, response_model=oa.EmbeddingList, responses={400: {"model": oa.ErrorResponse}})
async def create_embeddings(body: oa.EmbeddingRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "embeddings", ENDPOINT)
    settings = entry.model.embeddings
    reject_lone_surrogates(body)
    inputs = inputs_of(body.input)
    if not inputs:
        raise invalid_request("input must not be empty.", param="input")
    for index, item in enumerate(inputs):
        if item == "" or item == []:
            raise invalid_request(f"input[{index}] is empty.", param="input")
    if len(inputs) > settings.max_inputs:
        raise invalid_request(f"This model takes at most {settings.max_inputs} inputs per request; got {len(inputs)}.", param="input")
    if body.dimensions is not None and not settings.matryoshka:
        raise invalid_request(
            f"The model '{entry.id}' cannot shorten its vectors: 'dimensions' is only for models configured with "
            "embeddings.matryoshka = true.",
            param="dimensions",
        )
    try:
        if settings.coalesce:
            result = await until_disconnected(request, coalescer_for(entry).embed(inputs))
        else:
            result = await until_disconnected(request, embed_once(entry, EmbedRequest(inputs, settings.max_input_tokens, settings.truncate)))
    except ClientGone:
        return Response(status_code=499)
    errors = [e for e in result.errors if e]
    if errors:
        raise invalid_request(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more)", param="input")
    vectors: list[bytes] = [v for v in result.vectors if v is not None]
    native = len(vectors[0]) // 4
    if body.dimensions is not None:
        if body.dimensions > native:
            raise invalid_request(f"dimensions must be at most {native} for this model.", param="dimensions")
        vectors = [shortened(v, body.dimensions) for v in vectors]
    tokens = sum(result.token_counts)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": wire_vector(v, body.encoding_format or "float")} for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {"object": "list", "data": data, "model": entry.id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )
