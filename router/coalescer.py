"""Request coalescing for embeddings models: concurrent requests to one
model are gathered into one backend batch (bounded in inputs, waiting
`batch_wait_ms` at most) and split back per request. One Coalescer per
model entry, owned by the application state (router/deps.py's Yard)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from modelyard.adapters.base import Embeddings, EmbedRequest
from modelyard.router.errors import APIError
from modelyard.router.registry import ModelEntry
from modelyard.schemas.config import EmbeddingsSettings


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
