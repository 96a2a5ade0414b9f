"""One model's worker process, seen from the router's event loop.

The worker is `python -m modelyard.adapters.worker FD` with one end of a socketpair;
this side reads its frames with asyncio streams, so nothing blocks the loop.
If the process dies (a segfault, SIGKILL), every call in flight fails with
`WorkerCrashed` and the handle reports itself dead. router/supervision.py
watches a live handle: heartbeats, and cancelled calls the worker must
acknowledge within a grace period.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from modelyard.adapters.containment import ADDRESS_SPACE_BACKENDS
from modelyard.schemas import worker as proto
from modelyard.schemas.config import ModelConfig

log = logging.getLogger("modelyard.workers")


class WorkerCrashed(Exception):
    pass


class LoadFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CallFailed(Exception):
    def __init__(self, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.param = param


def wire_memory_limit(model: ModelConfig) -> int | str | None:
    """The config's memory_limit as the worker takes it."""
    if model.memory_limit == "auto":
        return "auto"
    if model.memory_limit == "none":
        return None
    return int(model.memory_limit)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class ProcesslessHandle:
    """The part of WorkerHandle's interface that router/supervision.py and
    /health read, for a handle with no local worker process to supervise
    (an upstream forwarder, a Ray Serve application). Subclasses start(),
    call() and kill()."""

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.ready: proto.Ready | None = None
        self.dead = asyncio.Event()
        self.process = None
        self.cancelling: dict[int, Any] = {}
        self.engine_stats: dict[str, int] = {}
        self.kill_reason: str | None = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return None

    @property
    def alive(self) -> bool:
        return self.ready is not None and not self.dead.is_set()

    async def stop(self, grace: float = 10.0) -> None:
        self.stopping = True
        await self.kill()

    async def kill(self) -> None:
        raise NotImplementedError


