"""Prometheus metrics, kept on one object per app (no module globals).

Counters and histograms are updated where things happen (the request
middleware, the registry); gauges that describe the current state (models
loaded, their memory, queues) are read from the registry at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from modelyard.router.registry import Registry

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RATE_BUCKETS = (1, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 400, 1000)


def rss_bytes(pid: int | None) -> int:
    """Resident memory of a process, from /proc (Linux); 0 when unknown."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


# What a worker's engine reports (adapters/base.py Adapter.stats; llama-cpp's
# slots and KV cache), as Prometheus metrics per model.
ENGINE_METRICS: list[tuple[str, Any, str, str]] = [
    ("slots", GaugeMetricFamily, "modelyard_slots", "Sequences the model's engine decodes together (llama-cpp slots)."),
    ("slots_busy", GaugeMetricFamily, "modelyard_slots_busy", "Slots running a request now."),
    ("engine_queued", GaugeMetricFamily, "modelyard_engine_queue_depth", "Requests waiting inside the worker for KV cache room."),
    ("kv_cells", GaugeMetricFamily, "modelyard_kv_cells", "KV cache size in tokens."),
    ("kv_cells_used", GaugeMetricFamily, "modelyard_kv_cells_used", "KV cache cells holding tokens (running and cached)."),
    ("prompt_tokens_cached", CounterMetricFamily, "modelyard_prompt_tokens_cached", "Prompt tokens served from the KV cache."),
    ("prompt_tokens_evaluated", CounterMetricFamily, "modelyard_prompt_tokens_evaluated", "Prompt tokens evaluated."),
    ("prompt_cache_entries", GaugeMetricFamily, "modelyard_prompt_cache_entries", "Prompts saved in host memory after their slot went to another request."),
    ("prompt_cache_bytes", GaugeMetricFamily, "modelyard_prompt_cache_bytes", "Host memory those saved prompts take."),
]


class StateCollector(Collector):
    def __init__(self, get_registry: Callable[[], Registry | None]) -> None:
        self.get_registry = get_registry

    def collect(self) -> Iterator[Any]:
        registry = self.get_registry()
        loaded = GaugeMetricFamily("modelyard_models_loaded", "Models with a live worker process.")
        memory = GaugeMetricFamily("modelyard_model_memory_bytes", "Resident memory of each model's worker.", labels=["model"])
        queued = GaugeMetricFamily("modelyard_queue_depth", "Requests waiting for a free slot, per model.", labels=["model"])
        inflight = GaugeMetricFamily("modelyard_inflight_requests", "Requests in progress, per model.", labels=["model"])
        engine = {  # the worker's engine stats key -> its metric
            key: kind(name, text, labels=["model"])
            for key, kind, name, text in ENGINE_METRICS
        }
        count = 0
        for entry in registry.all_entries() if registry else []:
            if entry.handle is not None:
                count += 1
                memory.add_metric([entry.id], entry.memory())
            queued.add_metric([entry.id], entry.queued)
            inflight.add_metric([entry.id], entry.inflight)
            for key, value in entry.engine_stats().items():
                if key in engine:
                    engine[key].add_metric([entry.id], value)
        loaded.add_metric([], count)
        yield from (loaded, memory, queued, inflight, *engine.values())


class Metrics:
    def __init__(self, get_registry: Callable[[], Registry | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("modelyard_requests", "HTTP requests.", ["route", "model", "status"], registry=r)
        self.latency = Histogram(
            "modelyard_request_duration_seconds", "Request latency.", ["route", "model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "modelyard_time_to_first_token_seconds", "Time to the first generated text.", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("modelyard_generated_tokens", "Tokens generated.", ["model"], registry=r)
        self.token_rate = Histogram(
            "modelyard_generation_tokens_per_second", "Decode speed of each generation.", ["model"], buckets=RATE_BUCKETS, registry=r
        )
        self.loads = Counter("modelyard_model_loads", "Model loads.", ["model", "result"], registry=r)
        self.load_seconds = Histogram("modelyard_model_load_seconds", "Model load time.", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.unloads = Counter("modelyard_model_unloads", "Model unloads.", ["model", "reason"], registry=r)
        self.reloads = Counter("modelyard_config_reloads", "Config reloads.", ["result"], registry=r)
        r.register(StateCollector(get_registry))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
