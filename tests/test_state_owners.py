"""Model-free unit tests of the registry's small owners of state (issue 12,
part 3): admission's typed refusals, their one mapping to API errors, the
application state object, and the worker protocol's table of calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from modelyard.adapters.base import AdapterError, Finished, TextDelta
from modelyard.adapters.worker import Worker
from modelyard.router.deps import Yard
from modelyard.router.errors import APIError, api_error_from
from modelyard.router.lifecycle import ModelEntry
from modelyard.router.metrics import Metrics
from modelyard.router.model_errors import (
    ModelBusy,
    ModelLoadFailed,
    ModelNotFound,
    ModelTimedOut,
    NoModelConfigured,
    WorkerFailed,
    WrongModality,
)
from modelyard.router.registry import Registry
from modelyard.schemas import worker as proto
from modelyard.schemas.config import ModelConfig

from tests import import_probe


def chat_model(**fields: Any) -> ModelConfig:
    return ModelConfig.model_validate({"id": "m", "modality": "chat", "backend": "llama-cpp", "source": "m.gguf", **fields})


class FakeHandle:
    """A live worker that yields scripted items, or waits forever."""

    def __init__(self, items: list[Any], hang: bool = False) -> None:
        self.items = items
        self.hang = hang
        self.ready = proto.Ready(max_concurrency=1, load_seconds=0.0, info={"speakers": ["amy", 7]})
        self.dead = asyncio.Event()
        self.calls = 0

    @property
    def alive(self) -> bool:
        return True

    async def call(self, method: str, payload: Any, deadline: float | None, release: Any) -> Any:
        self.calls += 1
        try:
            if self.hang:  # as router/workers.py's does, the call ends with TimeoutError at its deadline
                async with asyncio.timeout_at(deadline):
                    await asyncio.Event().wait()
            for item in self.items:
                yield item
        finally:
            release()


def loaded_entry(handle: FakeHandle, **fields: Any) -> ModelEntry:
    entry = ModelEntry(chat_model(**fields), None)
    entry.handles = [handle]  # type: ignore[list-item]
    entry.status = "loaded"
    return entry


async def collect(entry: ModelEntry) -> list[Any]:
    return [item async for item in entry.stream("chat", None)]


def test_admission_refuses_past_the_queue_limit_with_model_busy() -> None:
    async def scenario() -> None:
        entry = loaded_entry(FakeHandle([], hang=True), max_queue=0)
        running = asyncio.create_task(collect(entry))
        while entry.inflight == 0:
            await asyncio.sleep(0)
        with pytest.raises(ModelBusy) as refused:
            await collect(entry)
        assert refused.value.inflight == 1
        assert entry.inflight == 1  # the refused request was never admitted
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        assert entry.inflight == 0 and entry.queued == 0

    asyncio.run(scenario())


def test_admission_stops_a_call_past_its_deadline_with_model_timed_out() -> None:
    async def scenario() -> None:
        entry = loaded_entry(FakeHandle([], hang=True), request_timeout=0.2)
        with pytest.raises(ModelTimedOut) as late:
            await collect(entry)
        assert late.value.timeout == 0.2
        assert entry.inflight == 0

    asyncio.run(scenario())


def test_calls_are_measured_by_the_observer() -> None:
    async def scenario() -> None:
        registry = Registry()
        registry.metrics = Metrics(lambda: registry)
        handle = FakeHandle([TextDelta("hi"), TextDelta(" there"), Finished("stop", 3, 2)])
        entry = loaded_entry(handle)
        entry.owner = registry
        items = await collect(entry)
        assert [type(i) for i in items] == [TextDelta, TextDelta, Finished]
        body = registry.metrics.render()[0].decode()
        assert 'modelyard_time_to_first_token_seconds_count{model="m"} 1.0' in body
        assert 'modelyard_generated_tokens_total{model="m"} 2.0' in body
        assert handle.calls == 1

    asyncio.run(scenario())


def test_entry_reports_what_its_worker_said_at_load() -> None:
    entry = loaded_entry(FakeHandle([]))
    assert entry.speakers() == ["amy", "7"]
    assert ModelEntry(chat_model(), None).speakers() == []  # not loaded: nothing to report


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ModelBusy("m", 5), 429, "queue_full"),
        (ModelTimedOut("m", 1.5), 504, "timeout"),
        (ModelLoadFailed("m", "no such file"), 500, "model_load_failed"),
        (WorkerFailed("m", "invalid_request", "too long", "messages"), 400, None),
        (WorkerFailed("m", "worker_crashed", "the worker died"), 500, "worker_crashed"),
        (WorkerFailed("m", "internal", "KeyError: secret"), 500, "backend_error"),
        (ModelNotFound("nope"), 404, "model_not_found"),
        (NoModelConfigured("image"), 404, "model_not_found"),
        (WrongModality("m", "chat", "embeddings", "/v1/embeddings"), 400, "model_modality_mismatch"),
    ],
)
def test_every_registry_failure_maps_to_one_api_error(exc: Exception, status: int, code: str | None) -> None:
    error = api_error_from(exc)
    assert error is not None
    assert (error.status, error.code) == (status, code)
    assert "secret" not in error.message  # an internal failure's text stays in the log


def test_api_error_from_keeps_api_errors_and_leaves_unexpected_ones_to_the_caller() -> None:
    original = APIError(418, "teapot")
    assert api_error_from(original) is original
    assert api_error_from(RuntimeError("boom")) is None
    busy = api_error_from(ModelBusy("m", 3))
    assert busy is not None and busy.headers == {"retry-after": "1"}
    bad = api_error_from(WorkerFailed("m", "invalid_request", "too long", "messages"))
    assert bad is not None and bad.param == "messages" and bad.message == "too long"


def test_the_registry_layer_speaks_no_http() -> None:
    layer = ("modelyard.router.registry", "modelyard.router.lifecycle", "modelyard.router.admission")
    for module in layer:
        imported = import_probe.imported_by(module, layer)
        assert not {m for m in imported if m.split(".")[0] in ("fastapi", "starlette")}, module
        assert "modelyard.router.errors" not in imported, module


def test_the_yard_owns_one_coalescer_per_model_entry() -> None:
    registry = Registry()
    yard = Yard(registry=registry, metrics=Metrics(lambda: registry))
    first = ModelEntry(chat_model(), None)
    assert yard.surface_stats(first) == {}
    coalescer = yard.coalescer(first)
    assert yard.coalescer(first) is coalescer
    assert yard.surface_stats(first) == {"coalescer": {"requests": 0, "backend_batches": 0}}
    replaced = ModelEntry(chat_model(), None)  # a reload replaced the model's entry
    assert yard.surface_stats(replaced) == {}
    assert yard.coalescer(replaced) is not coalescer
    assert yard.files is None  # no shared default: each app opens its own store in its lifespan


class RecordingChannel:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: object) -> None:
        self.sent.append(message)


class EveryMethodAdapter:
    def __init__(self) -> None:
        self.closed = False

    def chat(self, payload: Any, cancelled: threading.Event) -> Any:
        yield TextDelta("ok")

    def embed(self, payload: Any, cancelled: threading.Event) -> str:
        return "vectors"

    def close(self, *args: Any) -> None:
        self.closed = True


def run_call(modality: str, method: str) -> tuple[list[Any], EveryMethodAdapter]:
    channel = RecordingChannel()
    adapter = EveryMethodAdapter()
    worker = Worker(channel, adapter, 1, modality)  # type: ignore[arg-type]
    try:
        worker.run(proto.Call(1, method, None), threading.Event())
    finally:
        worker.pool.shutdown()
    return channel.sent, adapter


def test_the_worker_runs_the_calls_its_modality_allows() -> None:
    sent, _ = run_call("chat", "chat")
    assert [type(m) for m in sent] == [proto.Item, proto.Done]
    sent, _ = run_call("embeddings", "embed")
    assert [type(m) for m in sent] == [proto.Item, proto.Done] and sent[0].payload == "vectors"


@pytest.mark.parametrize(("modality", "method"), [("chat", "close"), ("chat", "embed"), ("embeddings", "chat"), ("speech", "__init__")])
def test_the_worker_refuses_any_other_call(modality: str, method: str) -> None:
    sent, adapter = run_call(modality, method)
    assert [type(m) for m in sent] == [proto.Failed]
    assert sent[0].kind == AdapterError.kind
    assert repr(method) in sent[0].message and modality in sent[0].message
    assert not adapter.closed


def test_the_protocol_table_covers_every_modality() -> None:
    from typing import get_args

    from modelyard.schemas.config import Modality

    assert set(proto.CALLS) == set(get_args(Modality))
    assert all(not proto.allowed_call(modality, "close") for modality in proto.CALLS)
