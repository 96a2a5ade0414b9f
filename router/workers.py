"""One model's worker process, seen from the router's event loop.

The worker is `python -m adapters.worker FD` with one end of a socketpair;
this side reads its frames with asyncio streams, so nothing blocks the loop.
If the process dies (a segfault, SIGKILL), every call in flight fails with
`WorkerCrashed` and the handle reports itself dead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import adapters
from schemas import worker as proto
from schemas.config import ModelConfig

log = logging.getLogger("modelyard.workers")

# Where `adapters` and `schemas` live, so that the child finds them even when
# modelyard runs from a source checkout that is not installed.
PROJECT_ROOT = str(Path(adapters.__file__).resolve().parent.parent)


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


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


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
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapters.worker",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent, limit=2**26)
        self._send(
            proto.Load(
                model_id=self.model.id,
                backend=self.model.backend,
                modality=self.model.modality,
                source=self.model.source,
                path=str(self.path) if self.path else None,
                options=dict(self.model.options),
                max_concurrency=self.model.max_concurrency,
            )
        )
        first = await self._read()
        if isinstance(first, proto.Ready):
            self.ready = first
            self._pump = asyncio.create_task(self._read_forever(), name=f"worker-{self.model.id}")
            return first
        if isinstance(first, proto.LoadFailed):
            await self.kill()
            raise LoadFailed(first.kind, first.message)
        # Read the exit status before kill(): kill() reaps the process itself,
        # and a segfault would then be reported as "status 255".
        code = await self._wait_exit(5)
        await self.kill()
        raise LoadFailed("load_failed", f"the worker process {describe_exit(code)} while loading the model")

    async def _read(self) -> Any:
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(proto.HEADER.size)
            body = await self._reader.readexactly(proto.HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return proto.decode(body)

    def _send(self, message: object) -> None:
        if self._writer is None or self._writer.is_closing():
            raise WorkerCrashed(f"the worker for '{self.model.id}' is not running")
        self._writer.write(proto.encode(message))

    async def _read_forever(self) -> None:
        while True:
            message = await self._read()
            if message is None:
                break
            queue = self._calls.get(getattr(message, "call_id", -1))
            if queue is not None:
                queue.put_nowait(message)
        code = await self._wait_exit(5)
        self.dead.set()
        if self._calls:
            log.error("worker for model %s %s; failing %d request(s)", self.model.id, describe_exit(code), len(self._calls))
        reason = WorkerCrashed(
            f"The worker process for model '{self.model.id}' {describe_exit(code)} during the request. "
            "The next request will restart it."
        )
        for queue in self._calls.values():
            queue.put_nowait(reason)

    async def _wait_exit(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None

    async def call(self, method: str, payload: Any, deadline: float | None = None) -> AsyncIterator[Any]:
        """Run one call; yield its items. Closing the iterator early cancels it
        in the worker; so does passing `deadline` (loop time), with TimeoutError."""
        if not self.alive:
            raise WorkerCrashed(f"the worker for '{self.model.id}' is not running")
        call_id = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._calls[call_id] = queue
        finished = False
        try:
            self._send(proto.Call(call_id, method, payload))
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
            if not finished and self.alive:
                try:
                    self._send(proto.Cancel(call_id))
                except WorkerCrashed:
                    pass

    async def stop(self, grace: float = 10.0) -> None:
        """Ask the worker to finish and exit; kill it if it does not in time."""
        if self.process is None or self.process.returncode is not None:
            self.dead.set()
            return
        try:
            self._send(proto.Shutdown())
            if self._writer is not None:
                await self._writer.drain()
        except (WorkerCrashed, ConnectionError):
            pass
        if await self._wait_exit(grace) is None:
            log.warning("worker for model %s did not exit in %.0fs; killing it", self.model.id, grace)
            await self.kill()
        self._close()

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
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
