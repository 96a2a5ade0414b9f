"""The "worker" of a local model when [cluster] engine = "ray": one Ray
Serve application, `<app_prefix>-<model id>-<fingerprint hash>`, whose
replicas run adapters/ray_replica.py's ModelReplica. It has the interface
of router/workers.py's WorkerHandle, so a ModelEntry's admission, metrics
and every surface above it serve cluster models as they serve local ones.

A reload that changes a model makes a new entry, hence an application of
a new name beside the old one; the registry swaps to it once it is ready
and retires the old entry, whose stop() deletes the old application after
its requests. An unchanged model keeps its application.

Ray is imported only here, and only when a config asks for the cluster.
Every blocking Ray call (connecting, deploying, deleting) runs on a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from modelyard.router.workers import CallFailed, LoadFailed, ProcesslessHandle, WorkerCrashed, wire_memory_limit
from modelyard.schemas import worker as proto
from modelyard.schemas.config import ClusterConfig, ModelConfig

log = logging.getLogger("modelyard.cluster")

INSTALL_HINT = "[cluster] engine = \"ray\" needs Ray: pip install 'modelyard[ray]'"
_connect_lock = threading.Lock()
# Building a deployment's config registers and unregisters modules for cloudpickle's
# pickle-by-value, process-wide: two models deploying side by side on two threads race
# there ("... is not registered for pickle by value"). One deployment is built at a time.
_deploy_lock = threading.Lock()
_connected: tuple[str, str] | None = None
STATUS_INTERVAL = 2.0  # seconds between Ray Serve status reads for /health


def connect(cluster: ClusterConfig) -> None:
    """Join the Ray cluster as a driver and make sure Serve runs there (no
    HTTP proxy of its own: the router is the front). Blocking; once per process."""
    global _connected
    with _connect_lock:
        wanted = (cluster.address, cluster.namespace)
        if _connected == wanted:
            return
        if _connected is not None:
            raise LoadFailed(
                "load_failed",
                f"this server is connected to the Ray cluster {_connected[0]!r} (namespace {_connected[1]!r}); "
                "changing [cluster] address or namespace needs a restart",
            )
        try:
            import ray
            from ray import serve
        except ImportError:
            raise LoadFailed("load_failed", INSTALL_HINT) from None
        try:
            ray.init(address=cluster.address, namespace=cluster.namespace, logging_level="WARNING", log_to_driver=False)
            serve.start(proxy_location="Disabled")
        except Exception as exc:
            raise LoadFailed("load_failed", f"cannot reach the Ray cluster at {cluster.address!r}: {exc}") from None
        _connected = wanted


def app_name(cluster: ClusterConfig, model: ModelConfig, fingerprint: str) -> str:
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:10]
    return f"{cluster.app_prefix}-{model.id}-{digest}"


def first_guess(model: ModelConfig) -> int:
    """Requests per replica before the replica has said what its adapter takes."""
    return model.max_concurrency or 1


def deployment_options(model: ModelConfig, concurrency: int | None = None) -> dict[str, Any]:
    settings = model.cluster
    actor: dict[str, Any] = {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus}
    if settings.memory is not None:
        actor["memory"] = int(settings.memory)
    options: dict[str, Any] = {
        "name": "ModelReplica",
        "ray_actor_options": actor,
        # What one replica serves at once; more wait in Ray's router for a free replica.
        "max_ongoing_requests": concurrency or first_guess(model),
        "health_check_period_s": 5,
    }
    if settings.autoscaling is not None:
        scaling = settings.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(1, scaling.min_replicas),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = model.replicas
    return options


def replica_count(model: ModelConfig) -> int:
    """The most replicas the deployment runs: admission's capacity is sized by it."""
    return model.cluster.autoscaling.max_replicas if model.cluster.autoscaling else model.replicas


def is_replica_death(exc: BaseException) -> bool:
    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    except ImportError:
        return False
    return isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError))


