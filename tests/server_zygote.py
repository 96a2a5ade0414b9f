"""`modelyard` processes for the tests (servers, and CLI runs), forked from
one interpreter that has already imported the web stack.

`python -m modelyard.router.cli serve` spends over a second of CPU importing
fastapi, pydantic and the router before it reads its config, and the fast
tier starts a few dozen servers. This process (started by tests/conftest.py,
one per test run, shared by its xdist workers) imports all that once; for
each process a test starts it forks a child that becomes what `python -m
modelyard.router.cli ARGS` would be: a new session, the test's environment,
working directory and arguments, stdout and stderr on the test's pipes,
stdin /dev/null, and the CLI's `__main__` run afresh (runpy), exiting
through the interpreter's normal shutdown.

`python -m tests.server_zygote CONTROL_FD [LISTEN_FD]`: CONTROL_FD is one
end of a SOCK_SEQPACKET socketpair whose other end the starting process
keeps; LISTEN_FD, if given, a listening SOCK_SEQPACKET socket on which other
test processes (pytest-xdist's workers) connect. On each connection, one
JSON message each way per event: the test sends {"args", "env", "cwd"} with
the write ends of the child's stdout and stderr attached (SCM_RIGHTS); the
zygote answers {"pid"} with a pidfd of the child attached (opened before the
child can be reaped, so signals sent through it cannot reach a recycled
pid), and once the child has exited sends {"exit": pid, "code": returncode}
(negative for a signal, as subprocess reports it). When the starting
process closes its end, the zygote exits.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import runpy
import select
import socket
import sys
import threading
from typing import Any

# What every server imports before it serves a request. modelyard.router.cli
# itself is not among them: runpy runs it as __main__, and an imported copy
# would make runpy warn that it "may result in unpredictable behaviour".
PRELOAD = (
    "modelyard.router.config",
    "modelyard.router.logs",
    "modelyard.router.server",
    "modelyard.router.connections",
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.websockets.auto",
    "anyio._backends._asyncio",
    "encodings.idna",
)
MAX_MESSAGE = 1 << 20


def serve(control: socket.socket, listener: socket.socket | None) -> tuple[dict[str, Any], list[int]] | None:
    """Fork a child per request until the process that started the zygote
    hangs up. Returns, in a child, its request and output pipes; in the
    zygote, None once it is done."""
    clients = {control}
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> pid, the client that asked for it
    while True:
        waiting = [*clients, *children, *([listener] if listener else [])]
        readable, _, _ = select.select(waiting, [], [])
        for ready in readable:
            if ready is listener:
                clients.add(listener.accept()[0])
            elif isinstance(ready, socket.socket):
                message, fds, _, _ = socket.recv_fds(ready, MAX_MESSAGE, 2)
                if not message:
                    if ready is control:
                        return None
                    clients.discard(ready)
                    ready.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    for sock in (*clients, *([listener] if listener else [])):
                        sock.close()
                    for pidfd in children:
                        os.close(pidfd)
                    return json.loads(message), fds
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, ready)
                socket.send_fds(ready, [json.dumps({"pid": pid}).encode()], [pidfd])
            else:
                pid, client = children.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                if client in clients:
                    client.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def become_cli(request: dict[str, Any], output: list[int]) -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    stdout, stderr = output
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    os.close(stderr)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["modelyard", *request["args"]]  # runpy sets argv[0] to the module's file
    runpy.run_module("modelyard.router.cli", run_name="__main__", alter_sys=True)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    listener = socket.socket(fileno=int(sys.argv[2])) if len(sys.argv) > 2 else None
    for module in PRELOAD:
        importlib.import_module(module)
    # The installed backends, from the entry points of every installed
    # distribution (70 ms): a cache each server would fill the same way.
    from modelyard.adapters.catalog import backends

    backends()
    # A thread would not survive into the children (and might hold a lock they need).
    assert threading.active_count() == 1, f"the zygote must be single-threaded: {threading.enumerate()}"
    # The children's collector need not look at what every one of them imported
    # (nor, by touching it, copy the pages they share with the zygote).
    gc.collect()
    gc.freeze()
    child = serve(control, listener)
    if child is not None:
        become_cli(*child)


if __name__ == "__main__":
    main()
