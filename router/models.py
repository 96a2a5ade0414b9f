"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Request
from modelyard.router.deps import get_yard, request_key
from modelyard.router.errors import model_not_found
from modelyard.router.registry import ModelEntry
from modelyard.schemas import openai as oa

router = APIRouter()


def capabilities(entry: ModelEntry) -> list[str]:
    """The model's modality, and "vision" for a chat model whose last load
    said it takes images (before its first load: what its options declare)."""
    found = [entry.model.modality]
    images = entry.known_images if entry.known_images is not None else entry.declares_images()
    if entry.model.modality == "chat" and images:
        found.append("vision")
    return found


def card(entry: ModelEntry) -> oa.ModelCard:
    return oa.ModelCard(
        capabilities=capabilities(entry),
        id=entry.id,
        created=entry.created,
        modality=entry.model.modality,
        backend=entry.model.backend,
        status=entry.status,
        aliases=entry.model.aliases,
        error=entry.error,
    )


@router.get("/v1/models", response_model=oa.ModelList)
async def list_models(request: Request) -> oa.ModelList:
    key = request_key(request)
    entries = get_yard(request).generation.entries.values()
    return oa.ModelList(data=[card(e) for e in entries if key is None or key.allows(e.model.names())])


@router.get("/v1/models/{model_id:path}", response_model=oa.ModelCard)
async def get_model(model_id: str, request: Request) -> oa.ModelCard:
    key = request_key(request)
    entry = get_yard(request).generation.lookup(model_id)
    # A model the key may not use is reported as absent, as in the list.
    if entry is None or (key is not None and not key.allows(entry.model.names())):
        raise model_not_found(model_id)
    return card(entry)
