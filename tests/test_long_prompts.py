"""Long prompts on the real SmolLM2 through a real server: a client that
leaves while its prompt is evaluated stops the evaluation between batches
(the worker says where, and serves the next request); a second turn that
re-sends the conversation reuses the cached prefix, reported as cached
tokens on each surface and in the worker's debug log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ServerProcess, chat_model_toml

pytestmark = pytest.mark.real_model

# "slow" evaluates 4 tokens per batch: an 800-word prompt takes it many seconds.
CONFIG = '[server]\nstream_keepalive = "1s"\n' + chat_model_toml("smol") + chat_model_toml("slow") + "n_batch = 4\n"
SYSTEM = "You are a coding agent. " + " ".join(f"Rule {i}: read file number {i} before you edit it." for i in range(20))
STOPPED = re.compile(r"prompt stopped after (\d+) of (\d+) tokens \((\d+) reused\): cancelled")
REUSED = re.compile(r"prompt of (\d+) tokens: (\d+) reused from the cache, (\d+) evaluated")


@pytest.fixture(scope="module")
def server(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(CONFIG, env={"MODELYARD_WORKER_LOG": "DEBUG"})
    return server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120) as c:
        yield c


def log_match(server: ServerProcess, pattern: re.Pattern[str], since: int, timeout: float = 30) -> re.Match[str]:
    """The first server log line after line `since` that matches `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.lines[since:]:
            found = pattern.search(line)
            if found:
                return found
        assert time.monotonic() < deadline, f"no log line matches {pattern.pattern}:\n{server.log()}"
        time.sleep(0.1)


# --- cancelling a prompt evaluation ------------------------------------------


def leave_during_the_prompt(server: ServerProcess, path: str, body: dict[str, Any], first_line: str) -> None:
    """Stream `body`, read the stream's first line (sent before the prompt is
    evaluated), wait for a keep-alive (the prompt is being evaluated) and
    leave; the evaluation must stop midway and the worker carry on."""
    before = server.health()["models"]["slow"]
    since = len(server.lines)
    with httpx.stream("POST", f"{server.base_url}{path}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith(first_line)
        # Anthropic's stream sends a ping right after message_start: wait for the next one.
        keepalive, wanted = ("event: ping", 2) if path == "/v1/messages" else (": keep-alive", 1)
        for line in lines:
            wanted -= line == keepalive
            if wanted == 0:
                break
        assert wanted == 0, "the stream ended without a keep-alive"
    stopped = log_match(server, STOPPED, since)
    reached, total = int(stopped.group(1)), int(stopped.group(2))
    assert 0 < reached < total, "the evaluation stopped midway"
    server.wait_for(
        lambda h: h["models"]["slow"]["inflight"] == 0 and h["models"]["slow"]["stopping"] == 0, 30, "the call to end"
    )
    quick = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=120,
    )
    assert quick.status_code == 200
    after = server.health()["models"]["slow"]
    assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"]


def test_leaving_a_chat_stream_stops_the_prompt_between_batches(server: ServerProcess) -> None:
    body = {"model": "slow", "messages": [{"role": "user", "content": "apple " * 800}], "max_tokens": 2}
    leave_during_the_prompt(server, "/v1/chat/completions", body, 'data: {"id":"chatcmpl-')


def test_leaving_a_messages_stream_stops_the_prompt_between_batches(server: ServerProcess) -> None:
    body = {"model": "slow", "messages": [{"role": "user", "content": "pear " * 800}], "max_tokens": 2}
    leave_during_the_prompt(server, "/v1/messages", body, "event: message_start")


def test_leaving_a_responses_stream_stops_the_prompt_between_batches(server: ServerProcess) -> None:
    body = {"model": "slow", "input": "plum " * 800, "max_output_tokens": 16, "store": False}
    leave_during_the_prompt(server, "/v1/responses", body, "event: response.created")


def test_message_start_reports_the_prompt_before_it_is_evaluated(server: ServerProcess, claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "kiwi " * 300}]
    counted = claude.messages.count_tokens(model="slow", messages=messages).input_tokens  # type: ignore[arg-type]
    since = len(server.lines)
    body = {"model": "slow", "max_tokens": 2, "messages": messages, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=120) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: message_start"
        start = json.loads(next(lines).removeprefix("data: "))
        # Nothing of the prompt was evaluated yet: the worker logs that only at the end of the evaluation.
        assert not any(REUSED.search(line) for line in server.lines[since:])
        rest = list(lines)
    usage = start["message"]["usage"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == counted
    assert any(line == "event: message_stop" for line in rest)


# --- reusing the previous turn's prefix ----------------------------------------


def test_a_second_chat_turn_reuses_the_first(server: ServerProcess, client: openai.OpenAI) -> None:
    first: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "List three fruits."}]
    one = client.chat.completions.create(model="smol", messages=first, max_tokens=12)
    assert one.usage is not None
    second = [*first, {"role": "assistant", "content": one.choices[0].message.content}, {"role": "user", "content": "Thanks!"}]
    since = len(server.lines)
    two = client.chat.completions.create(model="smol", messages=second, max_tokens=4)
    assert two.usage is not None and two.usage.prompt_tokens_details is not None
    cached = two.usage.prompt_tokens_details.cached_tokens
    # At least turn 1's whole prompt (the template rendered the history as before), at most with its answer.
    assert one.usage.prompt_tokens <= cached <= one.usage.prompt_tokens + one.usage.completion_tokens
    logged = log_match(server, REUSED, since)
    assert (int(logged.group(1)), int(logged.group(2))) == (two.usage.prompt_tokens, cached)
    assert int(logged.group(3)) == two.usage.prompt_tokens - cached


def test_a_second_messages_turn_reads_the_cache(claude: anthropic.Anthropic) -> None:
    first: list[Any] = [{"role": "user", "content": "Name a planet."}]
    one = claude.messages.create(model="smol", system=SYSTEM, max_tokens=10, messages=first)
    total_one = one.usage.input_tokens + (one.usage.cache_read_input_tokens or 0)
    reply = [block.model_dump() for block in one.content]
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And a moon?"}]
    two = claude.messages.create(model="smol", system=SYSTEM, max_tokens=4, messages=second)  # type: ignore[arg-type]
    assert two.usage.cache_read_input_tokens is not None and two.usage.cache_read_input_tokens >= total_one
    counted = claude.messages.count_tokens(model="smol", system=SYSTEM, messages=second).input_tokens  # type: ignore[arg-type]
    assert two.usage.input_tokens + two.usage.cache_read_input_tokens == counted


def test_a_codex_style_second_turn_reuses_the_first(client: openai.OpenAI) -> None:
    tools: list[Any] = [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        }
    ]
    history: list[Any] = [{"role": "user", "content": "List the files here."}]
    one = client.responses.create(
        model="smol", instructions=SYSTEM, input=history, tools=tools, tool_choice="required", store=False, max_output_tokens=40
    )
    calls = [item for item in one.output if item.type == "function_call"]
    assert calls and one.usage is not None
    # Codex re-sends everything: the history, the call, its output and a new message.
    history += [
        {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},  # type: ignore[union-attr]
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "README.md\nsetup.py"},  # type: ignore[union-attr]
        {"role": "user", "content": "Which one is the readme?"},
    ]
    two = client.responses.create(
        model="smol", instructions=SYSTEM, input=history, tools=tools, store=False, max_output_tokens=4
    )
    assert two.usage is not None
    assert two.usage.input_tokens_details.cached_tokens >= one.usage.input_tokens
