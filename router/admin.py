"""Admin routes: load and unload models, reload the config.

With API keys configured they need a key with `admin = true` (403
otherwise); with no keys the whole API is open, these routes included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from modelyard.router.deps import get_yard, request_key
from modelyard.router.errors import APIError, model_not_found
from modelyard.router.models import card
from modelyard.router.registry import ModelEntry
from modelyard.router.workers import LoadFailed

router = APIRouter()


def require_admin(request: Request) -> None:
    if not get_yard(request).generation.keys:
        return
    key = request_key(request)
    if key is None or not key.admin:
        raise APIError(403, "This route needs an API key with admin = true.", code="admin_required")


def entry_for(request: Request, model_id: str) -> ModelEntry:
    entry = get_yard(request).generation.names.get(model_id)
    key = request_key(request)
    # An admin key limited to some models does not see the others either.
    if entry is None or (key is not None and not key.allows(entry.model.names())):
        raise model_not_found(model_id)
    return entry


@router.post("/v1/models/{model_id:path}/load")
async def load_model(model_id: str, request: Request) -> dict[str, Any]:
    require_admin(request)
    entry = entry_for(request, model_id)
    try:
        await entry.ensure_loaded()
    except LoadFailed as exc:
        raise APIError(500, f"The model '{entry.id}' failed to load: {exc}", code="model_load_failed") from None
    return card(entry).model_dump()


@router.post("/v1/models/{model_id:path}/unload")
async def unload_model(model_id: str, request: Request) -> dict[str, Any]:
    require_admin(request)
    entry = entry_for(request, model_id)
    if entry.inflight:
        raise APIError(
            409, f"The model '{entry.id}' has {entry.inflight} request(s) in progress; try again when it is idle.", code="model_busy"
        )
    await entry.unload("admin request")
    return card(entry).model_dump()


@router.post("/admin/reload")
async def reload_config(request: Request) -> dict[str, Any]:
    require_admin(request)
    yard = get_yard(request)
    if yard.reloader is None:
        raise APIError(400, "This server was started without a config file (-m), so there is nothing to reload.")
    applied = await yard.reloader.reload("admin request")
    current = yard.generation
    return {"reloaded": applied, "generation": current.number, "last_reload": yard.registry.last_reload}
