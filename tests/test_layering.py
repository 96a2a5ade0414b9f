"""adapters/ and schemas/ stand below the router: importing them must pull
in neither the web stack nor the router, and must not load heavy model
libraries (those are imported inside a worker, when a model loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MODULES = [
    "adapters.base",
    "adapters.catalog",
    "adapters.sources",
    "adapters.worker",
    "adapters.llama_cpp",
    "adapters.ctransformers",
    "adapters.textstream",
    "adapters.diffusers_image",
    "adapters.tiny_sd",
    "adapters.audio",
    "adapters.piper_tts",
    "adapters.coqui_tts",
    "adapters.coqui_torchaudio",
    "schemas.config",
    "schemas.worker",
    "schemas.openai",
    "schemas.images",
    "schemas.audio",
    "schemas.responses",
    "schemas.anthropic",
]
WEB_STACK = ("fastapi", "starlette", "uvicorn", "router")
HEAVY = (
    "torch", "llama_cpp", "ctransformers", "diffusers", "transformers", "PIL",
    "onnxruntime", "piper", "TTS", "torchaudio", "av", "soundfile",
)  # fmt: skip

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"import {module} failed:\n{result.stderr}"
    return set(json.loads(result.stdout))


def top_level(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


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
    assert "fastapi" in imported_by("router.server")
