"""The Codex CLI (tests/clients, `make clients`) pointed at a modelyard server,
and the recorder of tests/data/codex/.

`codex_home` writes the throwaway `$CODEX_HOME/config.toml` that
docs/coding-agents.md documents; `run_codex` runs `codex exec` with it.
`LEAN` are the switches that keep Codex's prompt small for a 135M model on
one core (~1,500 tokens instead of ~6,000): no sub-agent and goal tools, no
web search, no bundled skills.

Recording (rewrites tests/data/codex/):

    python -m tests.codex_cli record                      # against a scripted server it starts
    python -m tests.codex_cli record --real URL          # also the lean flows, against a real server at URL

The scripted server answers what the prompt tells it (`script: [...]`), so
the default-prompt recordings include a tool round trip without a model
that would choose to call one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.recording_proxy import Exchange, RecordingProxy

REPO = Path(__file__).resolve().parent.parent
CODEX = REPO / "tests" / "clients" / "node_modules" / ".bin" / "codex"
DATA = REPO / "tests" / "data" / "codex"
MODEL = "smollm2"
API_KEY_ENV = "MODELYARD_API_KEY"
LEAN = ["--disable", "multi_agent", "--disable", "goals", "-c", 'web_search="disabled"', "-c", "skills.bundled.enabled=false"]
CONFIG = """\
model = "{model}"
model_provider = "modelyard"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.modelyard]
name = "modelyard"
base_url = "{base_url}/v1"
env_key = "{env_key}"
wire_api = "responses"
# A small model on a busy CPU can take minutes before its first token.
stream_idle_timeout_ms = 600000
request_max_retries = 0
stream_max_retries = 0
"""
# For the tool round trip: SmolLM2-135M calls exec_command when its
# instructions read like the function-calling prompts it was tuned on.
TOOL_INSTRUCTIONS = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. "
    "Based on the question, you will need to make one function/tool call to achieve the purpose. "
    "To run a shell command, call exec_command with the command in cmd. "
    "After the tool output arrives, answer with that output in one short sentence.\n"
)
TOOL_PROMPT = "Call the exec_command tool with cmd set to 'pwd'."
SHORT_INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence.\n"


def codex_home(root: Path, base_url: str, model: str = MODEL) -> dict[str, str]:
    """A throwaway HOME and CODEX_HOME under `root` with a provider for `base_url`; the env to run Codex in."""
    home = root / "home"
    codex = home / ".codex"
    codex.mkdir(parents=True, exist_ok=True)
    (codex / "config.toml").write_text(CONFIG.format(model=model, base_url=base_url, env_key=API_KEY_ENV))
    (root / "work").mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home), "CODEX_HOME": str(codex), API_KEY_ENV: "sk-local-not-checked"}


def run_codex(
    env: dict[str, str], prompt: str, *, instructions: str | None = None, lean: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`codex exec` in `env` (from codex_home), no git repository needed. Codex's own
    sandbox is off: where bubblewrap is installed (CI installs it for modelyard's
    sandbox) Codex's read-only mode runs commands through bwrap and a
    `codex-linux-sandbox` helper that its npm build lacks, so every command fails.
    The scripted models only ever run fixed `echo` commands."""
    root = Path(env["HOME"]).parent
    args = [str(CODEX), "exec", "--strict-config", "--skip-git-repo-check", "-s", "danger-full-access"]
    if instructions is not None:
        path = root / "instructions.md"
        path.write_text(instructions)
        args += ["-c", f"model_instructions_file={json.dumps(str(path))}"]
    args += [*(LEAN if lean else []), prompt]
    return subprocess.run(
        args, cwd=root / "work", env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- recordings ---------------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sanitized(exchange: Exchange, installation: str | None) -> dict[str, Any]:
    """A recorded request without secrets: the key redacted, the machine's installation id zeroed."""
    record = exchange.sanitized()
    del record["status"]
    text = json.dumps(record, ensure_ascii=False)
    if installation:
        text = text.replace(installation, "00000000-0000-0000-0000-000000000000")
    return dict(json.loads(text))


def installation_id(exchanges: list[Exchange]) -> str | None:
    for exchange in exchanges:
        metadata = (exchange.body or {}).get("client_metadata") or {}
        if "x-codex-installation-id" in metadata:
            return str(metadata["x-codex-installation-id"])
    return None


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def script_prompt(*events: Any) -> str:
    return "script: " + json.dumps(list(events))


def record_flows(base_url: str, flows: dict[str, tuple[str, dict[str, Any], list[str]]], out: Path) -> None:
    """Run each flow (prompt, run_codex options, names of its requests in order) through a proxy; save them."""
    with tempfile.TemporaryDirectory() as tmp, RecordingProxy(base_url) as proxy:
        for flow, (prompt, options, names) in flows.items():
            env = codex_home(Path(tmp) / flow, proxy.base_url)
            before = len(proxy.exchanges)
            done = run_codex(env, prompt, **options)
            mine = [e for e in proxy.exchanges[before:] if e.path.startswith("/v1/responses")]
            if done.returncode != 0 or len(mine) != len(names):
                raise SystemExit(f"{flow}: exit {done.returncode}, {len(mine)} requests\n{done.stdout}\n{done.stderr}")
            installation = installation_id(mine)
            for name, exchange in zip(names, mine, strict=True):
                if name:
                    (out / f"{name}.json").write_text(json.dumps(sanitized(exchange, installation), indent=1, ensure_ascii=False) + "\n")
                    print(f"{flow}: {name}.json ({len(json.dumps(exchange.body))} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Record what Codex sends into tests/data/codex/.")
    parser.add_argument("command", choices=["record"])
    parser.add_argument("--real", help="base URL of a server running SmolLM2 for the lean flows")
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from tests.conftest import ServerProcess, scripted_model_toml

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(scripted_model_toml(MODEL))
        server = ServerProcess(["-c", str(config)]).start()
        try:
            shell = {"tool_call": {"name": "exec_command", "arguments": {"cmd": "echo hello-from-codex"}}}
            close = {"tool_call": {"name": "multi_agent_v1.close_agent", "arguments": {"target": "agent-1"}}}
            record_flows(
                server.base_url,
                {
                    "default": ("Say hello", {}, ["default"]),
                    "tool": (script_prompt(shell), {}, ["default-tool-turn1", "default-tool-turn2"]),
                    "namespace": (script_prompt(close), {}, ["", "default-namespace-turn2"]),
                },
                args.out,
            )
        finally:
            server.stop()
    if args.real:
        record_flows(
            args.real,
            {
                "short": ("Say hello", {"instructions": SHORT_INSTRUCTIONS, "lean": True}, ["short"]),
                "short-tool": (TOOL_PROMPT, {"instructions": TOOL_INSTRUCTIONS, "lean": True}, ["short-tool-turn1", "short-tool-turn2"]),
            },
            args.out,
        )


if __name__ == "__main__":
    main()
