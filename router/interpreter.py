"""A persistent Python interpreter in the sandbox: the code_interpreter tool's
state (variables, imports, definitions) lives across the calls of a session.

One process per session, started on the first call: `/usr/bin/python3` under
router/sandbox.py (bubblewrap, rlimits, nobody) running the driver
router/interpreter_driver.py, which reads each call's code from a Unix socket,
runs it in one globals dict and replies (its docstring has the protocol). The
process's stdout and stderr are pipes this side reads all along: a call's
output is what arrives between its start and the marker the driver writes
after it, capped at `max_output_bytes` each; output of background work
between calls is dropped.

Per call:
- wall clock `timeout`: the whole process group is killed (every process of
  the run's pid namespace under bubblewrap); the state is lost, the next call
  starts a fresh interpreter and its outcome says so (`state_lost`);
- CPU: the process's hard RLIMIT_CPU is a session budget of
  `cpu_seconds * CPU_BUDGET_CALLS`; each call may use `cpu_seconds` more
  (the driver sets the soft limit) and past it fails with "cpu_limit", the
  state kept. Once the budget cannot cover another call the interpreter is
  restarted (state lost, said so);
- memory, processes, open files, file size: the sandbox's rlimits, for the
  interpreter as for any run (a MemoryError is the code's exception);
- a crash (segfault, os._exit, a signal) fails the call; the next one starts
  afresh. Cancelling the awaiting task kills the process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import struct
import time
from pathlib import Path
from typing import Any

from modelyard.router.agent_tools import CodeOutcome
from modelyard.router.sandbox import DRAIN_GRACE, PYTHON, Sandbox, Started

log = logging.getLogger("modelyard.interpreter")

DRIVER = (Path(__file__).parent / "interpreter_driver.py").read_text()
CPU_BUDGET_CALLS = 10  # the interpreter's lifetime CPU: this many calls' worth of cpu_seconds
MAX_CODE_BYTES = 1024 * 1024
MAX_REPLY_BYTES = 64 * 1024  # a reply is two fields; a longer one is not the driver's
HEADER = struct.Struct(">I")
READ_CHUNK = 65536


class ProtocolError(Exception):
    """The interpreter's reply was not one the driver sends."""


