"""One replica of a model deployed on Ray Serve ([cluster] engine = "ray").

The router wraps ModelReplica in `serve.deployment` (router/ray_handle.py),
so this module imports nothing of Ray and the adapters stay as they are:
the replica loads its adapter as a worker process does (adapters/worker.py)
and runs each call on a thread of its own, since adapter calls block. Items
cross back to the replica's event loop through a queue; a caller that goes
away (Ray cancels the streaming call) sets the call's cancel event, which
the adapter checks between tokens as it does in a worker.

A failure the adapter reports on purpose is yielded as a Failure item, not
raised: Ray would wrap a raised exception in its own error types.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from modelyard.adapters.base import AdapterError
from modelyard.adapters.worker import concurrency_of, load_adapter, load_info, resolve_path, run_call
from modelyard.schemas import worker as proto

_END = object()
OUT_OF_MEMORY = "the request needed more memory than the replica has"


@dataclass
class Failure:
    kind: str
    message: str
    param: str | None = None


class ModelReplica:
    def __init__(self, load: proto.Load) -> None:
        started = time.monotonic()
        self.modality = load.modality
        # A load that fails is kept and told by describe(), not raised: Ray would retry the
        # replica and report only "failed to update the deployments".
        self.failure: Failure | None = None
        try:
            self.adapter = load_adapter(load, resolve_path(load))
        except AdapterError as exc:
            self.failure = Failure(exc.kind, str(exc))
            self.ready = proto.Ready(1, 0.0, {})
        except Exception as exc:
            traceback.print_exc()
            self.failure = Failure("load_failed", f"{type(exc).__name__}: {exc}")
            self.ready = proto.Ready(1, 0.0, {})
        else:
            self.ready = proto.Ready(concurrency_of(self.adapter, load), time.monotonic() - started, load_info(self.adapter))
        # The adapter's own limit, as a worker's thread pool keeps it: past it, calls wait here.
        self.slots = threading.Semaphore(self.ready.max_concurrency)

    async def describe(self) -> proto.Ready | Failure:
        return self.failure or self.ready

    async def call(self, method: str, payload: Any) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def run() -> None:
            try:
                with self.slots:
                    failure = run_call(self.adapter, self.modality, method, payload, cancelled, put, OUT_OF_MEMORY)
                if failure is not None:
                    put(Failure(*failure))
            finally:
                put(_END)

        thread = threading.Thread(target=run, name=f"call-{method}", daemon=True)
        thread.start()
        try:
            while True:
                item = await items.get()
                if item is _END:
                    return
                yield item
        finally:
            cancelled.set()
