"""Watching a live worker from the router: heartbeats and cancelled calls.

The router sends a Ping every few seconds; the worker's reader thread
answers with a Pong even while its calls run. A worker that has not answered
for the model's `heartbeat_timeout` is hung (stopped, deadlocked, swapped to
death): it is killed, its calls fail with the worker error, and the model
is reloaded.

A cancelled call (its client left, or its request_timeout passed) holds its
slot until the worker says it stopped; a worker that does not within the
model's `cancel_grace` is stuck in work it cannot interrupt (one long C
call) and is killed and replaced, so the next request gets a fresh worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from modelyard.router.workers import LoadFailed, WorkerCrashed, WorkerHandle
from modelyard.schemas import worker as proto

if TYPE_CHECKING:
    from modelyard.router.registry import ModelEntry

log = logging.getLogger("modelyard.supervision")

TICK = 0.25  # seconds between checks of the cancel deadlines


def watch(entry: ModelEntry, handle: WorkerHandle) -> None:
    """Watch a freshly loaded worker of `entry` until it dies."""
    for coro, name in ((notice_exit(entry, handle), "watch"), (supervise(entry, handle), "supervise")):
        task = asyncio.create_task(coro, name=f"{name}-{entry.id}")
        entry.watchers.add(task)
        task.add_done_callback(entry.watchers.discard)


async def notice_exit(entry: ModelEntry, handle: WorkerHandle) -> None:
    """A worker that died on its own (a crash, an outside kill) leaves its
    model failed until the next request restarts it."""
    await handle.dead.wait()
    if handle in entry.handles and entry.status == "loaded" and handle.kill_reason is None:
        code = handle.process.returncode if handle.process else None
        entry.status = "failed"
        entry.error = f"the worker process exited unexpectedly (status {code}); the next request restarts it"
        log.error("model %s: %s", entry.id, entry.error)


def heartbeat_interval(timeout: float) -> float:
    """Ping often enough that a few Pongs fit in the timeout."""
    return min(5.0, max(0.2, timeout / 4))


async def supervise(entry: ModelEntry, handle: WorkerHandle) -> None:
    """Run while `handle`, a worker of `entry`, lives and is not stopping.
    The timeouts are read from the entry each time: a reload may change them."""
    loop = asyncio.get_running_loop()
    seq = itertools.count(1)
    next_ping = loop.time()
    while not handle.dead.is_set() and not handle.stopping:
        now = loop.time()
        model = entry.model
        reason = None
        late = [call_id for call_id, (deadline, _) in handle.cancelling.items() if now > deadline]
        if late:
            reason = f"did not stop a cancelled request within cancel_grace ({model.cancel_grace:g}s)"
        elif model.heartbeat_timeout is not None and now - handle.last_pong > model.heartbeat_timeout:
            reason = f"did not answer its heartbeat for {now - handle.last_pong:.1f}s (heartbeat_timeout {model.heartbeat_timeout:g}s)"
        if reason is not None:
            handle.kill_now(reason)
            await handle.dead.wait()
            await replace_killed(entry, handle, reason)
            return
        if model.heartbeat_timeout is not None and now >= next_ping:
            try:
                handle.send(proto.Ping(next(seq)))
            except WorkerCrashed:
                return
            next_ping = now + heartbeat_interval(model.heartbeat_timeout)
        try:
            await asyncio.wait_for(handle.dead.wait(), TICK)
        except TimeoutError:
            pass


async def replace_killed(entry: ModelEntry, handle: WorkerHandle, reason: str) -> None:
    """After the supervisor killed `handle`: start its replacement now, so
    that the next request finds the model ready (or waits for this load)."""
    if handle not in entry.handles:
        return
    entry.restarts += 1
    entry.last_failure = f"worker pid {handle.pid} {reason}"
    entry.status = "unhealthy"
    entry.error = f"{entry.last_failure}; it was killed and is being replaced"
    if not entry.retired:
        try:
            await entry.ensure_loaded()
        except LoadFailed:
            pass  # recorded on the entry


def stats(entry: ModelEntry) -> dict[str, Any]:
    """What /health shows about a model's containment."""
    limits = [h.ready.memory_limit for h in entry.handles if h.alive and h.ready]
    return {
        "memory_limit_bytes": limits[0] if limits else None,
        "stopping": sum(len(h.cancelling) for h in entry.handles),  # cancelled calls not yet stopped
        "restarts": entry.restarts,
        "last_failure": entry.last_failure,
    }
