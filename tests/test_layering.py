"""adapters/ and schemas/ stand below the router: importing them must pull
in neither the web stack nor the router, and must not load heavy model
libraries (those are imported inside a worker, when a model loads)."""

from __future__ import annotations

import pytest

from tests import import_probe

MODULES = [
    "modelyard.adapters.base",
    "modelyard.adapters.catalog",
    "modelyard.adapters.sources",
    "modelyard.adapters.worker",
    "modelyard.adapters.llama_cpp",
    "modelyard.adapters.llama_options",
    "modelyard.adapters.llama_grammar",
    "modelyard.adapters.llama_embeddings",
    "modelyard.adapters.llama_sampling",
    "modelyard.adapters.ctransformers",
    "modelyard.adapters.textstream",
    "modelyard.adapters.diffusers_image",
    "modelyard.adapters.tiny_sd",
    "modelyard.adapters.audio",
    "modelyard.adapters.piper_tts",
    "modelyard.adapters.coqui_tts",
    "modelyard.adapters.coqui_torchaudio",
    "modelyard.adapters.faster_whisper_stt",
    "modelyard.schemas.config",
    "modelyard.schemas.upstream",
    "modelyard.schemas.worker",
    "modelyard.schemas.openai",
    "modelyard.schemas.images",
    "modelyard.schemas.audio",
    "modelyard.schemas.responses",
    "modelyard.schemas.anthropic",
]
WEB_STACK = ("fastapi", "starlette", "uvicorn", "modelyard.router")
HEAVY = (
    "torch", "llama_cpp", "ctransformers", "diffusers", "transformers", "PIL",
    "onnxruntime", "piper", "TTS", "torchaudio", "av", "soundfile", "faster_whisper", "ctranslate2", "numpy",
)  # fmt: skip

PROBED = (*MODULES, "modelyard.router.server")


def imported_by(module: str) -> set[str]:
    return import_probe.imported_by(module, PROBED)


def top_level(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules that are, or are inside, one of `names`."""
    return sorted(m for m in modules if any(m == name or m.startswith(name + ".") for name in names))


@pytest.mark.parametrize("module", MODULES)
def test_module_stays_below_the_router(module: str) -> None:
    modules = imported_by(module)
    assert module in modules
    web = top_level(modules, WEB_STACK)
    assert not web, f"importing {module} pulls in {web}"
    heavy = top_level(modules, HEAVY)
    assert not heavy, f"importing {module} loads {heavy}; import them lazily, when a model loads"


def test_probe_sees_imports() -> None:
    """The probe itself works: importing the router does show up."""
    modules = imported_by("modelyard.router.server")
    assert "fastapi" in modules
    assert top_level(modules, WEB_STACK)
