"""Claude Code against the real SmolLM2: the recorded requests of
tests/data/claude-code replayed, and the real CLI (tests/clients, installed
by `make clients`) run with `claude -p`.

SmolLM2 samples greedily (`top_k = 1` in its options; Claude Code sends no
temperature), so what it answers is the same each run. The CLI's
`CLAUDE_CODE_MAX_OUTPUT_TOKENS` bounds its max_tokens (32,000 otherwise).

SmolLM2-135M does not call a tool when Claude Code asks it in words (Claude
Code never sends tool_choice, so the server cannot force the call; the
prompts tried are in docs/coding-agents.md), so the Bash round trip runs the
real CLI against `bash-agent`, a scripted model on the same server that
calls Bash and then answers; the request that carries the tool_result is
then replayed against SmolLM2.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.claude_code import CLAUDE, claude_env, recorded, run_claude
from tests.conftest import chat_model_toml, scripted_model_toml, toml_inline
from tests.recording_proxy import RecordingProxy
from tests.test_anthropic_requests import assert_well_formed

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not CLAUDE.exists(), reason="the Claude Code CLI is not installed (make clients)"),
]

MODEL = "smollm2"
BASH_AGENT = "bash-agent"
BASH_CALL = {"name": "Bash", "arguments": {"command": "echo hello-from-bash", "description": "Print a greeting"}}
# Greedy, and a context that holds the plain `claude -p` prompt (~19,700 tokens),
# read in small batches so that a client that leaves stops it soon.
# No host-memory prompt cache: test_claude_p_prints_the_models_reply compares
# Claude Code's reply with a direct request's, and a prompt read back from
# memory at another split point than a fresh one differs in the last bits.
CONFIG = chat_model_toml(MODEL).replace("n_ctx = 1024", "n_ctx = 20480") + "top_k = 1\nn_batch = 128\nslots = 1\nprompt_cache_mib = 0\n"
CONFIG += scripted_model_toml(
    BASH_AGENT,
    options=f"script = [{toml_inline({'tool_call': BASH_CALL})}]\nafter_tool_result = [\"The command printed hello-from-bash.\"]\n",
)
# Claude Code's own bound on max_tokens (it asks for 32,000 otherwise).
LIMITED = {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64"}


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=600) as client:
        yield client


def send(http: httpx.Client, name: str, max_tokens: int, model: str | None = None) -> Any:
    """A recorded request as the CLI sent it (body, query, headers), only max_tokens
    lowered (and, for one recorded against another model, the model)."""
    request = recorded(name)
    body = {**request["body"], "max_tokens": max_tokens, **({"model": model} if model else {})}
    return http.stream("POST", request["path"], params=request["query"], headers=request["headers"], json=body)


def events_of(lines: list[str]) -> list[dict[str, Any]]:
    names = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    events = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("data: ")]
    assert [e["type"] for e in events] == names
    return events


def test_short_recording_streams_a_reply(http: httpx.Client) -> None:
    request = recorded("short")
    # The fields Claude Code sends on every request, with its beta headers and query.
    assert {"thinking", "context_management", "output_config", "metadata", "system", "tools"} <= set(request["body"])
    assert "anthropic-beta" in request["headers"] and request["query"] == {"beta": "true"}
    with send(http, "short", 16) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = events_of([line for line in response.iter_lines() if line])
    assert_well_formed(events)
    counted = http.post("/v1/messages/count_tokens", json=request["body"]).json()["input_tokens"]
    usage = events[0]["message"]["usage"]  # input_tokens leaves out the prompt tokens read from the cache
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == counted > 0
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text.strip()
    assert events[-2]["delta"]["stop_reason"] in ("end_turn", "max_tokens")


def test_default_recording_starts_streaming_and_can_be_left(http: httpx.Client, server: Any) -> None:
    """The plain `claude -p` request: 24 tools, Claude Code's whole system
    prompt, a system message after the user's. SmolLM2 on one thread takes
    well over ten minutes to read its ~19,700 tokens, so this test reads the
    stream up to message_start (sent once the prompt is tokenized, with its
    real size) and leaves; the model then stops between prompt batches and
    serves the next request. MODELYARD_LONG_TESTS=1 runs it to the end."""
    request = recorded("default")
    body = request["body"]
    assert len(body["tools"]) == 24 and all(t["input_schema"].get("$schema") for t in body["tools"])
    assert [m["role"] for m in body["messages"]] == ["user", "system"]
    counted = http.post("/v1/messages/count_tokens", params=request["query"], headers=request["headers"], json=body)
    assert counted.status_code == 200, counted.text
    assert counted.json()["input_tokens"] > 15000
    long_run = os.environ.get("MODELYARD_LONG_TESTS") == "1"
    with send(http, "default", 8) as response:
        assert response.status_code == 200, response.read().decode()
        lines: list[str] = []
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if not long_run and len(lines) == 2:
                break  # message_start's event and data lines
    events = events_of(lines)
    assert events[0]["type"] == "message_start"
    usage = events[0]["message"]["usage"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == counted.json()["input_tokens"]
    if long_run:
        assert_well_formed(events)
    after = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}, timeout=120)
    assert after.status_code == 200, after.text
    assert not any("did not stop a cancelled request" in line for line in server.lines), server.log()


# --- the real CLI ---------------------------------------------------------------------------


def claude(server: Any, tmp_path: Path, *args: str, model: str = MODEL) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `claude` with the documented environment; its JSON result and the requests it sent."""
    workdir, home = tmp_path / "project", tmp_path / "home"
    workdir.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    with RecordingProxy(server.base_url, tmp_path / "requests") as proxy:
        started = time.monotonic()
        done = run_claude(proxy.base_url, model, ["--model", model, *args], workdir, home, 300, LIMITED)
        elapsed = time.monotonic() - started
        requests = [r for r in proxy.records() if r["path"] == "/v1/messages"]
    assert done.returncode == 0, f"claude exited {done.returncode} after {elapsed:.0f}s:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result, requests