class Output:
    """One of the interpreter's output pipes: what a call printed, up to its marker, capped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.marker = b""
        self.kept = bytearray()
        self.held = b""  # the tail that may be the start of the marker
        self.truncated = False
        self.listening = False
        self.ended = asyncio.Event()

    def arm(self, marker: bytes) -> None:
        self.marker, self.kept, self.held, self.truncated = marker, bytearray(), b"", False
        self.listening = True
        self.ended = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        if not self.listening:
            return  # between calls: background output nobody asked for
        data = self.held + chunk
        at = data.find(self.marker)
        if at >= 0:
            self._keep(data[:at])
            self.held = b""
            self.listening = False
            self.ended.set()
            return
        cut = max(len(data) - len(self.marker) + 1, 0)
        self._keep(data[:cut])
        self.held = data[cut:]

    def stop(self) -> None:
        """The call is over without its marker (the pipe closed, or the call died)."""
        if self.listening:
            self._keep(self.held)
            self.held = b""
            self.listening = False
        self.ended.set()

    def _keep(self, data: bytes) -> None:
        room = self.cap - len(self.kept)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self.kept += data

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        return text + f"\n[output cut at {self.cap} bytes]" if self.truncated else text


class Interpreter:
    """A session's Python process, started by the first `run` and again after it died. One call at a time
    (the session's lock)."""

    def __init__(self, sandbox: Sandbox, workdir: Path, uid: int | None = None) -> None:
        self.sandbox = sandbox  # its config's limits apply from the next start (or call, for the timeout)
        self.workdir = workdir
        self.uid = uid  # the host user to run as (Sandbox.start), None: nobody
        self.cpu_seconds = sandbox.config.cpu_seconds
        self.budget = self.cpu_seconds * CPU_BUDGET_CALLS
        cap = int(sandbox.config.max_output_bytes)
        self.outputs = (Output(cap), Output(cap))
        self._child: Started | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._cpu_used = 0.0
        self._lost: str | None = None  # why the state of earlier calls is gone: told to the next call
        self._stopping: str | None = None  # why this side is stopping the process (close() during a call)

    @property
    def pid(self) -> int | None:
        """The host pid of the running process (bwrap's, under bubblewrap), or None."""
        return self._child.pid if self._child is not None else None

    async def run(self, code: str, timeout: float | None = None) -> CodeOutcome:
        timeout = self.sandbox.config.timeout if timeout is None else timeout
        started = time.monotonic()
        if len(code.encode()) > MAX_CODE_BYTES:
            return CodeOutcome(code, error=f"the code is over {MAX_CODE_BYTES} bytes; write it to a file and run that")
        if self._child is not None and self._child.process.returncode is not None:
            await self._stop(f"the Python process exited between calls ({self._child.reason() or 'by itself'})")
        if self._child is not None and self._cpu_used + self.cpu_seconds + 1 > self.budget:
            await self._stop(f"the previous Python process had used its CPU budget of {self.budget} s")
        lost = None
        if self._child is None:
            await self._start()
            lost, self._lost = self._lost, None
        child = self._child
        assert child is not None
        marker = b"\x00" + secrets.token_hex(16).encode() + b"\x00"
        for output in self.outputs:
            output.arm(marker)
        try:
            reply = await asyncio.wait_for(self._call(code, marker), timeout)
        except asyncio.TimeoutError:
            await self._stop(f"the previous call ran past its {timeout:g} s timeout and was killed")
            return self._outcome(code, started, lost, error="timeout", timed_out=True)
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError) as exc:
            error = await self._died(child, exc)
            return self._outcome(code, started, lost, error=error, exit_code=child.process.returncode)
        except BaseException:  # cancelled: nothing of the call outlives it
            await self._stop("the previous call was cancelled")
            raise
        await self._drain()
        error = reply["error"]
        return self._outcome(code, started, lost, error=error, exit_code=0 if error is None else 1)

    async def close(self) -> None:
        """Kill the process (a call in progress fails, saying why)."""
        await self._stop("the session was closed")

    # --- the process -----------------------------------------------------------

    async def _start(self) -> None:
        self.cpu_seconds = self.sandbox.config.cpu_seconds
        self.budget = self.cpu_seconds * CPU_BUDGET_CALLS
        for output in self.outputs:
            output.cap = int(self.sandbox.config.max_output_bytes)
        ours, theirs = socket.socketpair()
        try:
            child = await self.sandbox.start([PYTHON, "-u", "-c", DRIVER], self.workdir, stdin=theirs.fileno(),
                                             cpu_budget=self.budget, uid=self.uid)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            await child.reap()
            ours.close()
            raise
        self._child, self._cpu_used, self._stopping = child, 0.0, None
        streams = (child.process.stdout, child.process.stderr)
        self._pumps = [asyncio.ensure_future(_pump(s, o)) for s, o in zip(streams, self.outputs, strict=True)]
        log.debug("started a Python interpreter (pid %d) in %s", child.pid, self.workdir)

    async def _call(self, code: str, marker: bytes) -> dict[str, Any]:
        assert self._reader is not None and self._writer is not None
        request = json.dumps({"code": code, "marker": marker.decode(), "cpu_seconds": self.cpu_seconds}).encode()
        self._writer.write(HEADER.pack(len(request)) + request)
        await self._writer.drain()
        (size,) = HEADER.unpack(await self._reader.readexactly(HEADER.size))
        if size > MAX_REPLY_BYTES:
            raise ProtocolError(f"a reply of {size} bytes")
        try:
            reply = json.loads(await self._reader.readexactly(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"a reply that is not JSON ({exc})") from None
        error, used = (reply.get("error"), reply.get("cpu_used")) if isinstance(reply, dict) else (0, None)
        if not (error is None or isinstance(error, str)) or not isinstance(used, int | float):
            raise ProtocolError("a reply without its fields")
        self._cpu_used = float(used)
        return {"error": error}

    async def _drain(self) -> None:
        """Wait (a bounded time) for the marker on both pipes: the call's last output has arrived."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(o.ended.wait() for o in self.outputs)), DRAIN_GRACE)
        for output in self.outputs:
            output.stop()

    async def _died(self, child: Started, exc: BaseException) -> str:
        """The process ended (or broke the protocol) during a call: why, in words."""
        stopping = self._stopping
        if isinstance(exc, ProtocolError):
            reason = f"it sent {exc}"
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.process.wait()), DRAIN_GRACE)
            code = child.process.returncode
            why = child.reason()
            if why == "signal SIGKILL" and stopping is None:
                why += f": its CPU budget of {self.budget} s was used up, or the code killed it"
            reason = why or (f"it exited with status {code}" if code is not None else "it stopped answering")
        await self._stop(stopping or f"the Python process of the previous call died ({reason})")
        if stopping is not None:
            return f"the call was stopped: {stopping}"
        return f"the Python process died ({reason}); its variables and imports are gone"

    async def _stop(self, reason: str) -> None:
        """Kill the process group and forget the process; `reason` goes to the next call."""
        child = self._child
        if child is None:
            return
        self._stopping = reason
        child.kill()  # first, before any await: a cancellation cannot leave it running
        if self._writer is not None:
            self._writer.close()
        await child.reap()
        with contextlib.suppress(asyncio.TimeoutError):  # the pipes close with the last process holding them
            await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), DRAIN_GRACE)
        for pump in self._pumps:
            pump.cancel()
        for output in self.outputs:
            output.stop()
        if self._child is child:
            self._child, self._reader, self._writer, self._pumps = None, None, None, []
            self._lost = reason
            log.debug("stopped the Python interpreter (pid %d): %s", child.pid, reason)

    def _outcome(self, code: str, started: float, lost: str | None, **fields: Any) -> CodeOutcome:
        stdout, stderr = (o.text() for o in self.outputs)
        return CodeOutcome(code, stdout=stdout, stderr=stderr, duration=time.monotonic() - started,
                           state_lost=lost, **fields)


async def _pump(stream: asyncio.StreamReader | None, output: Output) -> None:
    if stream is None:
        return
    try:
        while chunk := await stream.read(READ_CHUNK):
            output.feed(chunk)
    finally:
        output.stop()
