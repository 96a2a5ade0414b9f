"""The message protocol between the router and a model's worker process.

Frames on a socket: a 4-byte big-endian length, then a pickle of one of the
dataclasses below. Both ends are modelyard's own processes, so pickle is
safe here and carries bytes (audio, images) without base64.

router → worker: Load (once, first), Call, Cancel, Ping, Shutdown
worker → router: Ready | LoadFailed (once, after Load), then per call any
                 number of Item, ending with exactly one Done or Failed
                 (also for a cancelled call: that is how the worker says it
                 stopped); a Pong for each Ping, from the reader thread.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

HEADER = struct.Struct("!I")

# The adapter methods a Call may name, per modality (adapters/base.py's
# interfaces). Anything else, `close` included, the worker refuses.
CALLS: dict[str, frozenset[str]] = {
    "chat": frozenset({"chat", "complete", "count_tokens"}),
    "embeddings": frozenset({"embed"}),
    "image": frozenset({"generate"}),
    "speech": frozenset({"synthesize"}),
    "transcription": frozenset({"transcribe"}),
}


def allowed_call(modality: str, method: str) -> bool:
    return method in CALLS.get(modality, frozenset())


@dataclass
class Load:
    model_id: str
    backend: str
    modality: str
    source: str  # as written in the config
    path: str | None  # resolved local path; None for hub sources
    options: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int | None = None  # the config's cap; the adapter's own limit still applies
    memory_limit: int | str | None = None  # bytes, "auto" (the worker sizes it) or None (no limit)


@dataclass
class Ready:
    max_concurrency: int
    load_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    memory_limit: int | None = None  # the limit in force, in bytes
    memory_limit_kind: str = ""  # "address space" or "data"


@dataclass
class LoadFailed:
    kind: str
    message: str


@dataclass
class Call:
    call_id: int
    method: str  # the adapter method, e.g. "chat"
    payload: Any


@dataclass
class Item:
    call_id: int
    payload: Any


@dataclass
class Done:
    call_id: int


@dataclass
class Failed:
    call_id: int
    kind: str  # AdapterError.kind, or "internal"
    message: str
    param: str | None = None


@dataclass
class Cancel:
    call_id: int


@dataclass
class Ping:
    seq: int


@dataclass
class Pong:
    seq: int
    # The adapter's engine state at the time (adapters/base.py Adapter.stats),
    # e.g. llama-cpp's slots in use and KV cells; {} for adapters without one.
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class Shutdown:
    pass


def encode(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Any:
    return pickle.loads(body)
