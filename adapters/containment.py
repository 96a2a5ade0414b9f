"""What keeps a worker process inside its bounds, from the worker's side.

- A memory limit (setrlimit) set before the model loads, so a request that
  slips past the router's bounds fails with MemoryError (or kills this
  process) instead of exhausting the host.
- A parent-death signal and a watchdog on the control socket, so a worker
  never outlives the router, whatever its threads are doing.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import socket
import sys
import threading
from pathlib import Path

from adapters.base import AdapterError

PR_SET_PDEATHSIG = 1

# Which limit each backend gets, and how "auto" sizes it (see
# docs/config.md, `memory_limit`). llama.cpp maps its weights and reserves
# little address space besides, so RLIMIT_AS bounds everything it can touch,
# resident memory included. torch and onnxruntime reserve many gigabytes of
# address space they never use, so they get RLIMIT_DATA (writable private
# memory: heap, anonymous maps), which a file mapping does not count.
ADDRESS_SPACE_BACKENDS = {"llama-cpp", "ctransformers"}
AUTO_BASE = 1 << 30  # 1 GiB: the interpreter, libraries, threads, context
AUTO_FACTOR = 2  # the weights once mapped, once more for buffers and caches


class RequestCancelled(AdapterError):
    """A call stopped because its client left or its deadline passed."""

    kind = "cancelled"


def model_size(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def resource_for(backend: str) -> tuple[int, str]:
    if backend in ADDRESS_SPACE_BACKENDS:
        return resource.RLIMIT_AS, "address space"
    return resource.RLIMIT_DATA, "data"


def auto_limit(backend: str, path: Path | None) -> int | None:
    """The default limit: 1 GiB + 2 × the model's files for llama.cpp-like
    backends; none for the others, whose use depends on the request (image
    sizes, batch sizes) more than on the weights."""
    if backend not in ADDRESS_SPACE_BACKENDS:
        return None
    return AUTO_BASE + AUTO_FACTOR * model_size(path)


def apply_memory_limit(backend: str, limit: int | str | None, path: Path | None) -> tuple[int | None, str]:
    """Set the limit for this process; returns (bytes or None, which limit)."""
    value = auto_limit(backend, path) if limit == "auto" else limit
    which, name = resource_for(backend)
    if value is None or isinstance(value, str):
        return None, name
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(int(value), hard)
    resource.setrlimit(which, (int(value), hard))
    return int(value), name


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the router dies (Linux). The parent may
    have died before prctl took effect: then it is not our parent any more."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(3)


def watch_socket(sock: socket.socket) -> threading.Thread:
    """Exit at once when the router's end of the socket closes, even while
    a call is busy in C code: a daemon thread that only waits for hang-up."""

    def watch() -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP)
        while True:
            for _, events in poller.poll():
                if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    os._exit(0)

    thread = threading.Thread(target=watch, name="socket-watchdog", daemon=True)
    thread.start()
    return thread
