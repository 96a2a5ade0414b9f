"""Codex CLI against the real SmolLM2: the real `codex exec` (tests/clients,
installed by `make clients`) says hello and makes a tool round trip, and the
recorded requests of tests/data/codex are replayed.

SmolLM2 samples greedily (`top_k = 1`; Codex sends no temperature) with a
repetition penalty of 1.3 (without one, greedy SmolLM2 repeats the tool
output's markup until its context is full). `reuse_prefix` keeps the KV
cache of the prompt Codex re-sends each turn, so a second turn reads only
what was added; the tests run in the order that lets each reuse the last
one's prefix. Greedy and in a fixed order, each run answers the same.

Codex never sends tool_choice, so the server cannot force a call. Given
the recorded request of `TOOL_PROMPT` (instructions worded as the
function-calling prompts it was tuned on), SmolLM2-135M calls exec_command
itself; but live, where each run's prompt differs (a temporary directory,
the random "Chunk ID" of Codex's tool output), the round trip ended in a
short answer in 9 of 11 runs, and otherwise the model repeated the prompt's
markup until cut off (docs/coding-agents.md). So the live
round trip runs against `codex-script`, a scripted model on the same
server that calls exec_command and then answers, and SmolLM2's own call
and the turn after it are the replayed recordings.

The CLI runs with a short instructions file and the `LEAN` switches (a
~1,500-token prompt). Codex's default prompt is ~9,200 tokens for SmolLM2,
minutes of prompt processing on one busy core: its recordings are replayed
here with MODELYARD_LONG_TESTS=1 (and always on the scripted backend, in
tests/test_codex_requests.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.codex_cli import (
    CODEX,
    MODEL,
    SHORT_INSTRUCTIONS,
    codex_home,
    recorded,
    run_codex,
    script_prompt,
)
from tests.conftest import chat_model_toml, scripted_model_toml
from tests.recording_proxy import Exchange, RecordingProxy
from tests.test_codex_requests import replay_headers, stream_events

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not CODEX.exists(), reason="the Codex CLI is not installed (make clients)"),
]

OPTIONS = "top_k = 1\nrepeat_penalty = 1.3\nreuse_prefix = true\n"
SCRIPTED = "codex-script"
# A context that holds Codex's default prompt (~9,200 tokens) and an answer.
CONFIG = chat_model_toml(MODEL).replace("n_ctx = 1024", "n_ctx = 10240\nslots = 2") + OPTIONS + scripted_model_toml(SCRIPTED)
SHELL_CALL = {"name": "exec_command", "arguments": {"cmd": "echo hello-from-codex"}}
LONG_TESTS = os.environ.get("MODELYARD_LONG_TESTS") == "1"
# Replays trim max_output_tokens (and keep every other field as Codex sent it).
REPLAY_MAX_OUTPUT_TOKENS = 24


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=900) as client:
        yield client


@pytest.fixture
def proxy(server: Any) -> Iterator[RecordingProxy]:
    with RecordingProxy(server.base_url) as recording:
        yield recording


@pytest.fixture
def codex_env(proxy: RecordingProxy) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as root:
        yield codex_home(Path(root), proxy.base_url)


@pytest.fixture
def scripted_codex_env(proxy: RecordingProxy) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as root:
        yield codex_home(Path(root), proxy.base_url, model=SCRIPTED)


def answered(exchange: Exchange) -> dict[str, Any]:
    """The final response object of a recorded stream."""
    events = [json.loads(line[6:]) for line in exchange.answer.decode().splitlines() if line.startswith("data: ")]
    assert events and events[-1]["type"] == "response.completed", exchange.answer.decode()[-2000:]
    response: dict[str, Any] = events[-1]["response"]
    return response


def reply_text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"])


def replay(http: httpx.Client, name: str, max_output_tokens: int = REPLAY_MAX_OUTPUT_TOKENS) -> dict[str, Any]:
    """A recorded request as Codex sent it (headers and body; max_output_tokens trimmed): its final response."""
    request = recorded(name)
    body = {**request["body"], "max_output_tokens": max_output_tokens}
    with http.stream("POST", request["path"], json=body, headers=replay_headers(request)) as response:
        events = stream_events(response)
    final: dict[str, Any] = events[-1]["response"]
    assert final["output"] and final["store"] is False
    return final


def test_codex_exec_prints_the_models_reply(proxy: RecordingProxy, codex_env: dict[str, str]) -> None:
    done = run_codex(codex_env, "Say hello", instructions=SHORT_INSTRUCTIONS, lean=True)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    (exchange,) = proxy.requests_to("/v1/responses")
    body = exchange.body
    # What Codex sends on every request.
    assert body["store"] is False and body["stream"] is True and body["include"] == ["reasoning.encrypted_content"]
    assert {"client_metadata", "prompt_cache_key", "reasoning"} <= set(body)
    assert [item["role"] for item in body["input"]] == ["developer", "developer", "user", "user"]
    assert body["input"][0]["content"][0]["text"] == SHORT_INSTRUCTIONS.strip()
    reply = reply_text(answered(exchange)).strip()
    assert reply and reply in done.stdout


def test_short_recording(http: httpx.Client) -> None:
    assert replay(http, "short")["usage"]["input_tokens"] > 1000


def test_codex_exec_tool_round_trip(proxy: RecordingProxy, scripted_codex_env: dict[str, str]) -> None:
    """Codex's default prompt and tools; the scripted model calls exec_command, then answers."""
    done = run_codex(scripted_codex_env, script_prompt({"tool_call": SHELL_CALL}))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    first, second = proxy.requests_to("/v1/responses")
    assert {tool["type"] for tool in first.body["tools"]} >= {"function", "namespace", "web_search"}
    (call,) = answered(first)["output"]
    assert (call["type"], call["name"]) == ("function_call", "exec_command")
    # The next request re-sends the history with the call and what it printed.
    history = second.body["input"]
    assert any(item["type"] == "function_call" and item["call_id"] == call["call_id"] for item in history)
    (output,) = [item["output"] for item in history if item["type"] == "function_call_output"]
    assert "hello-from-codex" in output
    reply = reply_text(answered(second)).strip()
    assert reply and reply in done.stdout


