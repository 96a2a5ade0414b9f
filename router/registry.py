"""The model registry: one entry per configured model, each owning at most
one worker process, and the routing table of the config generation in force.

A reload builds a new `Generation` and swaps it in with one assignment.
Requests keep the entry they resolved, so a request that started under the
old generation finishes on the old worker; entries that the new config
dropped or changed are retired: they take no new requests, wait for their
in-flight ones, then stop their worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from router.config import LoadedConfig
from router.errors import APIError, from_call_failure, model_not_found
from router.workers import CallFailed, LoadFailed, WorkerCrashed, WorkerHandle
from schemas.config import ApiKey, ModelConfig

log = logging.getLogger("modelyard.registry")

Status = Literal["unloaded", "loading", "loaded", "failed"]


class ModelEntry:
    def __init__(self, model: ModelConfig, path: Path | None) -> None:
        self.model = model
        self.path = path
        self.fingerprint = json.dumps([model.model_dump(mode="json"), str(path)], sort_keys=True)
        self.created = int(time.time())
        self.status: Status = "unloaded"
        self.error: str | None = None
        self.handle: WorkerHandle | None = None
        self.inflight = 0
        self.retired = False
        # Per-model state an API surface keeps (the embeddings batcher, say).
        self.surface_state: dict[str, Any] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._load_task: asyncio.Task[WorkerHandle] | None = None
        self._slots = asyncio.Semaphore(1)

    @property
    def id(self) -> str:
        return self.model.id

    async def ensure_loaded(self) -> WorkerHandle:
        """Return a live worker, loading the model first if needed. Concurrent
        callers share one load; a caller that goes away does not cancel it."""
        if self.handle is not None and self.handle.alive:
            return self.handle
        if self._load_task is None or self._load_task.done():
            self._load_task = asyncio.create_task(self._load(), name=f"load-{self.id}")
        return await asyncio.shield(self._load_task)

    async def _load(self) -> WorkerHandle:
        if self.handle is not None:
            await self.handle.kill()
            self.handle = None
        self.status = "loading"
        self.error = None
        log.info("loading model %s (%s, %s)", self.id, self.model.backend, self.model.source)
        handle = WorkerHandle(self.model, self.path)
        try:
            ready = await handle.start()
        except LoadFailed as exc:
            self.status, self.error = "failed", str(exc)
            log.error("model %s failed to load: %s", self.id, exc)
            raise
        except BaseException as exc:
            await handle.kill()
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", self.id)
            if isinstance(exc, Exception):
                raise LoadFailed("load_failed", self.error) from exc
            raise
        self.handle = handle
        self.status = "loaded"
        self._slots = asyncio.Semaphore(ready.max_concurrency)
        log.info("model %s loaded in %.2fs (worker pid %s)", self.id, ready.load_seconds, handle.pid)
        asyncio.create_task(self._watch(handle), name=f"watch-{self.id}")
        return handle

    async def _watch(self, handle: WorkerHandle) -> None:
        await handle.dead.wait()
        if self.handle is handle and self.status == "loaded":
            code = handle.process.returncode if handle.process else None
            self.status = "failed"
            self.error = f"the worker process exited unexpectedly (status {code}); the next request restarts it"
            log.error("model %s: %s", self.id, self.error)

    async def stream(self, method: str, payload: Any) -> AsyncIterator[Any]:
        """Run one call on this model's worker and yield what it yields.

        Failures come out as APIError; closing the iterator cancels the call.
        """
        self.inflight += 1
        self._idle.clear()
        try:
            try:
                await self.ensure_loaded()
                async with self._slots:
                    # The worker may have died while this request queued.
                    handle = await self.ensure_loaded()
                    async for item in handle.call(method, payload):
                        yield item
            except LoadFailed as exc:
                raise from_call_failure(self.id, "load_failed", str(exc), None) from None
            except CallFailed as exc:
                raise from_call_failure(self.id, exc.kind, str(exc), exc.param) from None
            except WorkerCrashed as exc:
                raise from_call_failure(self.id, "worker_crashed", str(exc), None) from None
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    async def unload(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        handle, self.handle = self.handle, None
        self.status = "unloaded"
        if handle is not None:
            await handle.stop()
            log.info("model %s unloaded", self.id)

    async def retire(self) -> None:
        """Stop taking requests, let in-flight ones finish, then unload."""
        self.retired = True
        await self._idle.wait()
        await self.unload()


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
                f"which needs a {modality} model.",
                param="model",
                code="model_modality_mismatch",
            )
        return entry


class Registry:
    def __init__(self) -> None:
        self.current: Generation | None = None
        self.number = 0
        self.last_reload: dict[str, Any] = {"ok": True, "error": None, "at": None}
        self._apply_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._retiring: set[ModelEntry] = set()

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
                candidate = ModelEntry(model, path)
                if previous is not None and previous.fingerprint == candidate.fingerprint:
                    entries[model.id] = previous
                else:
                    entries[model.id] = candidate
                    fresh.append(candidate)
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

    def all_entries(self) -> list[ModelEntry]:
        current = list(self.current.entries.values()) if self.current else []
        return current + [e for e in self._retiring if e not in current]

    async def wait_idle_retirements(self) -> None:
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def shutdown(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(e.unload() for e in self.all_entries()), return_exceptions=True)
