"""What importing a module pulls in, for the layering tests: one probe
interpreter imports pydantic (which every module of the package needs, and
which is neither web stack nor a heavy model library) and
modelyard.adapters.base (which every adapter imports, and which is itself
probed), then forks a child per module, which imports its module into a
fresh copy of that state and reports all of sys.modules, including what the
parent had: nothing the parent imported can hide. One interpreter start and
one import of those, instead of one of each per module."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, json, os, sys
import pydantic
import modelyard.adapters.base
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
def probe(modules: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
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


def imported_by(module: str, probed: tuple[str, ...]) -> set[str]:
    """Every module in sys.modules after importing `module`, one of `probed` (all probed at once, once)."""
    report = probe(probed)[module]
    assert "error" not in report, f"import {module} failed: {report['error']}"
    return set(report["modules"])