def test_smollm2_calls_exec_command_when_codex_asks(http: httpx.Client) -> None:
    """The recorded request of TOOL_PROMPT (Codex's lean prompt and tools): SmolLM2 calls exec_command."""
    body = recorded("short-tool-turn1")["body"]
    assert body["tool_choice"] == "auto" and "exec_command" in [tool.get("name") for tool in body["tools"]]
    final = replay(http, "short-tool-turn1", max_output_tokens=64)
    calls = [item for item in final["output"] if item["type"] == "function_call"]
    # Which command it writes after "pwd" is the model's luck (greedy ties move with the attention kernels).
    assert [call["name"] for call in calls] == ["exec_command"] and json.loads(calls[0]["arguments"])["cmd"].startswith("pwd")


def test_smollm2_answers_the_turn_after_the_call(http: httpx.Client) -> None:
    body = recorded("short-tool-turn2")["body"]
    assert [item["type"] for item in body["input"]][-2:] == ["function_call", "function_call_output"]
    final = replay(http, "short-tool-turn2")
    assert final["usage"]["input_tokens"] > 1000 and final["output"][0]["type"] == "message"


@pytest.mark.skipif(not LONG_TESTS, reason="Codex's default prompt takes minutes on one core (MODELYARD_LONG_TESTS=1)")
@pytest.mark.parametrize("name", ["default", "default-tool-turn1", "default-tool-turn2", "default-namespace-turn2"])
def test_default_recordings(http: httpx.Client, name: str) -> None:
    final = replay(http, name)
    assert final["usage"]["input_tokens"] > 8000
    assert any(tool["type"] == "namespace" for tool in final["tools"])
