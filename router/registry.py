"""The model registry: one entry per configured model (router/lifecycle.py's
ModelEntry, with its admission and metrics observer), and the routing table
of the config generation in force.

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
import fnmatch
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from modelyard.router.config import LoadedConfig
from modelyard.router.lifecycle import ModelEntry, Status, load_fingerprint
from modelyard.router.metrics import Metrics
from modelyard.router.model_errors import ModelNotFound, NoModelConfigured, WrongModality
from modelyard.router.workers import LoadFailed
from modelyard.schemas.config import ApiKey, is_glob

__all__ = ["Generation", "ModelEntry", "Registry", "Status", "load_fingerprint"]

log = logging.getLogger("modelyard.registry")

SHUTDOWN_STOP_GRACE = 3.0  # seconds a worker may take to exit after Shutdown


@dataclass
class Generation:
    """One applied config: its models, names and keys."""

    number: int
    loaded: LoadedConfig
    entries: dict[str, ModelEntry]
    names: dict[str, ModelEntry] = field(default_factory=dict)  # ids and exact aliases
    globs: list[tuple[str, ModelEntry]] = field(default_factory=list)  # glob aliases, in file order

    def __post_init__(self) -> None:
        for entry in self.entries.values():
            for name in entry.model.names():
                if is_glob(name):
                    self.globs.append((name, entry))
                else:
                    self.names[name] = entry

    def lookup(self, name: str) -> ModelEntry | None:
        """The model `name` routes to: an exact id or alias, else the first
        glob alias (in file order) that matches it, else None."""
        entry = self.names.get(name)
        if entry is None:
            entry = next((e for pattern, e in self.globs if fnmatch.fnmatchcase(name, pattern)), None)
        return entry

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
        """The entry a request's `model` field names; a name that matches
        no model, or one of another modality, raises router/model_errors.py's."""
        if name in (None, "") or (name == "default" and name not in self.names):
            entry = self.default_for(modality)
            if entry is None:
                raise NoModelConfigured(modality)
            return entry
        assert name is not None
        entry = self.lookup(name)
        if entry is None:
            raise ModelNotFound(name)
        if entry.model.modality != modality:
            raise WrongModality(name, entry.model.modality, modality, endpoint)
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
            cluster = loaded.config.cluster
            for model in loaded.config.models:
                path = loaded.model_path(model)
                previous = old.get(model.id)
                if previous is not None and previous.fingerprint == load_fingerprint(model, path, cluster):
                    previous.model = model  # aliases, limits and timeouts apply to the running worker
                    entries[model.id] = previous
                else:
                    entries[model.id] = ModelEntry(model, path, self, cluster)
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
        if (server.max_loaded_models is None and server.memory_budget is None) or not incoming.runs_here:
            return
        async with self._room_lock:
            while True:
                # A model served by upstreams or by Ray replicas holds no memory of this machine's workers: not counted.
                loaded = [e for e in self.all_entries() if e is not incoming and e.handle is not None and e.runs_here]
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