class WorkerHandle:
    def __init__(self, model: ModelConfig, path: Path | None) -> None:
        self.model = model
        self.path = path
        self.process: asyncio.subprocess.Process | None = None
        self.ready: proto.Ready | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._calls: dict[int, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._pump: asyncio.Task[None] | None = None
        self.dead = asyncio.Event()
        # Cancelled calls the worker has not yet finished: call id →
        # (loop time by which it must, what to call when it has).
        self.cancelling: dict[int, tuple[float, Callable[[], None]]] = {}
        self.last_pong = 0.0
        self.engine_stats: dict[str, int] = {}  # from the last heartbeat: slots in use, KV cells...
        self.kill_reason: str | None = None  # why the router killed it, if it did
        self.stopping = False  # asked to exit: it no longer answers heartbeats

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.ready is not None and not self.dead.is_set()

    async def start(self) -> proto.Ready:
        """Start the process and load the model. Raises LoadFailed."""
        parent, child = socket.socketpair()
        env = dict(os.environ)
        if self.model.backend in ADDRESS_SPACE_BACKENDS:
            # Each malloc arena reserves 64 MiB of address space: few arenas
            # keep an address-space limit about memory, not thread count.
            env.setdefault("MALLOC_ARENA_MAX", "2")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "modelyard.adapters.worker",
                str(child.fileno()),
                str(os.getpid()),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent, limit=2**26)
        self.send(
            proto.Load(
                model_id=self.model.id,
                backend=self.model.backend,
                modality=self.model.modality,
                source=self.model.source or "",
                path=str(self.path) if self.path else None,
                options=dict(self.model.options),
                max_concurrency=self.model.max_concurrency,
                memory_limit=wire_memory_limit(self.model),
            )
        )
        first = await self._read()
        if isinstance(first, proto.Ready):
            self.ready = first
            self.last_pong = asyncio.get_running_loop().time()
            self._pump = asyncio.create_task(self._read_forever(), name=f"worker-{self.model.id}")
            return first
        if isinstance(first, proto.LoadFailed):
            await self.kill()
            raise LoadFailed(first.kind, first.message)
        # Read the exit status before kill(): kill() reaps the process itself,
        # and a segfault would then be reported as "status 255".
        code = await self._wait_exit(5)
        await self.kill()
        hint = ""
        if self.model.memory_limit != "none":
            hint = f" (it runs under memory_limit = {self.model.memory_limit!r}: if that is too low, raise it)"
        raise LoadFailed("load_failed", f"the worker process {describe_exit(code)} while loading the model{hint}")

    async def _read(self) -> Any:
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(proto.HEADER.size)
            body = await self._reader.readexactly(proto.HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return proto.decode(body)

    def send(self, message: object) -> None:
        if self._writer is None or self._writer.is_closing():
            raise WorkerCrashed(f"the worker for '{self.model.id}' is not running")
        self._writer.write(proto.encode(message))

    async def _read_forever(self) -> None:
        while True:
            message = await self._read()
            if message is None:
                break
            if isinstance(message, proto.Pong):
                self.last_pong = asyncio.get_running_loop().time()
                self.engine_stats = message.stats
                continue
            call_id = getattr(message, "call_id", -1)
            queue = self._calls.get(call_id)
            if queue is not None:
                queue.put_nowait(message)
            elif isinstance(message, (proto.Done, proto.Failed)) and call_id in self.cancelling:
                self.cancelling.pop(call_id)[1]()
        code = await self._wait_exit(5)
        self.dead.set()
        if self._calls:
            log.error("worker for model %s %s; failing %d request(s)", self.model.id, describe_exit(code), len(self._calls))
        what = describe_exit(code) if self.kill_reason is None else f"was killed because it {self.kill_reason}"
        reason = WorkerCrashed(
            f"The worker process for model '{self.model.id}' {what} during the request. The next request will restart it."
        )
        for queue in self._calls.values():
            queue.put_nowait(reason)
        self._settle_all()

    def _settle_all(self) -> None:
        settled, self.cancelling = self.cancelling, {}
        for _, on_settled in settled.values():
            on_settled()

    async def _wait_exit(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None

    async def call(
        self,
        method: str,
        payload: Any,
        deadline: float | None = None,
        on_settled: Callable[[], None] = lambda: None,
    ) -> AsyncIterator[Any]:
        """Run one call; yield its items. Closing the iterator early cancels it
        in the worker; so does passing `deadline` (loop time), with TimeoutError.

        `on_settled` runs once the worker is done with the call: when it ends,
        or, for a cancelled call, when the worker says it stopped or dies (it
        is killed if it does not stop within the model's cancel_grace)."""
        if not self.alive:
            on_settled()
            raise WorkerCrashed(f"the worker for '{self.model.id}' is not running")
        call_id = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._calls[call_id] = queue
        finished = False
        try:
            self.send(proto.Call(call_id, method, payload))
            loop = asyncio.get_running_loop()
            while True:
                if deadline is None:
                    message = await queue.get()
                else:
                    message = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                if isinstance(message, proto.Item):
                    yield message.payload
                elif isinstance(message, proto.Done):
                    finished = True
                    return
                elif isinstance(message, proto.Failed):
                    finished = True
                    raise CallFailed(message.kind, message.message, message.param)
                elif isinstance(message, WorkerCrashed):
                    finished = True
                    raise message
        finally:
            self._calls.pop(call_id, None)
            if finished or not self.alive:
                on_settled()
            else:
                try:
                    self.send(proto.Cancel(call_id))
                    grace = self.model.cancel_grace
                    self.cancelling[call_id] = (asyncio.get_running_loop().time() + grace, on_settled)
                except WorkerCrashed:
                    on_settled()

    async def stop(self, grace: float = 10.0) -> None:
        """Ask the worker to finish and exit; SIGTERM it if it does not in
        time, SIGKILL it if that does not work either."""
        self.stopping = True
        if self.process is None or self.process.returncode is not None:
            self.dead.set()
            return
        try:
            self.send(proto.Shutdown())
            if self._writer is not None:
                await asyncio.wait_for(self._writer.drain(), grace)
        except (WorkerCrashed, ConnectionError, TimeoutError):
            pass
        if await self._wait_exit(grace) is None:
            log.warning("worker for model %s did not exit in %.0fs; stopping it", self.model.id, grace)
            try:
                self.process.terminate()
            except ProcessLookupError:
                pass
            if await self._wait_exit(2) is None:
                await self.kill()
        self._close()

    def kill_now(self, reason: str) -> None:
        """Kill the worker for `reason` (said in the errors of its calls)."""
        if self.process is not None and self.process.returncode is None:
            self.kill_reason = reason
            log.error("killing the worker (pid %s) of model %s: it %s", self.pid, self.model.id, reason)
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass
            await self._wait_exit(5)
        self._close()

    def _close(self) -> None:
        self.dead.set()
        self._settle_all()
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
