"""A configured model's lifecycle: its workers (one per replica), loading
and unloading them, and retiring the model when a reload drops it.

Requests go through `stream`, which hands them to the entry's admission
(router/admission.py); the observer (router/model_metrics.py) measures
loads and calls; router/supervision.py watches each live worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from modelyard.adapters.base import Sampling
from modelyard.router import supervision
from modelyard.router.admission import Admission
from modelyard.router.metrics import Metrics, rss_bytes
from modelyard.router.model_errors import ModelLoadFailed
from modelyard.router.model_metrics import ModelObserver
from modelyard.router.upstream_handle import UpstreamHandle, served_by_upstreams
from modelyard.router.workers import LoadFailed, WorkerHandle
from modelyard.schemas.config import ClusterConfig, ModelConfig

if TYPE_CHECKING:
    from modelyard.router.ray_handle import RayHandle
    from modelyard.router.registry import Registry

log = logging.getLogger("modelyard.registry")

Status = Literal["unloaded", "loading", "loaded", "failed", "unhealthy"]


Handle: TypeAlias = "WorkerHandle | UpstreamHandle | RayHandle"


def on_cluster(model: ModelConfig, cluster: ClusterConfig | None) -> bool:
    """Whether the model runs as a Ray Serve deployment (models served by upstreams never do)."""
    return cluster is not None and cluster.engine == "ray" and not served_by_upstreams(model)


def new_handle(model: ModelConfig, path: Path | None, cluster: ClusterConfig | None = None, fingerprint: str = "") -> Handle:
    """A worker process for a local model; an in-process forwarder for one
    served by upstream servers (backend "openai"); a Ray Serve application
    for a local model when [cluster] engine = "ray"."""
    if served_by_upstreams(model):
        return UpstreamHandle(model, path)
    if on_cluster(model, cluster):
        from modelyard.router.ray_handle import RayHandle

        assert cluster is not None
        return RayHandle(model, path, cluster, fingerprint)
    return WorkerHandle(model, path)


def load_fingerprint(model: ModelConfig, path: Path | None, cluster: ClusterConfig | None = None) -> str:
    """What a worker depends on: a change here needs a new worker. Other
    fields (aliases, limits, timeouts) apply to the running one."""
    relevant = model.model_dump(mode="json", include={"modality", "backend", "source", "options", "max_concurrency", "replicas", "memory_limit"})
    placement = [model.cluster.model_dump(mode="json"), cluster.model_dump(mode="json")] if on_cluster(model, cluster) else None
    return json.dumps([relevant, str(path), placement], sort_keys=True)


class ModelEntry:
    def __init__(
        self, model: ModelConfig, path: Path | None, owner: Registry | None = None, cluster: ClusterConfig | None = None
    ) -> None:
        self.model = model
        self.path = path
        self.owner = owner
        self.cluster = cluster
        self.fingerprint = load_fingerprint(model, path, cluster)
        self.created = int(time.time())
        self.status: Status = "unloaded"
        self.error: str | None = None
        # One worker per replica; admission sends each call to the least busy one.
        self.handles: list[Handle] = []
        self.last_used = time.monotonic()
        self.last_memory = 0
        self.retired = False
        self.restarts = 0  # workers the router killed (hung, or stuck in a cancelled call)
        self.last_failure: str | None = None
        self.watchers: set[asyncio.Task[None]] = set()  # router/supervision.py's, per worker
        self.admission = Admission()
        self.observer = ModelObserver(model.id, lambda: self.metrics)
        self._load_task: asyncio.Task[None] | None = None
        # What the last load reported about image inputs (None: never loaded), kept while unloaded for /v1/models.
        self.known_images: bool | None = None

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def metrics(self) -> Metrics | None:
        return self.owner.metrics if self.owner else None

    @property
    def inflight(self) -> int:
        return self.admission.inflight

    @property
    def queued(self) -> int:
        return self.admission.queued

    @property
    def handle(self) -> Handle | None:
        """The first live worker (what /health shows), or None."""
        return next((h for h in self.handles if h.alive), None)

    @property
    def workers_wanted(self) -> int:
        """Handles the model needs: one per replica, except on a cluster, where one deployment runs them all."""
        return 1 if on_cluster(self.model, self.cluster) else self.model.replicas

    @property
    def loaded(self) -> bool:
        return len(self.handles) == self.workers_wanted and all(h.alive for h in self.handles)

    @property
    def busy(self) -> bool:
        return self.inflight > 0 or self.status == "loading"

    def info(self) -> dict[str, Any]:
        """What the loaded worker reported about its model ({} when none is loaded)."""
        handle = self.handle
        if handle is None or handle.ready is None:
            return {}
        return dict(handle.ready.info)

    def speakers(self) -> list[str]:
        """A loaded speech model's own speaker names ([] when not loaded or not listed)."""
        return [str(name) for name in self.info().get("speakers", [])]

    def takes_token_ids(self) -> bool:
        """A loaded embeddings model embeds token arrays of its own vocabulary (else it takes text)."""
        return bool(self.info().get("token_ids", False))

    @property
    def runs_here(self) -> bool:
        """Whether the model's work runs in this machine's worker processes
        (not on upstream servers or a Ray cluster, which place it themselves)."""
        return not served_by_upstreams(self.model) and not on_cluster(self.model, self.cluster)

    def declares_images(self) -> bool:
        """Whether the model's backend says, from its options alone, that it will take images."""
        if served_by_upstreams(self.model):
            return True  # as the loaded handle says: the upstream judges (router/upstream_handle.py)
        from modelyard.adapters.base import ChatAdapter
        from modelyard.adapters.catalog import backends

        backend = backends().get(self.model.backend)
        if backend is None or backend.in_router or self.model.modality != "chat":
            return False
        try:
            adapter = backend.load_class("chat")
            return issubclass(adapter, ChatAdapter) and adapter.declares_images(adapter.Options.model_validate(self.model.options))
        except Exception:  # noqa: BLE001 - a plugin's bad hook costs only this hint
            return False

    def takes_images(self) -> bool:
        """A loaded chat model takes image parts in its messages (adapters/base.py ImageInput)."""
        return bool(self.info().get("images", False))

    async def ensure_loaded(self) -> None:
        """Make sure every replica has a live worker, loading the model if
        needed. Concurrent callers share one load; a caller that goes away
        does not cancel it. A failed load raises router/workers.py's LoadFailed."""
        if self.loaded:
            return
        if self._load_task is None or self._load_task.done():
            self._load_task = asyncio.create_task(self._load(), name=f"load-{self.id}")
        await asyncio.shield(self._load_task)

    async def load(self) -> None:
        """ensure_loaded, with a failure as the registry layer's ModelLoadFailed."""
        try:
            await self.ensure_loaded()
        except LoadFailed as exc:
            raise ModelLoadFailed(self.id, str(exc)) from None

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
        progress = asyncio.create_task(self.observer.show_progress(started), name=f"progress-{self.id}")
        fresh = [
            new_handle(self.model, self.path, self.cluster, self.fingerprint) for _ in range(self.workers_wanted - len(alive))
        ]
        try:
            readies = await asyncio.gather(*(h.start() for h in fresh))
        except BaseException as exc:
            await asyncio.gather(*(h.kill() for h in fresh), return_exceptions=True)
            self.status = "failed"
            self.error = str(exc) if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, LoadFailed):
                log.error("model %s failed to load: %s", self.id, exc)
                self.observer.load_finished("failed")
                raise
            if isinstance(exc, Exception):
                log.exception("model %s failed to load", self.id)
                self.observer.load_finished("failed")
                raise LoadFailed("load_failed", self.error) from exc
            raise
        finally:
            progress.cancel()
        self.handles = alive + fresh
        self.status = "loaded"
        if readies:
            self.known_images = bool(readies[0].info.get("images", False))
        self.last_used = time.monotonic()
        capacity = self.admission.capacity
        per_worker = readies[0].max_concurrency if readies else max(1, capacity // max(1, len(alive)))
        self.admission.resize(per_worker * len(self.handles))
        self.observer.load_finished("loaded", time.monotonic() - started)
        log.info(
            "model %s loaded in %.2fs (worker pid %s)",
            self.id,
            time.monotonic() - started,
            ", ".join(str(h.pid) for h in fresh),
        )
        for handle in fresh:
            if isinstance(handle, WorkerHandle):
                supervision.watch(self, handle)

    def stream(self, method: str, payload: Any) -> AsyncIterator[Any]:
        """Run one call on this model's worker and yield what it yields.

        Failures come out as router/model_errors.py's exceptions; closing the
        iterator cancels the call. Admission enforces the queue limit and
        the request timeout. Text calls (every text surface's) get the
        model's max_output_tokens here, so all surfaces share one cap."""
        if method in ("chat", "complete") and self.model.max_output_tokens is not None:
            payload = replace(payload, sampling=capped(payload.sampling, self.model.max_output_tokens))
        return self.admission.stream(self, method, payload)

    def engine_stats(self) -> dict[str, int]:
        """The workers' engine state from their last heartbeats, summed over
        replicas (llama-cpp: slots, slots_busy, engine_queued, kv_cells,
        kv_cells_used, prompt_tokens_cached, prompt_tokens_evaluated); {} when they report none."""
        total: dict[str, int] = {}
        for handle in self.handles:
            if handle.alive:
                for key, value in handle.engine_stats.items():
                    total[key] = total.get(key, 0) + value
        return total

    def upstreams(self) -> list[dict[str, Any]] | None:
        """Each upstream's state, for a model served by upstream servers (else None)."""
        if not served_by_upstreams(self.model):
            return None
        handle = self.handle
        return handle.states() if isinstance(handle, UpstreamHandle) else []

    def deployment(self) -> list[dict[str, Any]] | None:
        """The Ray Serve application's state, for a model on the cluster (else None)."""
        if not on_cluster(self.model, self.cluster):
            return None
        handle = self.handle
        return handle.states() if handle is not None and hasattr(handle, "states") else []

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
        self.admission.forget_workers()
        self.status = "unloaded"
        if handles:
            await asyncio.gather(*(h.stop(grace) for h in handles))
            log.info("model %s unloaded (%s)", self.id, reason)
            self.observer.unloaded(reason)

    async def retire(self) -> None:
        """Stop taking requests, let in-flight ones finish, then unload."""
        self.retired = True
        await self.admission.wait_idle()
        await self.unload("removed from the config")


def capped(sampling: Sampling, ceiling: int | None) -> Sampling:
    """A model's max_output_tokens applied to a request's limit: the default
    of one that sets none, the ceiling of one that asks for more."""
    if ceiling is None or (sampling.max_tokens is not None and sampling.max_tokens <= ceiling):
        return sampling
    return replace(sampling, max_tokens=ceiling)
