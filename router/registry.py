"""The model registry: one entry per configured model, each owning at most
one worker process, and the routing table of the config generation in force.

A reload builds a new `Generation` and swaps it in with one assignment.
Requests keep the entry they resolved, so a request that started under the
old generation finishes on the old worker; entries that the new config
dropped or whose loading definition changed are retired: they take no new
requests, wait for their in-flight ones, then stop their worker.

Lifecycle: models load eagerly or on first use; an idle model unloads after
its `idle_timeout`; loading one more model than `max_loaded_models` or
`memory_budget` allow first unloads the least recently used idle models. A
model with requests in flight is never unloaded under them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelyard.adapters.base import Finished, TextDelta
from modelyard.router import supervision
from modelyard.router.config import LoadedConfig
from modelyard.router.errors import APIError, from_call_failure, model_not_found
from modelyard.router.metrics import Metrics, rss_bytes
from modelyard.router.workers import CallFailed, LoadFailed, WorkerCrashed, WorkerHandle
from modelyard.schemas.config import ApiKey, ModelConfig

log = logging.getLogger("modelyard.registry")

Status = Literal["unloaded", "loading", "loaded", "failed", "unhealthy"]
PROGRESS_EVERY = 5.0  # seconds between "still loading" lines
SHUTDOWN_STOP_GRACE = 3.0  # seconds a worker may take to exit after Shutdown


def load_fingerprint(model: ModelConfig, path: Path | None) -> str:
    """What a worker depends on: a change here needs a new worker. Other
    fields (aliases, limits, timeouts) apply to the running one."""
    relevant = model.model_dump(mode="json", include={"modality", "backend", "source", "options", "max_concurrency", "replicas", "memory_limit"})
    return json.dumps([relevant, str(path)], sort_keys=True)


class ModelEntry:
    def __init__(self, model: ModelConfig, path: Path | None, owner: Registry | None = None) -> None:
        self.model = model
        self.path = path
        self.owner = owner
        self.fingerprint = load_fingerprint(model, path)
        self.created = int(time.time())
        self.status: Status = "unloaded"
        self.error: str | None = None
        # One worker per replica; requests go to the least busy one.
        self.handles: list[WorkerHandle] = []
        self._active: dict[int, int] = {}  # id(handle) → calls in progress
        self.inflight = 0
        self.queued = 0
        self.last_used = time.monotonic()
        self.last_memory = 0
        self.retired = False
        self.restarts = 0  # workers the router killed (hung, or stuck in a cancelled call)
        self.last_failure: str | None = None
        self.watchers: set[asyncio.Task[None]] = set()  # router/supervision.py's, per worker
        # Per-model state an API surface keeps (the embeddings batcher, say).
        self.surface_state: dict[str, Any] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._load_task: asyncio.Task[WorkerHandle] | None = None
        self._slots = asyncio.Semaphore(1)
        self._capacity = 1

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def metrics(self) -> Metrics | None:
        return self.owner.metrics if self.owner else None

    @property
    def handle(self) -> WorkerHandle | None:
        """The first live worker (what /health shows), or None."""
        return next((h for h in self.handles if h.alive), None)

    @property
    def loaded(self) -> bool:
        return len(self.handles) == self.model.replicas and all(h.alive for h in self.handles)

    @property
    def busy(self) -> bool:
        return self.inflight > 0 or self.status == "loading"

    async def ensure_loaded(self) -> None:
        """Make sure every replica has a live worker, loading the model if
        needed. Concurrent callers share one load; a caller that goes away
        does not cancel it."""
        if self.loaded:
            return
        if self._load_task is None or self._load_task.done():
            self._load_task = asyncio.create_task(self._load(), name=f"load-{self.id}")
        await asyncio.shield(self._load_task)

    async def _load(self) -> None:
        alive = [h for h in self.handles if h.alive]
        for dead in (h for h in self.handles if not h.alive):
            await dead.kill()
        self.handles = alive
        self.status = "loading"
        self.error = None
        if self.owner is not None and not alive:
            await self.owner.make_room(self)
        log.info("loading model %s (%s, %s)", self.id, self.model.backend, self.model.source)
        started = time.monotonic()
        progress = asyncio.create_task(self._report_progress(started), name=f"progress-{self.id}")
        fresh = [WorkerHandle(self.model, self.path) for _ in range(self.model.replicas - len(alive))]
        try:
            readies = await asyncio.gather(*(h.start() for h in fresh))
        except BaseException as exc:
            await asyncio.gather(*(h.kill() for h in fresh), return_exceptions=True)
            self.status = "failed"
            self.error = str(exc) if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, LoadFailed):
                log.error("model %s failed to load: %s", self.id, exc)
                self._count_load("failed")
                raise
            if isinstance(exc, Exception):
                log.exception("model %s failed to load", self.id)
                self._count_load("failed")
                raise LoadFailed("load_failed", self.error) from exc
            raise
        finally:
            progress.cancel()
        self.handles = alive + fresh
        self.status = "loaded"
        self.last_used = time.monotonic()
        per_worker = readies[0].max_concurrency if readies else max(1, self._capacity // max(1, len(alive)))
        self._capacity = per_worker * len(self.handles)
        self._slots = asyncio.Semaphore(self._capacity)
        self._count_load("loaded", time.monotonic() - started)
        log.info(
            "model %s loaded in %.2fs (worker pid %s)",
            self.id,
            time.monotonic() - started,
            ", ".join(str(h.pid) for h in fresh),
        )
        for handle in fresh:
            supervision.watch(self, handle)

    async def _report_progress(self, started: float) -> None:
        """A long load says it is still going: a live line on a terminal, a
        log line every few seconds otherwise."""
        tty = sys.stderr.isatty()
        while True:
            await asyncio.sleep(1.0 if tty else PROGRESS_EVERY)
            elapsed = time.monotonic() - started
            if tty:
                sys.stderr.write(f"\r  loading {self.id}: {elapsed:5.0f}s ")
                sys.stderr.flush()
            else:
                log.info("model %s still loading (%.0fs)", self.id, elapsed)

    def _count_load(self, result: str, seconds: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.loads.labels(self.id, result).inc()
            if seconds is not None:
                self.metrics.load_seconds.labels(self.id).observe(seconds)

    async def stream(self, method: str, payload: Any) -> AsyncIterator[Any]:
        """Run one call on this model's worker and yield what it yields.

        Failures come out as APIError; closing the iterator cancels the call.
        The queue limit (429) and the request timeout (504) are enforced here.
        """
        loop = asyncio.get_running_loop()
        timeout = self.model.request_timeout
        deadline = loop.time() + timeout if timeout else None
        limit = self.model.max_queue
        if limit is not None and self.inflight >= self._capacity + limit:
            raise APIError(
                429,
                f"The model '{self.id}' is busy: {self.inflight} requests are in progress or waiting. Retry shortly.",
                code="queue_full",
                headers={"retry-after": "1"},
            )
        self.inflight += 1
        self._idle.clear()
        self.last_used = time.monotonic()
        started = time.monotonic()
        first_text: float | None = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.ensure_loaded()
                    self.queued += 1
                    lease = [self._slots]
                    try:
                        await lease[0].acquire()
                    finally:
                        self.queued -= 1
                handle: WorkerHandle | None = None

                def release() -> None:  # once the worker is done with the call, even a cancelled one
                    if lease:
                        lease.pop().release()
                        if handle is not None and self._active.get(id(handle), 0) > 0:
                            self._active[id(handle)] -= 1

                calling = False
                try:
                    # A worker may have died while this request queued.
                    async with asyncio.timeout_at(deadline):
                        await self.ensure_loaded()
                    handle = min(self.handles, key=lambda h: self._active.get(id(h), 0))
                    self._active[id(handle)] = self._active.get(id(handle), 0) + 1
                    calling = True
                    async with aclosing(handle.call(method, payload, deadline, release)) as items:
                        async for item in items:
                            if first_text is None and isinstance(item, TextDelta) and item.text:
                                first_text = time.monotonic()
                                if self.metrics is not None:
                                    self.metrics.ttft.labels(self.id).observe(first_text - started)
                            elif isinstance(item, Finished) and self.metrics is not None:
                                self._count_tokens(item, first_text)
                            yield item
                finally:
                    if not calling:
                        release()
            except TimeoutError:
                raise APIError(
                    504,
                    f"The request took longer than this model's request_timeout ({timeout:g}s) and was stopped.",
                    code="timeout",
                ) from None
            except LoadFailed as exc:
                raise from_call_failure(self.id, "load_failed", str(exc), None) from None
            except CallFailed as exc:
                raise from_call_failure(self.id, exc.kind, str(exc), exc.param) from None
            except WorkerCrashed as exc:
                raise from_call_failure(self.id, "worker_crashed", str(exc), None) from None
        finally:
            self.inflight -= 1
            self.last_used = time.monotonic()
            if self.inflight == 0:
                self._idle.set()

    def _count_tokens(self, finished: Finished, first_text: float | None) -> None:
        assert self.metrics is not None
        self.metrics.tokens.labels(self.id).inc(finished.completion_tokens)
        if first_text is not None and finished.completion_tokens > 1:
            elapsed = time.monotonic() - first_text
            if elapsed > 0:
                self.metrics.token_rate.labels(self.id).observe((finished.completion_tokens - 1) / elapsed)

    def memory(self) -> int:
        return sum(rss_bytes(h.pid) for h in self.handles if h.alive)

    def expected_memory(self) -> int:
        """What loading this model will take: what it took last time, else its files' size."""
        if self.last_memory:
            return self.last_memory
        if self.path is None or not self.path.exists():
            return 0
        if self.path.is_file():
            return self.path.stat().st_size * self.model.replicas
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()) * self.model.replicas

    async def unload(self, reason: str = "requested", grace: float = 10.0) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self.last_memory = self.memory() or self.last_memory
        handles, self.handles = self.handles, []
        self._active.clear()
        self.status = "unloaded"
        if handles:
            await asyncio.gather(*(h.stop(grace) for h in handles))
            log.info("model %s unloaded (%s)", self.id, reason)
            if self.metrics is not None:
                self.metrics.unloads.labels(self.id, reason).inc()

    async def retire(self) -> None:
        """Stop taking requests, let in-flight ones finish, then unload."""
        self.retired = True
        await self._idle.wait()
        await self.unload("removed from the config")


