"""GET /health (liveness, config generation, last reload), GET /ready (config
loaded and every eager model ready) and GET /metrics (Prometheus).

With API keys configured, the details (model names, pids, memory, the config
path, reload errors, metrics labelled by model) are shown only to a key with
`admin` or `metrics = true`, or to anyone with `[server] public_metrics`.
Anonymous /health then answers liveness only, `{"status": "ok"}` (even when a
reload failed: that is a detail), and /ready only its status code and
`{"ready": ...}`. /metrics without such a key is a 401 (no key) or 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.router import supervision
from modelyard.router.deps import get_yard, request_key
from modelyard.router.errors import APIError

router = APIRouter()


def may_see_details(request: Request) -> bool:
    current = get_yard(request).registry.current
    if current is None or not current.keys or current.loaded.config.server.public_metrics:
        return True
    key = request_key(request)
    return key is not None and (key.admin or key.metrics)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    yard = get_yard(request)
    current = yard.registry.current
    if not may_see_details(request):
        return {"status": "ok"}
    return {
        "status": "ok" if yard.registry.last_reload["ok"] else "degraded",
        "config": {
            "file": current.loaded.file if current else None,
            "generation": current.number if current else 0,
            "last_reload": yard.registry.last_reload,
        },
        "models": {
            e.id: {
                "status": e.status,
                "load": e.model.load,
                "pid": e.handle.pid if e.handle else None,
                "pids": [h.pid for h in e.handles if h.alive],
                "inflight": e.inflight,
                "queued": e.queued,
                "memory_bytes": e.memory(),
                "engine": e.engine_stats() or None,
                "error": e.error,
                **({"upstreams": ups} if (ups := e.upstreams()) is not None else {}),
                **({"deployment": dep} if (dep := e.deployment()) is not None else {}),
                **supervision.stats(e),
                **yard.surface_stats(e),
            }
            for e in (current.entries.values() if current else [])
        },
        "agent": agent_health(yard, current),
    }


def agent_health(yard: Any, current: Any) -> dict[str, Any]:
    """The agentic runtime: the tools requests may use, how code is isolated, the search provider, live sessions."""
    runtime = yard.agent
    config = current.loaded.config.agent if current else None
    return {
        "tools": list(config.tools) if config else [],
        "isolation": runtime.isolation if runtime is not None else None,
        "seccomp": bool(runtime is not None and runtime.sandbox is not None and runtime.sandbox.seccomp),
        "search": runtime.search.name if runtime is not None and runtime.search is not None else None,
        "sessions": runtime.sessions.count() if runtime is not None else 0,
    }


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    current = get_yard(request).registry.current
    waiting = (
        ["config"]
        if current is None
        else [e.id for e in current.entries.values() if e.model.load == "eager" and e.status != "loaded"]
    )
    body: dict[str, Any] = {"ready": not waiting}
    if may_see_details(request):
        body["waiting_for"] = waiting
    return JSONResponse(body, status_code=503 if waiting else 200)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if not may_see_details(request):
        if request_key(request) is None:
            raise APIError(
                401,
                "/metrics needs an API key with metrics = true or admin = true (or [server] public_metrics = true).",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise APIError(403, "/metrics needs an API key with metrics = true or admin = true.", code="metrics_required")
    body, content_type = get_yard(request).metrics.render()
    return Response(body, media_type=content_type)
