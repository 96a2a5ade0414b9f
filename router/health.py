"""GET /health (liveness, config generation, last reload), GET /ready (config
loaded and every eager model ready) and GET /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from router import supervision
from router.deps import get_yard

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    yard = get_yard(request)
    current = yard.registry.current
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
                "error": e.error,
                **supervision.stats(e),
                **{name: state.stats() for name, state in e.surface_state.items() if hasattr(state, "stats")},
            }
            for e in (current.entries.values() if current else [])
        },
    }


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    current = get_yard(request).registry.current
    waiting = (
        ["config"]
        if current is None
        else [e.id for e in current.entries.values() if e.model.load == "eager" and e.status != "loaded"]
    )
    return JSONResponse({"ready": not waiting, "waiting_for": waiting}, status_code=503 if waiting else 200)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body, content_type = get_yard(request).metrics.render()
    return Response(body, media_type=content_type)