@dataclass
class Generation:
    """One applied config: its models, names and keys."""

    number: int
    loaded: LoadedConfig
    entries: dict[str, ModelEntry]
    names: dict[str, ModelEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entry in self.entries.values():
            for name in entry.model.names():
                self.names[name] = entry

    @property
    def keys(self) -> list[ApiKey]:
        return self.loaded.config.auth.keys

    def default_for(self, modality: str) -> ModelEntry | None:
        default_id = self.loaded.config.default_model
        if default_id is not None:
            entry = self.names[default_id]
            if entry.model.modality == modality:
                return entry
        return next((e for e in self.entries.values() if e.model.modality == modality), None)

    def resolve(self, name: str | None, modality: str, endpoint: str) -> ModelEntry:
        """The entry a request's `model` field names, or an APIError."""
        if name in (None, "") or (name == "default" and name not in self.names):
            entry = self.default_for(modality)
            if entry is None:
                raise APIError(404, f"No {modality} model is configured on this server.", param="model", code="model_not_found")
            return entry
        assert name is not None
        entry = self.names.get(name)
        if entry is None:
            raise model_not_found(name)
        if entry.model.modality != modality:
            raise APIError(
                400,
                f"The model '{name}' is a {entry.model.modality} model and cannot be used with {endpoint}, "
                f"which needs {'an' if modality[0] in 'aeiou' else 'a'} {modality} model.",
                param="model",
                code="model_modality_mismatch",
            )
        return entry


class Registry:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.current: Generation | None = None
        self.number = 0
        self.last_reload: dict[str, Any] = {"ok": True, "error": None, "at": None}
        self._apply_lock = asyncio.Lock()
        self._room_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._retiring: set[ModelEntry] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def apply(self, loaded: LoadedConfig, *, wait_for_loads: bool) -> Generation:
        """Make `loaded` the config in force.

        With wait_for_loads (a reload), new eager models are loaded before the
        swap, so no request is routed to a model that is not ready. At start-up
        there is nothing to keep serving, so the swap comes first.
        """
        async with self._apply_lock:
            old = self.current.entries if self.current else {}
            entries: dict[str, ModelEntry] = {}
            fresh: list[ModelEntry] = []
            for model in loaded.config.models:
                path = loaded.model_path(model)
                previous = old.get(model.id)
                if previous is not None and previous.fingerprint == load_fingerprint(model, path):
                    previous.model = model  # aliases, limits and timeouts apply to the running worker
                    entries[model.id] = previous
                else:
                    entries[model.id] = ModelEntry(model, path, self)
                    fresh.append(entries[model.id])
            eager = [e for e in fresh if e.model.load == "eager"]
            if wait_for_loads and eager:
                await asyncio.gather(*(self._preload(e) for e in eager))
            self.number += 1
            generation = Generation(self.number, loaded, entries)
            self.current = generation
            kept = set(map(id, entries.values()))
            for entry in old.values():
                if id(entry) not in kept:
                    self._retiring.add(entry)
                    self._spawn(self._retire(entry), f"retire-{entry.id}")
            if not wait_for_loads:
                for entry in eager:
                    self._spawn(self._preload(entry), f"load-{entry.id}")
            if self._sweeper is None:
                self._sweeper = asyncio.create_task(self._sweep_idle(), name="idle-sweeper")
            return generation

    async def _preload(self, entry: ModelEntry) -> None:
        try:
            await entry.ensure_loaded()
        except LoadFailed:
            pass  # recorded on the entry; shown in /v1/models and /health

    async def _retire(self, entry: ModelEntry) -> None:
        try:
            await entry.retire()
        finally:
            self._retiring.discard(entry)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for entry in list(self.current.entries.values()) if self.current else []:
                limit = entry.model.idle_timeout
                if limit and entry.status == "loaded" and not entry.busy and now - entry.last_used >= limit:
                    await entry.unload(f"idle for {limit:g}s")

    async def make_room(self, incoming: ModelEntry) -> None:
        """Before `incoming` loads: unload least recently used idle models
        until the model count and memory budget have room for it."""
        if self.current is None:
            return
        server = self.current.loaded.config.server
        if server.max_loaded_models is None and server.memory_budget is None:
            return
        async with self._room_lock:
            while True:
                loaded = [e for e in self.all_entries() if e is not incoming and e.handle is not None]
                over_count = server.max_loaded_models is not None and len(loaded) + 1 > server.max_loaded_models
                expected = incoming.expected_memory()
                used = sum(e.memory() for e in loaded)
                over_memory = server.memory_budget is not None and used + expected > int(server.memory_budget)
                if not (over_count or over_memory):
                    return
                idle = sorted((e for e in loaded if not e.busy), key=lambda e: e.last_used)
                if not idle:
                    log.warning(
                        "loading model %s goes past max_loaded_models/memory_budget: every loaded model is busy", incoming.id
                    )
                    return
                victim = idle[0]
                why = "max_loaded_models" if over_count else "memory_budget"
                await victim.unload(f"evicted for {incoming.id} ({why})")

    def all_entries(self) -> list[ModelEntry]:
        current = list(self.current.entries.values()) if self.current else []
        return current + [e for e in self._retiring if e not in current]

    async def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # uvicorn has already given requests shutdown_grace: busy workers get
        # a short while more to stop, then SIGTERM, then SIGKILL.
        await asyncio.gather(*(e.unload("shutdown", grace=SHUTDOWN_STOP_GRACE) for e in self.all_entries()), return_exceptions=True)