def test_environment_is_the_documented_one() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "coding-agents.md").read_text()
    section = doc.split("## Claude Code", 1)[1].split("\n## ", 1)[0]
    for name in claude_env("http://127.0.0.1:8000", Path("/tmp/h"), "smollm2"):
        if name not in ("PATH", "HOME"):
            assert f"{name}=" in section, f"docs/coding-agents.md does not show {name}"


def test_claude_p_prints_the_models_reply(server: Any, tmp_path: Path) -> None:
    result, requests = claude(
        server, tmp_path, "-p", "Say hello.", "--output-format", "json", "--system-prompt", "You are a helpful assistant.", "--tools", ""
    )
    assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False, result
    assert result["result"].strip(), result
    assert len(requests) == 1 and requests[0]["status"] == 200
    # The reply is the model's: the server's greedy answer to the same request.
    body = requests[0]["body"]
    assert body["max_tokens"] == int(LIMITED["CLAUDE_CODE_MAX_OUTPUT_TOKENS"])
    direct = httpx.post(f"{server.base_url}/v1/messages", json={**body, "stream": False}, timeout=300).json()
    # The same opening, not the same text: the two evaluate the prompt in different batches (the direct one
    # reads most of it from the cache), and on some CPUs (AVX-512 kernels, seen on a Sapphire Rapids Xeon) the
    # last bits of the logits differ between batch splits, enough to change a greedy token late in the reply.
    reply, answer = result["result"].strip(), "".join(b.get("text", "") for b in direct["content"]).strip()
    assert len(reply) > 20 and reply[:20] == answer[:20], (reply, answer)
    # The same prompt: the direct request read most of it from the cache the CLI's request left.
    def prompt_of(usage: dict[str, Any]) -> int:
        return int(usage["input_tokens"]) + int(usage.get("cache_read_input_tokens") or 0)

    assert prompt_of(result["usage"]) == prompt_of(direct["usage"])


def test_bash_tool_round_trip(server: Any, tmp_path: Path) -> None:
    result, requests = claude(
        server,
        tmp_path,
        "-p",
        "Run echo hello-from-bash",
        "--output-format",
        "json",
        "--system-prompt",
        "You run shell commands.",
        "--tools",
        "Bash",
        "--allowedTools",
        "Bash",
        model=BASH_AGENT,
    )
    assert result["subtype"] == "success" and result["is_error"] is False, result
    assert result["num_turns"] == 2 and result["result"] == "The command printed hello-from-bash."
    assert [r["status"] for r in requests] == [200, 200]
    assert [t["name"] for t in requests[0]["body"]["tools"]] == ["Bash"]
    # The CLI ran the command and sent its output back.
    history = requests[1]["body"]["messages"]
    calls = [b for m in history if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    results = [b for m in history if m["role"] == "user" and isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_result"]
    assert len(calls) == 1 and calls[0]["name"] == "Bash" and calls[0]["input"] == BASH_CALL["arguments"]
    assert len(results) == 1 and results[0]["tool_use_id"] == calls[0]["id"]
    assert results[0]["content"] == "hello-from-bash" and results[0]["is_error"] is False


def test_recorded_tool_result_turn_streams_a_reply_from_smollm2(http: httpx.Client) -> None:
    request = recorded("bash-result")
    kinds = [b["type"] for m in request["body"]["messages"] if isinstance(m["content"], list) for b in m["content"]]
    assert "tool_use" in kinds and "tool_result" in kinds
    with send(http, "bash-result", 16, model=MODEL) as response:
        assert response.status_code == 200, response.read().decode()
        events = events_of([line for line in response.iter_lines() if line])
    assert_well_formed(events)
    assert events[0]["message"]["model"] == MODEL
