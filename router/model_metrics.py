"""What a model's work is measured by: load counts and times, unloads, the
time to the first text and the token rate, and a long load's progress
display. The observer only watches; it changes nothing."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable

from modelyard.adapters.base import Finished, TextDelta
from modelyard.router.metrics import Metrics

log = logging.getLogger("modelyard.registry")

PROGRESS_EVERY = 5.0  # seconds between "still loading" lines


class CallTimer:
    """One call's timing: its first text (TTFT) and, at the end, its token rate."""

    def __init__(self, observer: ModelObserver) -> None:
        self.observer = observer
        self.started = time.monotonic()
        self.first_text: float | None = None

    def saw(self, item: object) -> None:
        metrics = self.observer.metrics
        if self.first_text is None and isinstance(item, TextDelta) and item.text:
            self.first_text = time.monotonic()
            if metrics is not None:
                metrics.ttft.labels(self.observer.model_id).observe(self.first_text - self.started)
        elif isinstance(item, Finished) and metrics is not None:
            metrics.tokens.labels(self.observer.model_id).inc(item.completion_tokens)
            if self.first_text is not None and item.completion_tokens > 1:
                elapsed = time.monotonic() - self.first_text
                if elapsed > 0:
                    metrics.token_rate.labels(self.observer.model_id).observe((item.completion_tokens - 1) / elapsed)


class ModelObserver:
    def __init__(self, model_id: str, metrics: Callable[[], Metrics | None]) -> None:
        self.model_id = model_id
        self._metrics = metrics  # read each time: the registry gets its Metrics after it is made

    @property
    def metrics(self) -> Metrics | None:
        return self._metrics()

    def call(self) -> CallTimer:
        return CallTimer(self)

    def load_finished(self, result: str, seconds: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.loads.labels(self.model_id, result).inc()
            if seconds is not None:
                self.metrics.load_seconds.labels(self.model_id).observe(seconds)

    def unloaded(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.unloads.labels(self.model_id, reason).inc()

    async def show_progress(self, started: float) -> None:
        """A long load says it is still going: a live line on a terminal, a
        log line every few seconds otherwise. Runs until cancelled."""
        tty = sys.stderr.isatty()
        while True:
            await asyncio.sleep(1.0 if tty else PROGRESS_EVERY)
            elapsed = time.monotonic() - started
            if tty:
                sys.stderr.write(f"\r  loading {self.model_id}: {elapsed:5.0f}s ")
                sys.stderr.flush()
            else:
                log.info("model %s still loading (%.0fs)", self.model_id, elapsed)
