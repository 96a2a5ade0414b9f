"""The worker process: loads one model and serves calls from the router.

Run as `python -m modelyard.adapters.worker FD ROUTER_PID`, where FD is one end of a
socketpair the router made. The main thread reads frames and answers the
router's heartbeat Pings; calls run on a thread pool sized by the adapter's
concurrency; results go back as frames under a lock. A Cancel sets the
call's event, which the adapter checks between tokens and prompt batches.
The process dies with the router (adapters/containment.py) and runs under
its model's memory limit. Nothing here imports the web stack.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias

from modelyard.adapters import containment
from modelyard.adapters.base import (
    Adapter,
    AdapterError,
    ChatAdapter,
    EmbeddingsAdapter,
    ModelLoadError,
    SpeechAdapter,
)
from modelyard.adapters.catalog import backends
from modelyard.adapters.sources import SourceError, fetch
from modelyard.schemas import worker as proto

log = logging.getLogger("modelyard.worker")


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()

    def send(self, message: object) -> None:
        data = proto.encode(message)
        with self.send_lock:
            self.sock.sendall(data)

    def recv(self) -> Any:
        header = self._exactly(proto.HEADER.size)
        if header is None:
            return None
        body = self._exactly(proto.HEADER.unpack(header)[0])
        return None if body is None else proto.decode(body)

    def _exactly(self, size: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)


def resolve_path(message: proto.Load) -> Path:
    if message.path is not None:
        return Path(message.path)
    try:
        return fetch(message.source)
    except SourceError as exc:
        raise ModelLoadError(str(exc)) from None


def load_adapter(message: proto.Load, path: Path | None = None) -> Adapter:
    backend = backends().get(message.backend)
    if backend is None:
        raise ModelLoadError(f"unknown backend {message.backend!r}")
    for module in backend.requires:
        try:
            __import__(module)
        except ImportError as exc:
            hint = backend.install_hint()
            raise ModelLoadError(
                f"backend {backend.name!r} needs the Python package {module!r}, which is not installed"
                + (f"; {hint}" if hint else "")
                + f" ({exc})"
            ) from None
    cls = backend.load_class(message.modality)
    options = cls.Options.model_validate(message.options)
    return cls(path if path is not None else resolve_path(message), options)


def adapter_method(adapter: Adapter, modality: str, name: str) -> Any:
    """The adapter method a Call names, if the protocol lets its modality call it."""
    method = getattr(adapter, name, None) if proto.allowed_call(modality, name) else None
    if method is None:
        allowed = ", ".join(sorted(proto.CALLS.get(modality, ()))) or "none"
        raise AdapterError(f"this {modality} model does not support {name!r} (the calls it takes: {allowed})")
    return method


Failure: TypeAlias = tuple[str, str, str | None]  # (kind, message, param) of a call that failed


def run_call(
    adapter: Adapter,
    modality: str,
    method: str,
    payload: Any,
    cancelled: threading.Event,
    emit: Callable[[Any], None],
    out_of_memory: str = "the request needed more memory than the model's memory_limit allows",
) -> Failure | None:
    """Run one call of the adapter (blocking), handing each item to `emit`;
    stop early once `cancelled` is set. Returns how it failed, or None."""
    try:
        if cancelled.is_set():
            raise AdapterError("cancelled before it started")  # nobody is listening any more
        result = adapter_method(adapter, modality, method)(payload, cancelled)
        if hasattr(result, "__next__"):
            for item in result:
                emit(item)
                if cancelled.is_set():
                    result.close()
                    break
        else:
            emit(result)
        return None
    except AdapterError as exc:
        return exc.kind, str(exc), getattr(exc, "param", None)
    except MemoryError:
        return "out_of_memory", out_of_memory, None
    except Exception as exc:
        # Unexpected: the detail goes to the log (stderr), the router
        # answers 500 with a generic message.
        traceback.print_exc()
        return "internal", f"{type(exc).__name__}: {exc}", None


def load_info(adapter: Adapter) -> dict[str, Any]:
    """What a worker reports of its model once at load (Ready.info)."""
    info: dict[str, Any] = {}
    if isinstance(adapter, SpeechAdapter):
        # Reported once at load, so listing voices never waits behind a synthesis.
        info["speakers"] = [str(name) for name in adapter.speakers()]
    if isinstance(adapter, EmbeddingsAdapter):
        info["token_ids"] = bool(adapter.takes_token_ids())
    if isinstance(adapter, ChatAdapter):
        info["images"] = bool(adapter.takes_images())
    return info


def concurrency_of(adapter: Adapter, message: proto.Load) -> int:
    concurrency = adapter.max_concurrency  # an adapter may set its own from its options (llama-cpp's slots)
    if message.max_concurrency is not None:
        concurrency = min(concurrency, message.max_concurrency)
    return concurrency


class Worker:
    def __init__(self, channel: Channel, adapter: Adapter, concurrency: int, modality: str) -> None:
        self.channel = channel
        self.adapter = adapter
        self.modality = modality
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="call")
        self.cancels: dict[int, threading.Event] = {}
        self.lock = threading.Lock()

    def serve(self) -> None:
        while True:
            message = self.channel.recv()
            if message is None:
                os._exit(0)  # the router is gone: nobody to answer, do not finish the work
            if isinstance(message, proto.Shutdown):
                break
            if isinstance(message, proto.Ping):
                self.channel.send(proto.Pong(message.seq, self.adapter.stats()))
            elif isinstance(message, proto.Call):
                event = threading.Event()
                with self.lock:
                    self.cancels[message.call_id] = event
                self.pool.submit(self.run, message, event)
            elif isinstance(message, proto.Cancel):
                with self.lock:
                    event = self.cancels.get(message.call_id)
                if event is not None:
                    event.set()
        for event in list(self.cancels.values()):
            event.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.adapter.close()

    def run(self, call: proto.Call, cancelled: threading.Event) -> None:
        try:
            failure = run_call(
                self.adapter, self.modality, call.method, call.payload, cancelled,
                lambda item: self.channel.send(proto.Item(call.call_id, item)),
            )
            if failure is None:
                self.channel.send(proto.Done(call.call_id))
            else:
                self._fail(call.call_id, *failure)
        except OSError:
            pass  # the router is gone: nobody to tell
        finally:
            with self.lock:
                self.cancels.pop(call.call_id, None)

    def _fail(self, call_id: int, kind: str, message: str, param: str | None = None) -> None:
        try:
            self.channel.send(proto.Failed(call_id, kind, message, param))
        except OSError:
            pass


def main(argv: list[str]) -> int:
    # The router owns signals: Ctrl-C in a terminal reaches the whole process
    # group, and the worker must wait for the router's Shutdown instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=os.environ.get("MODELYARD_WORKER_LOG", "WARNING"), stream=sys.stderr)
    if len(argv) > 2:
        containment.die_with_parent(int(argv[2]))
    sock = socket.socket(fileno=int(argv[1]))
    containment.watch_socket(sock)
    channel = Channel(sock)
    message = channel.recv()
    if not isinstance(message, proto.Load):
        return 2
    started = time.monotonic()
    try:
        path = resolve_path(message)
        limit = containment.limit_before_load(message.backend, message.memory_limit)
        adapter = load_adapter(message, path)
        limit = containment.limit_after_load(message.backend, message.memory_limit, path) or limit
    except MemoryError:
        channel.send(proto.LoadFailed("load_failed", "loading the model needs more memory than its memory_limit allows"))
        return 1
    except AdapterError as exc:
        channel.send(proto.LoadFailed(exc.kind, str(exc)))
        return 1
    except Exception as exc:
        traceback.print_exc()
        channel.send(proto.LoadFailed("load_failed", f"{type(exc).__name__}: {exc}"))
        return 1
    concurrency = concurrency_of(adapter, message)
    channel.send(
        proto.Ready(
            max_concurrency=concurrency,
            load_seconds=time.monotonic() - started,
            info=load_info(adapter),
            memory_limit=limit,
            memory_limit_kind=containment.resource_for(message.backend)[1],
        )
    )
    Worker(channel, adapter, concurrency, message.modality).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
