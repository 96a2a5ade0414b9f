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

ENTRY_POINT_GROUP = "modelyard.backends"


@dataclass(frozen=True)
class Backend:
    name: str
    targets: dict[str, str]  # modality → "module:Class"
    extra: str | None  # the pip extra that installs its library
    requires: tuple[str, ...] = ()  # top-level modules the backend imports

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.targets)

    def load_class(self, modality: str) -> type[Adapter]:
        module_name, _, class_name = self.targets[modality].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f"{self.targets[modality]} is not an adapters.base.Adapter subclass")
        return cls

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
