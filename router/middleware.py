"""Pure ASGI middleware: CORS, request context, body limit, API keys.

Each reads its settings from the config generation in force *per request*
(through `get_generation`), so a reload applies from the next request. Order,
outermost first: CORS (so that error answers carry CORS headers too) →
request context (request id, access log, last-resort 500) → API key (from
the headers alone, before any of the body is read) → body limit → the app.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from modelyard.router.errors import APIError, anthropic_request, internal_error
from modelyard.router.keylimits import KeyLimits
from modelyard.router.metrics import Metrics
from modelyard.router.registry import Generation
from modelyard.schemas.config import ApiKey, CorsConfig
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("modelyard.access")
GetGeneration = Callable[[], Generation | None]
REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# With keys configured, these need one. /health, /ready, /metrics, /docs and the UI do not.
PROTECTED_PREFIXES = ("/v1/", "/admin/")
# These answer without a key, but show their details only to some keys.
DETAIL_PATHS = ("/health", "/ready", "/metrics")


def scope_state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})


async def send_error(
    scope: Scope, send: Send, error: APIError, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    state = scope.get("state", {})
    body = json.dumps(error.body(scope.get("path", ""), state.get("request_id"), anthropic_request(scope))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in (error.headers or {}).items():
        headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class DynamicCORSMiddleware:
    """Starlette's CORSMiddleware, rebuilt whenever the config's CORS section changes."""

    def __init__(self, app: ASGIApp, get_generation: GetGeneration) -> None:
        self.app = app
        self.get_generation = get_generation
        self._cache: tuple[CorsConfig, ASGIApp] | None = None

    def _for(self, cors: CorsConfig) -> ASGIApp:
        if self._cache is None or self._cache[0] != cors:
            wrapped: ASGIApp = self.app
            if cors.allow_origins:
                wrapped = CORSMiddleware(
                    self.app,
                    allow_origins=cors.allow_origins,
                    allow_methods=cors.allow_methods,
                    allow_headers=cors.allow_headers,
                    allow_credentials=cors.allow_credentials,
                    expose_headers=["x-request-id"],
                    max_age=cors.max_age,
                )
            self._cache = (cors, wrapped)
        return self._cache[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = self.get_generation()
        if scope["type"] != "http" or generation is None:
            await self.app(scope, receive, send)
            return
        await self._for(generation.loaded.config.server.cors)(scope, receive, send)


class RequestContextMiddleware:
    """Request id (accepted from x-request-id or made), access log line and
    request metrics, and a last-resort 500 that never shows the exception."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        request_id = given if given and REQUEST_ID_OK.match(given) else f"req_{uuid.uuid4().hex}"
        state = scope_state(scope)
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 0
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)", scope["method"], scope["path"], request_id)
            if not response_started:
                await send_error(scope, send_with_id, internal_error(request_id))
            else:
                status = status or 500
        finally:
            key: ApiKey | None = state.get("api_key")
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if self.metrics is not None and template not in ("/metrics",):
                model = state.get("model") or ""
                self.metrics.requests.labels(template, model, str(status)).inc()
                self.metrics.latency.labels(template, model).observe(time.perf_counter() - started)
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "model": state.get("model"),
                    "key_name": key.name if key else None,
                },
            )


# Uploads read under limits of their own (router/file_upload.py): files stream
# to disk under [storage] max_file_bytes, audio to transcribe under [limits] max_audio_bytes.
OWN_BODY_LIMIT = {("POST", "/v1/files"), ("POST", "/v1/audio/transcriptions"), ("POST", "/v1/audio/translations")}


class BodyLimitMiddleware:
    """413 for bodies over `server.body_limit`: at once when Content-Length says
    so; a body without one (chunked) is read here, up to the limit, and then
    replayed to the app. (Raising from `receive` instead would not work: the
    framework turns any error while reading the body into a 400.) The HTTP
    server itself holds a body to its declared Content-Length. Uploads
    (OWN_BODY_LIMIT) pass through: their routes hold them to `[storage]
    max_file_bytes` or `[limits] max_audio_bytes` as they arrive."""

    def __init__(self, app: ASGIApp, get_generation: GetGeneration) -> None:
        self.app = app
        self.get_generation = get_generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = self.get_generation()
        if scope["type"] != "http" or generation is None or (scope["method"], scope["path"]) in OWN_BODY_LIMIT:
            await self.app(scope, receive, send)
            return
        limit = int(generation.loaded.config.server.body_limit)
        too_large = APIError(
            413,
            f"The request body is larger than this server accepts ({limit} bytes).",
            code="request_too_large",
        )
        declared = header(scope, b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                await send_error(scope, send, too_large)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await send_error(scope, send, too_large, [(b"connection", b"close")])
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def presented_key(scope: Scope) -> str | None:
    auth = header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return header(scope, b"x-api-key")


def match_key(keys: list[ApiKey], presented: str) -> ApiKey | None:
    """Constant-time comparison against every key (no early exit on a match)."""
    found = None
    encoded = presented.encode()
    for key in keys:
        if hmac.compare_digest(key.key.encode(), encoded):
            found = key
    return found


def has_body(scope: Scope) -> bool:
    length = header(scope, b"content-length")
    return header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() not in ("", "0"))


class ApiKeyMiddleware:
    """With keys configured, every /v1 and /admin route needs one. Runs
    before the body limit: the key is checked from the headers alone, and a
    refused request is answered without reading its body (and its connection
    closed, so the body is never buffered either). The matched key is put in
    the request state (which models it may use is checked by the routes), and
    its `rpm` and `max_parallel` limits are applied here.

    /health, /ready and /metrics take a key too, to show their details, but
    answer without one (see router/health.py)."""

    def __init__(self, app: ASGIApp, get_generation: GetGeneration) -> None:
        self.app = app
        self.get_generation = get_generation
        self.limits = KeyLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = self.get_generation()
        if scope["type"] != "http" or generation is None or not generation.keys:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        protected = path.startswith(PROTECTED_PREFIXES)
        presented = presented_key(scope)
        if not protected and (path not in DETAIL_PATHS or not presented):
            await self.app(scope, receive, send)
            return
        # Answering before the body is read: closing the connection is what
        # stops the client's upload (and the server's buffering of it).
        close = [(b"connection", b"close")] if has_body(scope) else []
        challenge = [(b"www-authenticate", b"Bearer"), *close]
        if not presented:
            await send_error(
                scope,
                send,
                APIError(
                    401,
                    "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
                    code="missing_api_key",
                ),
                challenge,
            )
            return
        key = match_key(generation.keys, presented)
        if key is None:
            await send_error(scope, send, APIError(401, "Incorrect API key provided.", code="invalid_api_key"), challenge)
            return
        scope_state(scope)["api_key"] = key
        if not protected:
            await self.app(scope, receive, send)
            return
        refusal = self.limits.acquire(key)
        if refusal is not None:
            error = APIError(429, refusal.message, code="rate_limit_exceeded", headers={"Retry-After": str(refusal.retry_after)})
            await send_error(scope, send, error, close)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.release(key)
