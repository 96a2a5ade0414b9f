"""The "worker" of a `backend = "openai"` model: an in-process forwarder to
its upstream servers (router/upstream_pool.py), with the interface of
router/workers.py's WorkerHandle, so that a ModelEntry, its admission, and
every surface above them serve upstream models as they serve local ones.

A request that fails before the upstream's first byte (a connection error,
a 5xx) is retried once on another upstream; one that fails after it ends
with the error, as a call on a crashed worker does. Errors come out as
CallFailed kinds that router/errors.py maps: upstream_error (502: the
upstream refused or failed, with its message), upstream_timeout (504),
upstream_unavailable (503: no upstream is up), upstream_busy (429).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from modelyard.adapters.base import TRANSCRIPTION_SAMPLE_RATE, AudioChunk, Embeddings, GeneratedImage
from modelyard.router import upstream_wire as wire
from modelyard.router.upstream_pool import Upstream, UpstreamPool, describe
from modelyard.router.workers import CallFailed, ProcesslessHandle
from modelyard.schemas import worker as proto
from modelyard.schemas.config import ModelConfig
from modelyard.schemas.upstream import UpstreamOptions

BACKEND = "openai"  # adapters/catalog.py's name for it
AUDIO_SAMPLE_RATE = 24000  # OpenAI's speech rate (what `pcm` is in)


def served_by_upstreams(model: ModelConfig) -> bool:
    return model.backend == BACKEND


class UpstreamHandle(ProcesslessHandle):
    def __init__(self, model: ModelConfig, path: Path | None = None) -> None:
        super().__init__(model)
        self.options = UpstreamOptions.model_validate(model.options)
        self.upstream_model = self.options.model or model.id
        self.pool: UpstreamPool | None = None

    def states(self) -> list[dict[str, Any]]:
        return self.pool.states() if self.pool is not None else []

    async def start(self) -> proto.Ready:
        """Check every upstream once (so the first requests avoid a dead one),
        then keep checking them in the background."""
        started = time.monotonic()
        self.pool = UpstreamPool(self.model.id, self.options)
        await asyncio.gather(*(self.pool.check(u) for u in self.pool.upstreams))
        self.pool.start()
        # Image parts are passed on as data URLs (router/upstream_wire.py); an upstream model without vision says so itself.
        info = {"token_ids": False, "images": True, "upstreams": list(self.options.upstreams)}
        # Admission's slots: each upstream's max_concurrency, summed; the model's own max_concurrency caps them.
        capacity = min(self.pool.capacity, self.model.max_concurrency or self.pool.capacity)
        self.ready = proto.Ready(capacity, time.monotonic() - started, info)
        return self.ready

    async def kill(self) -> None:
        self.dead.set()
        if self.pool is not None:
            await self.pool.close()

    async def call(
        self,
        method: str,
        payload: Any,
        deadline: float | None = None,
        on_settled: Callable[[], None] = lambda: None,
    ) -> AsyncIterator[Any]:
        """Run one call on an upstream; yield its events. Closing the iterator
        closes the upstream connection, which stops the upstream's work."""
        try:
            if not self.alive:
                raise CallFailed("upstream_unavailable", f"The model '{self.model.id}' is not loaded.")
            # The request_timeout caps each wait for the upstream (see _timeout)
            # rather than wrapping reads in wait_for: httpx's connection must
            # be read from the request's own task.
            async with aclosing(self._items(method, payload, deadline)) as items:
                async for item in items:
                    if deadline is not None and asyncio.get_running_loop().time() > deadline:
                        raise TimeoutError
                    yield item
        finally:
            on_settled()

    async def _items(self, method: str, payload: Any, deadline: float | None) -> AsyncGenerator[Any, None]:
        model = self.upstream_model
        if method == "chat":
            async for item in self._text("/chat/completions", wire.chat_body(model, payload), True, deadline):
                yield item
        elif method == "complete":
            async for item in self._text("/completions", wire.completion_body(model, payload), False, deadline):
                yield item
        elif method == "embed":
            yield await self._embed(payload, deadline)
        elif method == "generate":
            async with self._exchange("/images/generations", wire.image_body(model, payload), deadline) as (upstream, response):
                data = await self._read_json(upstream, response, deadline)
            for item in data.get("data") or []:
                yield GeneratedImage(base64.b64decode(item["b64_json"]), payload.width, payload.height, payload.seed or 0)
        elif method == "synthesize":
            async with (
                self._exchange("/audio/speech", wire.speech_body(model, payload), deadline) as (upstream, response),
                aclosing(self._guarded(upstream, response.aiter_bytes(), deadline)) as chunks,
            ):
                async for data in chunks:
                    yield AudioChunk(data, AUDIO_SAMPLE_RATE)
        elif method == "transcribe":
            path = "/audio/translations" if payload.task == "translate" else "/audio/transcriptions"
            duration = len(payload.samples) / 4 / TRANSCRIPTION_SAMPLE_RATE
            wav = await asyncio.to_thread(wire.pcm16_wav, payload.samples, TRANSCRIPTION_SAMPLE_RATE)  # MBs of samples
            upload = {"file": ("audio.wav", wav, "audio/wav")}
            fields = wire.transcription_fields(model, payload)
            async with self._exchange(path, None, deadline, files=upload, data=fields) as (upstream, response):
                data = await self._read_json(upstream, response, deadline)
            for event in wire.transcription_events(data, payload, duration):
                yield event
        elif method == "native":
            async for item in self._native(payload, deadline):
                yield item
        elif method == "count_tokens":
            raise CallFailed("invalid_request", "Counting tokens is not available for a model served by upstream servers.")
        else:
            raise CallFailed("invalid_request", f"{method!r} is not available for a model served by upstream servers.")

    async def _text(self, path: str, body: dict[str, Any], chat: bool, deadline: float | None) -> AsyncGenerator[Any, None]:
        from modelyard.adapters.base import PromptTokens

        translator = wire.StreamTranslator(chat, self.model.reasoning_tags)
        async with self._exchange(path, body, deadline) as (upstream, response):
            # The upstream has accepted the prompt: the front's stream may start.
            yield PromptTokens(0)
            async with aclosing(self._guarded(upstream, response.aiter_lines(), deadline)) as lines:
                async for line in lines:
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise CallFailed("upstream_error", f"The upstream {upstream.url} sent a chunk that is not JSON.") from None
                    for delta in translator.feed(chunk):
                        yield delta
        deltas, finished = translator.finish()
        for delta in deltas:
            yield delta
        yield finished

    async def _native(self, call: Any, deadline: float | None) -> AsyncGenerator[Any, None]:
        """A request forwarded as it is (router/upstream_passthrough.py): the
        JSON answer, or each event of its stream, with the front's model id."""
        from modelyard.router.upstream_passthrough import NativeEvent

        body = call.body
        if isinstance(body, dict) and "model" in body:
            body = {**body, "model": self.upstream_model}
        async with self._exchange(call.path, body, deadline, method=call.method, headers=call.headers, native=True) as (
            upstream,
            response,
        ):
            if not call.stream:
                yield self._front_model(await self._read_json(upstream, response, deadline))
                return
            event: str | None = None
            data: list[str] = []
            async with aclosing(self._guarded(upstream, response.aiter_lines(), deadline)) as lines:
                async for line in lines:
                    if line.startswith("event:"):
                        event = line[len("event:") :].strip()
                    elif line.startswith("data:"):
                        data.append(line[len("data:") :].removeprefix(" "))
                    elif not line and data:
                        yield NativeEvent(event, self._event_data(data))
                        event, data = None, []
            if data:  # a last event with no blank line after it
                yield NativeEvent(event, self._event_data(data))

    def _event_data(self, lines: list[str]) -> Any:
        """An SSE event's data lines: JSON with the front's model id, or the lines as they came (a [DONE])."""
        text = "\n".join(lines)
        try:
            return self._front_model(json.loads(text))
        except ValueError:
            return lines if len(lines) > 1 else text

    def _front_model(self, data: Any) -> Any:
        """`data` with the upstream's model name replaced by the front's id,
        where the APIs put it: the object itself, or the response or message
        a stream event carries."""
        if not isinstance(data, dict):
            return data
        for holder in (data, data.get("response"), data.get("message")):
            # Any name the upstream gives (a dated snapshot of its model too) is the client's model id here.
            if isinstance(holder, dict) and isinstance(holder.get("model"), str):
                holder["model"] = self.model.id
        return data

    async def _embed(self, request: Any, deadline: float | None) -> Embeddings:
        async with self._exchange("/embeddings", wire.embeddings_body(self.upstream_model, request), deadline) as (upstream, response):
            data = await self._read_json(upstream, response, deadline)
        rows = sorted(data.get("data") or [], key=lambda row: row.get("index", 0))
        if len(rows) != len(request.inputs):
            raise CallFailed("upstream_error", f"The upstream {upstream.url} returned {len(rows)} vectors for {len(request.inputs)} inputs.")
        total = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        return Embeddings(
            [wire.vector_bytes(row["embedding"]) for row in rows], wire.split_tokens(total, request.inputs), [None] * len(rows)
        )

    async def _read_json(self, upstream: Upstream, response: httpx.Response, deadline: float | None) -> dict[str, Any]:
        async with aclosing(self._guarded(upstream, response.aiter_bytes(), deadline)) as chunks:
            body = b"".join([chunk async for chunk in chunks])
        try:
            data = json.loads(body)
        except ValueError:
            raise CallFailed("upstream_error", f"The upstream {upstream.url} answered with a body that is not JSON.") from None
        if not isinstance(data, dict):
            raise CallFailed("upstream_error", f"The upstream {upstream.url} answered with JSON that is not an object.")
        return data

    async def _guarded(self, upstream: Upstream, chunks: AsyncIterator[Any], deadline: float | None) -> AsyncGenerator[Any, None]:
        """An upstream's body after its first byte: a failure ends the call with the error."""
        assert self.pool is not None
        try:
            async for chunk in chunks:
                yield chunk
        except httpx.TimeoutException:
            if past(deadline):
                raise TimeoutError from None
            raise CallFailed(
                "upstream_timeout", f"The upstream {upstream.url} sent nothing for {self.options.read_timeout:g}s (read_timeout)."
            ) from None
        except httpx.TransportError as exc:
            self.pool.mark_down(upstream, describe(exc))
            raise CallFailed("upstream_error", f"The upstream {upstream.url} failed during the request: {describe(exc)}") from None

    @asynccontextmanager
    async def _exchange(
        self,
        path: str,
        body: dict[str, Any] | None,
        deadline: float | None,
        method: str = "POST",
        *,
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        native: bool = False,
    ) -> AsyncIterator[tuple[Upstream, httpx.Response]]:
        """Send `body` to the least busy healthy upstream; hold its slot and
        its open, successful response. A connection error or 5xx before the
        first byte takes that upstream out, and the request is tried once
        more on another."""
        pool = self.pool
        assert pool is not None
        failed: Upstream | None = None
        failure: CallFailed | None = None
        for _ in range(2):
            async with AsyncExitStack() as stack:
                try:
                    upstream = await stack.enter_async_context(pool.lease(exclude=failed))
                except CallFailed:
                    if failure is not None:
                        raise failure from None
                    raise
                try:
                    timeout = self._timeout(deadline)
                    request = pool.client.build_request(
                        method, upstream.url + path, json=body, files=files, data=data, headers=headers, timeout=timeout
                    )
                    response = await pool.client.send(request, stream=True)
                except httpx.ConnectTimeout as exc:
                    if past(deadline):
                        raise TimeoutError from None
                    failed, failure = upstream, self._unreachable(upstream, exc)
                    continue
                except httpx.TimeoutException:
                    if past(deadline):
                        raise TimeoutError from None
                    raise CallFailed(
                        "upstream_timeout",
                        f"The upstream {upstream.url} did not answer within {self.options.read_timeout:g}s (read_timeout).",
                    ) from None
                except httpx.TransportError as exc:
                    failed, failure = upstream, self._unreachable(upstream, exc)
                    continue
                stack.push_async_callback(response.aclose)
                if response.status_code >= 400:
                    try:
                        text = await response.aread()
                    except httpx.HTTPError:
                        text = b""
                    message = wire.error_message(text, response.status_code)
                    error = refused(upstream, response.status_code, message)
                    if native and response.status_code == 404:  # a forwarded id the upstream has not (any more)
                        error = CallFailed("not_found", message)
                    if response.status_code >= 500:
                        pool.mark_down(upstream, f"answered {response.status_code}")
                        failed, failure = upstream, error
                        continue
                    raise error
                yield upstream, response
                return
        assert failure is not None
        raise failure

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        """The client's timeouts, each capped by what is left of the request_timeout."""
        read, connect = self.options.read_timeout, self.options.connect_timeout
        if deadline is not None:
            left = max(0.001, deadline - asyncio.get_running_loop().time())
            read, connect = min(read, left), min(connect, left)
        return httpx.Timeout(read, connect=connect)

    def _unreachable(self, upstream: Upstream, exc: BaseException) -> CallFailed:
        assert self.pool is not None
        self.pool.mark_down(upstream, describe(exc))
        return CallFailed("upstream_unavailable", f"The upstream {upstream.url} cannot be reached: {describe(exc)}")


def past(deadline: float | None) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() >= deadline - 0.01


def refused(upstream: Upstream, status: int, message: str) -> CallFailed:
    """An upstream's error answer as the front's: its 400s are the client's
    (the request's own fault), 429 stays 429, the rest are 502s that carry
    the upstream's status and message (a wrong key is the server's config)."""
    if status in (400, 404, 413, 422):
        return CallFailed("invalid_request", f"The upstream refused the request: {message}")
    if status == 429:
        return CallFailed("upstream_busy", f"The upstream {upstream.url} is busy: {message}")
    return CallFailed("upstream_error", f"The upstream {upstream.url} answered {status}: {message}")
