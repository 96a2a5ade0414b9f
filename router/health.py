"""GET /health: liveness, the config generation and the last reload's result."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

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
                "inflight": e.inflight,
                "error": e.error,
                **{name: state.stats() for name, state in e.surface_state.items() if hasattr(state, "stats")},
            }
            for e in (current.entries.values() if current else [])
        },
    }
