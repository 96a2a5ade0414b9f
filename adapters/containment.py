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

from modelyard.adapters.base import AdapterError

PR_SET_PDEATHSIG = 1

# Which limit each backend gets, and whether "auto" sets one (see
# docs/config.md, `memory_limit`). llama.cpp maps its weights and reserves
# little address space besides, so RLIMIT_AS bounds everything it can touch,
# resident memory included. The torch and onnxruntime backends (and
# ctransformers, not measured) get RLIMIT_DATA (writable private memory:
# heap, anonymous maps), which mapped files and reserved-but-unused address
# space do not count; "auto" sets none for them, since what they need
# depends on the request (image size, batch) more than on the weights.
ADDRESS_SPACE_BACKENDS = {"llama-cpp"}
AUTO_HEADROOM = 1 << 30  # 1 GiB over what the loaded model uses, + its files' size


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


def own_status(key: str) -> int:
    """A kB field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def set_limit(backend: str, value: int) -> int:
    which, _ = resource_for(backend)
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, hard))
    return value


def limit_before_load(backend: str, limit: int | str | None) -> int | None:
    """A size from the config applies before the model loads: a model that
    does not fit fails to load, with a message that says why."""
    return set_limit(backend, int(limit)) if isinstance(limit, int) else None


def limit_after_load(backend: str, limit: int | str | None, path: Path | None) -> int | None:
    """"auto", for llama-cpp: what the loaded model's process maps (weights,
    KV cache, compute buffers, threads: all known only once it has loaded)
    + 1 GiB + the model file's size, for what requests add."""
    if limit != "auto" or backend not in ADDRESS_SPACE_BACKENDS:
        return None
    return set_limit(backend, own_status("VmSize") + AUTO_HEADROOM + model_size(path))


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
