"""The small interfaces every backend implements, one per modality, and the
typed errors adapters raise.

Adapters run inside a worker process (see `adapters/worker.py`); their
methods are plain blocking calls. Streaming methods are generators that the
worker pulls one item at a time, checking for cancellation between items.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class AdapterError(Exception):
    """Base of errors an adapter raises on purpose. `kind` picks the HTTP status."""

    kind: ClassVar[str] = "backend_error"


class InvalidRequestError(AdapterError):
    """The request cannot be served by this model as asked (answered with 400)."""

    kind = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelLoadError(AdapterError):
    """The model could not be loaded: missing file, bad format, missing extra."""

    kind = "load_failed"


class BackendError(AdapterError):
    """The backend failed while serving a request."""

    kind = "backend_error"


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ChatRequest:
    """A chat request in backend-neutral terms (already validated by the router)."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class TextDelta:
    text: str


@dataclass
class Finished:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


ChatEvent = TextDelta | Finished


@dataclass
class EmbedRequest:
    """Texts, or token arrays where the backend can take tokens."""

    inputs: list[str] | list[list[int]]


@dataclass
class Embeddings:
    vectors: list[list[float]]
    token_counts: list[int]  # per input, in input order


class Adapter(ABC):
    """What every adapter has: its options model, its concurrency and close()."""

    #: The pydantic model that validates `[models.options]` for this backend.
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: How many requests the loaded model can serve at once.
    max_concurrency: ClassVar[int] = 1

    @abstractmethod
    def __init__(self, path: Path, options: BaseModel) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model. The worker process exits afterwards anyway."""


class ChatAdapter(Adapter):
    @abstractmethod
    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        """Yield text deltas, then exactly one Finished. Stop early when `cancelled` is set."""


class EmbeddingsAdapter(Adapter):
    @abstractmethod
    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        """One vector per input, in input order."""
