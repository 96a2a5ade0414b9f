"""The upstreams of one `backend = "openai"` model: which are healthy, how
busy each is, and the HTTP client they share.

A request goes to the healthy upstream with the fewest requests in flight
(each takes at most `max_concurrency`). Passive health: a connection error
or a 5xx answer takes an upstream out; active health: every
`health_interval` each upstream's `health_path` is fetched, and a 2xx
answer brings it (back) in. The checks run while the model's entry is
loaded and stop when it is unloaded or retired.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from modelyard.router.workers import CallFailed
from modelyard.schemas.upstream import UpstreamOptions

log = logging.getLogger("modelyard.upstreams")
# httpx logs every request at INFO; the access log and this module's warnings say what matters.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class Upstream:
    url: str  # the base URL, ending in /v1
    healthy: bool = True  # until a check or a request says otherwise
    inflight: int = 0
    requests: int = 0  # sent to it since the model loaded
    failures: int = 0  # requests that failed on it (connection errors, 5xx)
    last_error: str | None = None
    checked_at: float | None = None  # time.time() of the last active check

    def state(self) -> dict[str, Any]:
        """What /health shows of it."""
        return {
            "url": self.url,
            "state": "up" if self.healthy else "down",
            "inflight": self.inflight,
            "requests": self.requests,
            "failures": self.failures,
            "last_error": self.last_error,
            "checked_at": self.checked_at,
        }


def unavailable(model_id: str, upstreams: list[Upstream]) -> CallFailed:
    reasons = "; ".join(f"{u.url}: {u.last_error or 'down'}" for u in upstreams)
    return CallFailed("upstream_unavailable", f"Every upstream of the model '{model_id}' is down ({reasons}).")


class UpstreamPool:
    def __init__(self, model_id: str, options: UpstreamOptions) -> None:
        self.model_id = model_id
        self.options = options
        self.upstreams = [Upstream(url) for url in options.upstreams]
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(options.read_timeout, connect=options.connect_timeout),
            limits=httpx.Limits(max_connections=options.max_concurrency * len(self.upstreams) + len(self.upstreams)),
            headers=self.auth_headers(),
        )
        self._freed = asyncio.Condition()
        self._checker: asyncio.Task[None] | None = None

    def auth_headers(self) -> dict[str, str]:
        """Read when the model loads (a changed variable takes a reload that changes the model, or a restart)."""
        name = self.options.api_key_env
        key = os.environ.get(name, "") if name else ""
        if name and not key:
            log.warning("model %s: api_key_env names %s, which is not set: the upstreams get no key", self.model_id, name)
        return {"authorization": f"Bearer {key}"} if key else {}

    @property
    def capacity(self) -> int:
        return self.options.max_concurrency * len(self.upstreams)

    def start(self) -> None:
        self._checker = asyncio.create_task(self._check_forever(), name=f"upstream-checks-{self.model_id}")

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
        await self.client.aclose()

    def mark_down(self, upstream: Upstream, reason: str) -> None:
        upstream.failures += 1
        upstream.last_error = reason
        if upstream.healthy:
            log.warning("model %s: upstream %s is down: %s", self.model_id, upstream.url, reason)
        upstream.healthy = False

    @asynccontextmanager
    async def lease(self, exclude: Upstream | None = None) -> AsyncIterator[Upstream]:
        """Hold a slot on the least busy healthy upstream (not `exclude`), or
        raise CallFailed("upstream_unavailable") when none is healthy."""
        async with self._freed:
            while True:
                healthy = [u for u in self.upstreams if u.healthy and u is not exclude]
                if not healthy:
                    raise unavailable(self.model_id, self.upstreams)
                free = [u for u in healthy if u.inflight < self.options.max_concurrency]
                if free:
                    upstream = min(free, key=lambda u: u.inflight)
                    break
                await self._freed.wait()
            upstream.inflight += 1
            upstream.requests += 1
        try:
            yield upstream
        finally:
            upstream.inflight -= 1
            async with self._freed:
                self._freed.notify()

    async def check(self, upstream: Upstream) -> None:
        """One active check of `upstream`."""
        try:
            response = await self.client.get(upstream.url + self.options.health_path)
            # Any answer below 500 is a server that is up: one that refuses the
            # key (401) then says so to each request, which is clearer than a 503.
            ok, reason = response.status_code < 500, f"health check answered {response.status_code}"
        except httpx.HTTPError as exc:
            ok, reason = False, f"health check failed: {describe(exc)}"
        upstream.checked_at = time.time()
        if ok and not upstream.healthy:
            log.info("model %s: upstream %s is back", self.model_id, upstream.url)
            upstream.last_error = None if response.is_success else reason
            async with self._freed:
                upstream.healthy = True
                self._freed.notify_all()
        elif not ok:
            if upstream.healthy:
                log.warning("model %s: upstream %s is down: %s", self.model_id, upstream.url, reason)
            upstream.healthy = False
            upstream.last_error = reason

    async def _check_forever(self) -> None:
        while True:  # start() follows a first round of checks
            await asyncio.sleep(self.options.health_interval)
            await asyncio.gather(*(self.check(u) for u in self.upstreams))

    def states(self) -> list[dict[str, Any]]:
        return [u.state() for u in self.upstreams]


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
