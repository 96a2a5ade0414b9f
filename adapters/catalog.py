"""Which backends exist, what each serves and which extra installs it.

Built-in backends and third-party ones (entry-point group
`modelyard.backends`, each value "module:Class") are listed the same way.
Importing an adapter module is cheap: heavy libraries are imported lazily,
when a model is loaded inside its worker.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from modelyard.adapters.base import Adapter
from pydantic import BaseModel

ENTRY_POINT_GROUP = "modelyard.backends"


@dataclass(frozen=True)
class Backend:
    name: str
    targets: dict[str, str]  # modality → "module:Class"
    extra: str | None  # the pip extra that installs its library
    requires: tuple[str, ...] = ()  # top-level modules the backend imports
    # Served by the router itself, with no worker process: each target is then
    # the backend's options model ("module:Class"), not an adapter.
    in_router: bool = False

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.targets)

    def load_class(self, modality: str) -> type[Adapter]:
        if self.in_router:
            raise TypeError(f"backend {self.name!r} runs in the router, not in a worker")
        module_name, _, class_name = self.targets[modality].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f"{self.targets[modality]} is not an adapters.base.Adapter subclass")
        return cls

    def options_model(self, modality: str) -> type[BaseModel]:
        """The pydantic model that validates this backend's `[models.options]`."""
        if self.in_router:
            module_name, _, class_name = self.targets[modality].partition(":")
            model: type[BaseModel] = getattr(importlib.import_module(module_name), class_name)
            return model
        return self.load_class(modality).Options

    def install_hint(self) -> str:
        if self.extra is None:
            return ""
        return f"install it with: pip install 'modelyard[{self.extra}]'"


BUILTIN_BACKENDS: tuple[Backend, ...] = (
    Backend(
        "llama-cpp",
        {"chat": "modelyard.adapters.llama_cpp:LlamaCppChat", "embeddings": "modelyard.adapters.llama_embeddings:LlamaCppEmbeddings"},
        "llama",
        ("llama_cpp",),
    ),
    Backend(
        "sentence-transformers",
        {"embeddings": "modelyard.adapters.sentence_transformers:SentenceTransformersEmbeddings"},
        "embeddings",
        ("sentence_transformers", "torch"),
    ),
    Backend(
        "ctransformers",
        {"chat": "modelyard.adapters.ctransformers:CTransformersChat"},
        "ctransformers",
        ("ctransformers", "jinja2"),
    ),
    Backend("diffusers", {"image": "modelyard.adapters.diffusers_image:DiffusersImage"}, "image", ("diffusers", "torch")),
    Backend("piper", {"speech": "modelyard.adapters.piper_tts:PiperSpeech"}, "speech", ("piper", "onnxruntime", "av", "numpy")),
    # Not "TTS": it is imported by the adapter, after the torchaudio check (adapters/coqui_torchaudio.py).
    Backend("coqui-tts", {"speech": "modelyard.adapters.coqui_tts:CoquiSpeech"}, "coqui", ("torch", "coqpit", "av", "numpy")),
    Backend(
        "faster-whisper",
        {"transcription": "modelyard.adapters.faster_whisper_stt:FasterWhisperTranscription"},
        "transcription",
        ("faster_whisper", "ctranslate2", "numpy"),
    ),
    # Upstream OpenAI-compatible servers, forwarded to by router/upstream_handle.py.
    Backend(
        "openai",
        {m: "modelyard.schemas.upstream:UpstreamOptions" for m in ("chat", "embeddings", "image", "speech", "transcription")},
        None,
        in_router=True,
    ),
)


@cache
def backends() -> dict[str, Backend]:
    found = {b.name: b for b in BUILTIN_BACKENDS}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # A third-party entry point names a dict {modality: "module:Class"}.
        try:
            targets = ep.load()
            if not isinstance(targets, dict):
                raise TypeError("expected a dict of modality to 'module:Class'")
        except Exception:  # a broken plugin must not break the server
            continue
        found.setdefault(ep.name, Backend(ep.name, dict(targets), None))
    return found
