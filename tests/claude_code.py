"""Claude Code (the `claude` CLI from npm, installed by `make clients` into
tests/clients) against a modelyard server: its environment, and the
recording of what it sends into tests/data/claude-code/.

To record again (a server must be running; the scripted backend will do,
since only the requests matter)::

    python -m tests.claude_code http://127.0.0.1:8000 MODEL_ID TOOL_MODEL_ID

which puts tests/recording_proxy.py between the CLI and the server, runs a
plain `claude -p` (its default system prompt and tools), a short one
(`--system-prompt ... --tools ""`) and a Bash tool round trip against
TOOL_MODEL_ID (a model that calls Bash, such as the scripted `bash-agent` of
tests/test_claude_code.py), and writes the sanitized requests: the first
of each run, and the tool run's second (which carries the tool_result).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLAUDE = REPO / "tests" / "clients" / "node_modules" / ".bin" / "claude"
RECORDINGS = REPO / "tests" / "data" / "claude-code"
VERSION = "2.1.197"  # tests/clients/package.json

# Headers of the connection, not of the request: not recorded, not replayed.
CONNECTION_HEADERS = {"host", "content-length", "connection", "accept-encoding"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEVICE_ID = re.compile(r'(\\?"device_id\\?":\\?")[0-9a-f]{64}')
PLACEHOLDER_UUID = "00000000-0000-4000-8000-000000000000"


def claude_env(base_url: str, home: Path, model: str) -> dict[str, str]:
    """The environment Claude Code needs for a local server (docs/coding-agents.md):
    a base URL without /v1, any API key, no telemetry or updates, and every
    model tier mapped to the served model. HOME is a throwaway folder."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-local-anything",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
    }


def run_claude(
    base_url: str,
    model: str,
    args: list[str],
    cwd: Path,
    home: Path,
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLAUDE), *args],
        cwd=cwd,
        env={**claude_env(base_url, home, model), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def sanitized(record: dict[str, Any], workdir: Path, home: Path) -> dict[str, Any]:
    """A recorded request without what identifies the machine or the run:
    the session and device ids, the throwaway folders' paths. The proxy
    already left out credentials."""
    text = json.dumps(record, ensure_ascii=False)
    text = text.replace(str(home), "/home/user").replace(str(workdir), "/home/user/project")
    text = text.replace(str(workdir).replace("/", "-"), "-home-user-project")
    text = UUID.sub(PLACEHOLDER_UUID, text)
    text = DEVICE_ID.sub(lambda m: m.group(1) + "0" * 64, text)
    out: dict[str, Any] = json.loads(text)
    out["headers"] = {k: v for k, v in out["headers"].items() if k not in CONNECTION_HEADERS}
    out.pop("status", None)
    return out


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text(encoding="utf-8"))
    return data


SHORT = ["-p", "Say hello", "--output-format", "json", "--system-prompt", "You are brief.", "--tools", ""]
BASH_RUN = ["-p", "Run echo hello-from-bash", "--output-format", "json", "--system-prompt", "You run shell commands."]
BASH_RUN += ["--tools", "Bash", "--allowedTools", "Bash"]
RUNS = {
    # The CLI as a new user runs it: its default system prompt and all its tools.
    "default": (["-p", "Say hello", "--output-format", "json"], False, {"default": 0}),
    # The short prompt the CI test uses.
    "short": (SHORT, False, {"short": 0}),
    # A Bash tool round trip: the request that asks, and the one that brings the tool_result.
    "bash": (BASH_RUN, True, {"bash-call": 0, "bash-result": 1}),
}


def record(upstream: str, model: str, tool_model: str) -> None:
    from tests.recording_proxy import RecordingProxy

    RECORDINGS.mkdir(parents=True, exist_ok=True)
    for run, (args, calls_tools, names) in RUNS.items():
        served = tool_model if calls_tools else model
        with tempfile.TemporaryDirectory() as tmp:
            workdir, home, out = Path(tmp, "project"), Path(tmp, "home"), Path(tmp, "requests")
            workdir.mkdir()
            home.mkdir()
            with RecordingProxy(upstream, out) as proxy:
                done = run_claude(proxy.base_url, served, [*args, "--model", served], workdir, home)
                records = proxy.records()
            print(f"{run}: claude exited {done.returncode}: {done.stdout[:300]}", file=sys.stderr)
            messages = [r for r in records if r["path"] == "/v1/messages"]
            for name, index in names.items():
                if index >= len(messages):
                    raise SystemExit(f"{run}: the CLI sent {len(messages)} /v1/messages requests, not {index + 1}")
                clean = sanitized(messages[index], workdir, home)
                text = json.dumps(clean, indent=1, ensure_ascii=False) + "\n"
                (RECORDINGS / f"{name}.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    record(sys.argv[1], sys.argv[2], sys.argv[3])