class RayHandle(ProcesslessHandle):
    """Ray supervises and restarts the replicas itself: nothing here for router/supervision.py."""

    def __init__(self, model: ModelConfig, path: Path | None, cluster: ClusterConfig, fingerprint: str) -> None:
        super().__init__(model)
        self.path = path
        self.cluster = cluster
        self.name = app_name(cluster, model, fingerprint)
        self.handle: Any = None
        self.deleted = False
        self.rows: list[dict[str, Any]] = []
        self._watcher: asyncio.Task[None] | None = None

    def load_message(self) -> proto.Load:
        # The router's resolved path: Ray expects every node to have the same
        # environment (this venv, its packages, the model files at the same path).
        return proto.Load(
            model_id=self.model.id,
            backend=self.model.backend,
            modality=self.model.modality,
            source=self.model.source or "",
            path=str(self.path) if self.path else None,
            options=dict(self.model.options),
            max_concurrency=self.model.max_concurrency,
            memory_limit=wire_memory_limit(self.model),
        )

    async def _describe(self) -> Any:
        return await self.handle.describe.remote()

    async def start(self) -> proto.Ready:
        from modelyard.adapters.ray_replica import Failure

        await asyncio.to_thread(connect, self.cluster)
        try:
            self.handle = await asyncio.wait_for(asyncio.to_thread(self._deploy, None), self.cluster.deploy_timeout)
            ready = await asyncio.wait_for(self._describe(), self.cluster.deploy_timeout)
            if isinstance(ready, Failure):
                await self.kill()
                raise LoadFailed(ready.kind, ready.message)
            if ready.max_concurrency != first_guess(self.model):
                # Ray's cap per replica becomes the adapter's own (llama-cpp's slots): Ray then
                # spreads requests over replicas instead of piling them on one. A lightweight
                # update: the replicas stay.
                await asyncio.wait_for(asyncio.to_thread(self._deploy, ready.max_concurrency), self.cluster.deploy_timeout)
        except TimeoutError:
            await self.kill()
            raise LoadFailed(
                "load_failed",
                f"the Ray Serve deployment {self.name} was not ready within deploy_timeout "
                f"({self.cluster.deploy_timeout:g}s); does the cluster have the resources its replicas ask for?",
            ) from None
        except LoadFailed:
            raise
        except Exception as exc:
            await self.kill()
            raise LoadFailed("load_failed", f"the Ray Serve deployment {self.name} failed: {first_line(exc)}") from None
        # Admission's slots: each replica's concurrency times the most replicas.
        self.ready = proto.Ready(ready.max_concurrency * replica_count(self.model), ready.load_seconds, dict(ready.info))
        self.rows = await asyncio.to_thread(self._status_rows)
        self._watcher = asyncio.create_task(self._watch_status(), name=f"ray-status-{self.model.id}")
        log.info("model %s is the Ray Serve application %s", self.model.id, self.name)
        return self.ready

    def _deploy(self, concurrency: int | None) -> Any:
        from ray import serve

        from modelyard.adapters.ray_replica import ModelReplica

        try:
            with _deploy_lock:
                deployment = serve.deployment(ModelReplica).options(**deployment_options(self.model, concurrency))
                return serve.run(deployment.bind(self.load_message()), name=self.name, route_prefix=None, blocking=False)
        except Exception as exc:
            raise RuntimeError(self._replica_error() or first_line(exc)) from None

    def _replica_error(self) -> str | None:
        """Why the replicas failed to start: the last line of the constructor's
        traceback, which Ray Serve keeps in the deployment's status message."""
        from ray import serve

        try:
            status = serve.status().applications.get(self.name)
        except Exception:
            return None
        for deployment in status.deployments.values() if status else []:
            lines = [line.strip() for line in (deployment.message or "").splitlines() if line.strip()]
            if lines:
                return lines[-1].removeprefix("modelyard.adapters.base.")
        return None

    async def call(
        self,
        method: str,
        payload: Any,
        deadline: float | None = None,
        on_settled: Callable[[], None] = lambda: None,
    ) -> AsyncIterator[Any]:
        """Run one call on a replica; yield its items. Closing the iterator
        cancels the call in the replica."""
        from modelyard.adapters.ray_replica import Failure

        responses = None
        try:
            if not self.alive:
                raise WorkerCrashed(f"the deployment of '{self.model.id}' is not running")
            responses = self.handle.options(stream=True).call.remote(method, payload)
            loop = asyncio.get_running_loop()
            while True:
                try:
                    if deadline is None:
                        item = await responses.__anext__()
                    else:
                        item = await asyncio.wait_for(responses.__anext__(), max(0.0, deadline - loop.time()))
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    if isinstance(exc, (TimeoutError, CallFailed, WorkerCrashed)):
                        raise
                    if is_replica_death(exc):
                        raise WorkerCrashed(
                            f"The Ray Serve replica serving model '{self.model.id}' died during the request; Ray restarts it."
                        ) from None
                    raise CallFailed("backend_error", f"the Ray Serve call failed: {first_line(exc)}") from None
                if isinstance(item, Failure):
                    raise CallFailed(item.kind, item.message, item.param)
                yield item
        finally:
            if responses is not None:
                responses.cancel()
            on_settled()

    async def kill(self) -> None:
        self.dead.set()
        if self._watcher is not None:
            self._watcher.cancel()
        if self.deleted:
            return
        self.deleted = True
        try:
            await asyncio.to_thread(self._delete)
        except Exception as exc:
            log.warning("could not delete the Ray Serve application %s: %s", self.name, first_line(exc))

    def _delete(self) -> None:
        from ray import serve

        serve.delete(self.name)

    def states(self) -> list[dict[str, Any]]:
        """The application's replicas as Ray Serve last reported them (for /health)."""
        return self.rows

    async def _watch_status(self) -> None:
        # serve.status() blocks on the controller: asked on a thread, every few seconds, never by /health.
        while not self.dead.is_set():
            try:
                self.rows = await asyncio.to_thread(self._status_rows)
            except Exception as exc:
                log.debug("Ray Serve status of %s: %s", self.name, first_line(exc))
            await asyncio.sleep(STATUS_INTERVAL)

    def _status_rows(self) -> list[dict[str, Any]]:
        from ray import serve

        status = serve.status().applications.get(self.name)
        if status is None:
            return []
        return [
            {
                "application": self.name,
                "deployment": name,
                "status": str(getattr(deployment.status, "value", deployment.status)),
                "replicas": {str(getattr(state, "value", state)): count for state, count in deployment.replica_states.items()},
            }
            for name, deployment in status.deployments.items()
        ]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[-1] if "Traceback" in text else text.splitlines()[0]
