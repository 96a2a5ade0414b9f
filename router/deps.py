"""What route handlers share: the server state object and model resolution
with the per-key access check."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.router.coalescer import Coalescer
from modelyard.router.errors import APIError, model_not_found
from modelyard.router.metrics import Metrics
from modelyard.router.registry import Generation, ModelEntry, Registry
from modelyard.schemas.config import ApiKey
from starlette.requests import Request

if TYPE_CHECKING:
    from modelyard.router.agent_runtime import AgentRuntime
    from modelyard.router.file_store import FileStore
    from modelyard.router.reload import Reloader
    from modelyard.router.response_service import ResponsesService
    from modelyard.router.skill_store import SkillStore


@dataclass
class Yard:
    """All server state, reached through `app.state.yard`: the registry, and
    what each API surface keeps between requests."""

    registry: Registry
    metrics: Metrics
    reloader: Reloader | None = None
    ui: bool = True
    responses: ResponsesService | None = None  # the Responses API's store and background runs
    skills: SkillStore | None = None  # uploaded skills (/v1/skills)
    files: FileStore | None = None  # the Files API's store (router/file_store.py): get(), read()
    agent: AgentRuntime | None = None  # the agentic runtime's sandbox, search and sessions (router/agent_runtime.py)
    coalescers: dict[str, Coalescer] = field(default_factory=dict)  # embeddings batchers, by model id
    # Response ids forwarded to upstreams that serve Responses → (model id, owner) (router/upstream_passthrough.py).
    forwarded_responses: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict)

    def coalescer(self, entry: ModelEntry) -> Coalescer:
        """The embeddings batcher of `entry`. A reload that replaced the
        model's entry gets a fresh one; the old one finishes its batches."""
        coalescer = self.coalescers.get(entry.id)
        if coalescer is None or coalescer.entry is not entry:
            coalescer = self.coalescers[entry.id] = Coalescer(entry)
        return coalescer

    def surface_stats(self, entry: ModelEntry) -> dict[str, Any]:
        """What the surfaces keep about `entry`, for /health."""
        coalescer = self.coalescers.get(entry.id)
        if coalescer is None or coalescer.entry is not entry:
            return {}
        return {"coalescer": coalescer.stats()}

    @property
    def generation(self) -> Generation:
        current = self.registry.current
        if current is None:
            raise APIError(503, "The server is starting; try again in a moment.")
        return current


def get_yard(request: Request) -> Yard:
    yard: Yard = request.app.state.yard
    return yard


def request_key(request: Request) -> ApiKey | None:
    key: ApiKey | None = request.scope.get("state", {}).get("api_key")
    return key


def owner_of(request: Request) -> str:
    """Who owns what a request stores (responses, skills, files): its API key's name, "" with keys off."""
    key = request_key(request)
    return key.name if key is not None else ""


def request_id(request: Request) -> str | None:
    value: Any = request.scope.get("state", {}).get("request_id")
    return value


def resolve_model(request: Request, name: str | None, modality: str, endpoint: str) -> ModelEntry:
    """The model a request names, checked against the caller's key. A model
    the key may not use is answered exactly as one that does not exist (and
    before its modality is checked), so a key cannot find out its name."""
    generation = get_yard(request).generation
    key = request_key(request)
    if key is not None and name:
        named = generation.lookup(name)
        if named is not None and not key.allows(named.model.names()):
            raise model_not_found(name)
    entry = generation.resolve(name, modality, endpoint)
    if key is not None and not key.allows(entry.model.names()):
        # No name (or "default"): the default model is one this key may not use.
        raise model_not_found(name or "default")
    request.scope.setdefault("state", {})["model"] = entry.id
    return entry
