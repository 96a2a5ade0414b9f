"""adapters/ and schemas/ stand below the router: importing them must pull
in neither the web stack nor the router, and must not load heavy model
libraries (those are imported inside a worker, when a model loads)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

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
    "modelyard.schemas.config",
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
    "onnxruntime", "piper", "TTS", "torchaudio", "av", "soundfile",
)  # fmt: skip

# One interpreter imports pydantic (which every module below needs, and which
# is neither web stack nor heavy), then forks a child per module: each child
# imports its module into a fresh copy of that state and reports everything in
# sys.modules, including what the parent had. That is one interpreter start and
# one pydantic import instead of one per module.
PROBE = """
import importlib, json, os, sys
import pydantic
found = {}
for module in sys.argv[1:]:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            report = {"modules": sorted(sys.modules)}
        except BaseException as exc:
            report = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write, "w") as out:
            json.dump(report, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as into:
        found[module] = json.load(into)
    os.waitpid(child, 0)
print(json.dumps(found))
"""


@functools.cache
def probe_all() -> dict[str, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *MODULES, "modelyard.router.server"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"the import probe failed:\n{result.stderr}"
    found: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return found


def imported_by(module: str) -> set[str]:
    report = probe_all()[module]
    assert "error" not in report, f"import {module} failed: {report['error']}"
    return set(report["modules"])


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
