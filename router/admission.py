"""Admission: who may run on a model now.

A request past the model's `max_queue` is refused at once (ModelBusy); the
others wait for a slot (the workers' concurrency summed over the replicas)
and go to the least busy replica. The model's `request_timeout` is one
deadline over loading, queueing and the call (ModelTimedOut). Worker
failures come out as the typed exceptions of router/model_errors.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from modelyard.router.model_errors import ModelBusy, ModelLoadFailed, ModelTimedOut, WorkerFailed
from modelyard.router.workers import CallFailed, LoadFailed, WorkerCrashed

if TYPE_CHECKING:
    from modelyard.router.lifecycle import Handle, ModelEntry


class Admission:
    def __init__(self) -> None:
        self.inflight = 0  # requests admitted and not finished (queued ones included)
        self.queued = 0  # of those, the ones waiting for a slot
        self.capacity = 1
        self._slots = asyncio.Semaphore(1)
        self._active: dict[int, int] = {}  # id(handle) → calls in progress
        self._idle = asyncio.Event()
        self._idle.set()

    def resize(self, capacity: int) -> None:
        """After a load: `capacity` calls may run at once."""
        self.capacity = capacity
        self._slots = asyncio.Semaphore(capacity)

    def forget_workers(self) -> None:
        self._active.clear()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def least_busy(self, handles: list[Handle]) -> Handle:
        return min(handles, key=lambda h: self._active.get(id(h), 0))

    async def stream(self, entry: ModelEntry, method: str, payload: Any) -> AsyncIterator[Any]:
        """Run one call on one of `entry`'s workers and yield what it yields;
        closing the iterator cancels the call."""
        loop = asyncio.get_running_loop()
        timeout = entry.model.request_timeout
        deadline = loop.time() + timeout if timeout else None
        limit = entry.model.max_queue
        if limit is not None and self.inflight >= self.capacity + limit:
            raise ModelBusy(entry.id, self.inflight)
        self.inflight += 1
        self._idle.clear()
        entry.last_used = time.monotonic()
        timer = entry.observer.call()
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await entry.ensure_loaded()
                    self.queued += 1
                    lease = [self._slots]
                    try:
                        await lease[0].acquire()
                    finally:
                        self.queued -= 1
                handle: Handle | None = None

                def release() -> None:  # once the worker is done with the call, even a cancelled one
                    if lease:
                        lease.pop().release()
                        if handle is not None and self._active.get(id(handle), 0) > 0:
                            self._active[id(handle)] -= 1

                calling = False
                try:
                    # A worker may have died while this request queued.
                    async with asyncio.timeout_at(deadline):
                        await entry.ensure_loaded()
                    handle = self.least_busy(entry.handles)
                    self._active[id(handle)] = self._active.get(id(handle), 0) + 1
                    calling = True
                    async with aclosing(handle.call(method, payload, deadline, release)) as items:
                        async for item in items:
                            timer.saw(item)
                            yield item
                finally:
                    if not calling:
                        release()
            except TimeoutError:
                raise ModelTimedOut(entry.id, timeout or 0.0) from None
            except LoadFailed as exc:
                raise ModelLoadFailed(entry.id, str(exc)) from None
            except CallFailed as exc:
                raise WorkerFailed(entry.id, exc.kind, str(exc), exc.param) from None
            except WorkerCrashed as exc:
                raise WorkerFailed(entry.id, "worker_crashed", str(exc)) from None
        finally:
            self.inflight -= 1
            entry.last_used = time.monotonic()
            if self.inflight == 0:
                self._idle.set()
