"""The agentic runtime on chat completions (router/agent_loop.py, router/chat_agentic.py): the scripted model
calls hosted tools, the server really runs them (a search over the `local` provider, code and shell in the
bubblewrap sandbox), feeds the results back, and the client sees one answer plus the timeline of what ran.
The official openai SDK reads the answers; raw SSE is read where the named events matter."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tests.conftest import openai_validator, processes_running, script, scripted_model_toml, toml_inline

ALICE = "alice-agent-key-1"
NOAGENT = "noagent-key-2"
HAVE_BWRAP = os.access("/usr/bin/bwrap", os.X_OK)
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap (/usr/bin/bwrap) is not installed")

DOCS = {
    "ray.md": "# Ray Serve\n\nRay Serve runs each model as a deployment with replicas across a cluster.\n",
    "zorland.md": "# Zorland\n\nThe capital of Zorland is Quibble, famous for its glass bridges.\n",
    "notes.txt": "Shopping list: apples, bread, and a new kettle.\n",
}
ANSWER = "The capital is Quibble [1]."


def config(base: Path, tools: list[str]) -> str:
    keys = "".join(
        f'[[auth.keys]]\nname = "{n}"\nkey = "{k}"\nmetrics = true\nagent = {a}\n'
        for n, k, a in (("alice", ALICE, "true"), ("noagent", NOAGENT, "false"))
    )
    return (
        f'[storage]\npath = "{base / "storage" / "db.sqlite3"}"\n\n'
        f"[agent]\ntools = {json.dumps(tools)}\nmax_tool_rounds = 3\ndefault_tool_rounds = 2\n\n"
        f'[agent.search]\nprovider = "local"\nfolder = "{base / "docs"}"\n\n'
        f'[agent.sandbox]\nmode = "{"on" if HAVE_BWRAP else "off"}"\ntimeout = "5s"\ncpu_seconds = 4\n\n{keys}'
        + scripted_model_toml("agent", options=f"after_tool_result = {json.dumps([ANSWER])}\n")
        # Calls the search in every round: only the rounds' limit ends its loop.
        + scripted_model_toml("looper", options=f"script = {toml_inline([call('web_search', query='Zorland')])}\n")
    )


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """Searchable by others all the way down: run as root, the sandbox runs as nobody."""
    path = Path(tempfile.mkdtemp(prefix="modelyard-chat-agent-"))
    path.chmod(0o711)
    (path / "docs").mkdir()
    for name, text in DOCS.items():
        (path / "docs" / name).write_text(text)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(server_factory: Any, base: Path) -> Any:
    return server_factory(config(base, ["web_search", "code_interpreter"]), health_key=ALICE)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=ALICE, max_retries=0, timeout=60) as c:
        yield c


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_call": {"name": name, "arguments": arguments}}


def ask(*events: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": script(*events)}]


CODE_TOOL = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def test_search_runs_and_the_answer_cites_it(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="agent", messages=ask(call("web_search", query="capital of Zorland")), web_search_options={}
    )
    body = raw.http_response.json()
    openai_validator("CreateChatCompletionResponse").validate(body)
    completion = raw.parse()
    message = completion.choices[0].message
    assert message.content == ANSWER and completion.choices[0].finish_reason == "stop"
    records = body["agentic_tool_calls"]
    assert [(r["round"], r["name"]) for r in records] == [(1, "web_search")]
    data = records[0]["data"]
    assert data["tool_type"] == "web_search" and data["query"] == "capital of Zorland"
    assert data["results_count"] >= 1 and "zorland.md" in data["sources"][0]
    assert "Quibble" in records[0]["result_content"]  # what the model was shown
    [citation] = [a for a in body["choices"][0]["message"]["annotations"] if a["type"] == "url_citation"]
    span = citation["url_citation"]
    assert message.content[span["start_index"] : span["end_index"]] == "[1]"
    assert span["url"] == data["sources"][0]
    # Two model calls: the usage adds up both rounds' prompts.
    assert completion.usage.prompt_tokens > len(ANSWER.split())


def stream_events(server: Any, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    events: list[tuple[str | None, Any]] = []
    name = None
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True},
                      headers={"authorization": f"Bearer {ALICE}"}, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
                events.append((name, data if data == "[DONE]" else json.loads(data)))
                name = None
    return events


def test_stream_names_the_progress_events(server: Any) -> None:
    events = stream_events(server, {"model": "agent", "messages": ask("Let me look. ", call("web_search", query="Ray Serve")),
                                    "web_search_options": {"search_context_size": "low"}})
    progress = [data for name, data in events if name == "agentic_tool_call_progress"]
    assert [(p["phase"], p["tool_name"], p["round"]) for p in progress] == [("calling", "web_search", 1), ("complete", "web_search", 1)]
    assert progress[0]["data"] == {"tool_type": "web_search", "query": "Ray Serve"}
    assert "ray.md" in progress[1]["data"]["sources"][0]
    assert progress[0]["choices"] == []  # an SDK reading it as a chunk sees no choices, as for a usage chunk
    chunks = [data for name, data in events if name is None and data != "[DONE]"]
    validator = openai_validator("CreateChatCompletionStreamResponse")
    for chunk in chunks:
        validator.validate(chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Let me look. " + ANSWER  # both rounds' text, in order
    order = [name or "chunk" for name, _ in events]
    assert order.index("agentic_tool_call_progress") > 0 and order[-1] == "chunk" and events[-1][1] == "[DONE]"
    assert not any(c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"])  # hosted calls are not tool_calls
    annotated = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("annotations")]
    assert len(annotated) == 1


def test_the_sdk_streams_through_the_progress_events(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="agent", messages=ask(call("web_search", query="kettle")),
                                            web_search_options={}, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == ANSWER


@needs_bwrap
def test_code_runs_in_the_sandbox_and_its_file_comes_back(client: openai.OpenAI, server: Any) -> None:
    code = "import csv\nwith open('table.csv', 'w') as f:\n    csv.writer(f).writerows([['x', 'y'], [1, 2]])\nprint(6 * 7)"
    raw = client.chat.completions.with_raw_response.create(model="agent", messages=ask(call("code_interpreter", code=code)),
                                                           tools=CODE_TOOL)
    body = raw.http_response.json()
    [record] = body["agentic_tool_calls"]
    data = record["data"]
    assert data["tool_type"] == "code_execution" and data["code"] == code
    assert data["stdout"] == "42\n" and data["exit_code"] == 0 and not data["timed_out"]
    [file_id] = record["file_ids"]
    assert client.files.content(file_id).content.replace(b"\r\n", b"\n") == b"x,y\n1,2\n"
    assert client.files.retrieve(file_id).filename == "table.csv"


@needs_bwrap
def test_escapes_are_contained_and_reported(client: openai.OpenAI, server: Any) -> None:
    attempts = {
        "open('/etc/shadow').read()": "FileNotFoundError",
        "import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)": "OSError",
        "while True: pass": None,  # killed at the CPU or wall-clock limit
    }
    for code, error in attempts.items():
        body = client.chat.completions.with_raw_response.create(
            model="agent", messages=ask(call("code_interpreter", code=code)), tools=CODE_TOOL
        ).http_response.json()
        [record] = body["agentic_tool_calls"]
        assert record["failed"], code
        data = record["data"]
        if error is not None:
            assert error in data["stderr"] + data.get("exception", ""), (code, data)
        else:
            assert data["timed_out"] or data.get("exception") in ("cpu_limit", "timeout"), data
        assert body["choices"][0]["message"]["content"] == ANSWER  # the model went on
    agent = server.health()["agent"]
    assert agent["isolation"] == "bubblewrap" and agent["seccomp"] is (os.uname().machine == "x86_64")


@needs_bwrap
def test_a_session_keeps_python_state(client: openai.OpenAI) -> None:
    first = client.chat.completions.with_raw_response.create(
        model="agent", messages=ask(call("code_interpreter", code="secret = 41")), tools=CODE_TOOL,
        extra_body={"session_id": "chat-session-1"},
    ).http_response.json()
    assert first["session_id"] == "chat-session-1"
    second = client.chat.completions.with_raw_response.create(
        model="agent", messages=ask(call("code_interpreter", code="print(secret + 1)")), tools=CODE_TOOL,
        extra_body={"session_id": "chat-session-1"},
    ).http_response.json()
    assert second["agentic_tool_calls"][0]["data"]["stdout"] == "42\n"
    other = client.chat.completions.with_raw_response.create(
        model="agent", messages=ask(call("code_interpreter", code="print(secret)")), tools=CODE_TOOL
    ).http_response.json()
    assert "NameError" in other["agentic_tool_calls"][0]["data"]["stderr"] + other["agentic_tool_calls"][0]["data"].get("exception", "")
    session = httpx.get(f"{client.base_url}sessions/chat-session-1", headers={"authorization": f"Bearer {ALICE}"})
    assert session.status_code == 200 and session.json()["id"] == "chat-session-1"
    gone = httpx.delete(f"{client.base_url}sessions/chat-session-1", headers={"authorization": f"Bearer {ALICE}"})
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert httpx.get(f"{client.base_url}sessions/chat-session-1", headers={"authorization": f"Bearer {ALICE}"}).status_code == 404


@needs_bwrap
def test_a_client_that_leaves_kills_the_running_tool(server: Any) -> None:
    body = {"model": "agent", "messages": ask(call("code_interpreter", code="import subprocess; subprocess.run(['sleep', '977.25'])")),
            "tools": CODE_TOOL, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {ALICE}"}, timeout=30) as response:
        lines = response.iter_lines()  # kept open (a `break` out of it would close the response)
        while not next(lines).startswith("event: agentic_tool_call_progress"):
            pass
        deadline = time.monotonic() + 10
        while not running("sleep", "977.25") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running("sleep", "977.25")
        response.close()  # the client leaves while the tool runs
    deadline = time.monotonic() + 10
    while running("sleep", "977.25") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running("sleep", "977.25")


def running(*argv: str) -> bool:
    return bool(processes_running(*argv))


def test_refusals(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as not_enabled:
        client.chat.completions.create(model="agent", messages=ask("hi"), tools=[{"type": "shell"}])
    assert "'shell' is not enabled" in not_enabled.value.message and not_enabled.value.body["param"] == "tools[0]"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="agent", messages=ask("hi"), tools=[{"type": "file_search"}])
    assert "file_search" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as rounds:
        client.chat.completions.create(model="agent", messages=ask("hi"), web_search_options={},
                                       extra_body={"max_tool_rounds": 4})
    assert "between 1 and 3" in rounds.value.message and rounds.value.body["param"] == "max_tool_rounds"
    with pytest.raises(openai.BadRequestError) as bad_session:
        client.chat.completions.create(model="agent", messages=ask("hi"), tools=CODE_TOOL, extra_body={"session_id": "../x"})
    assert bad_session.value.body["param"] == "session_id"
    with openai.OpenAI(base_url=str(client.base_url), api_key=NOAGENT, max_retries=0) as denied:
        with pytest.raises(openai.PermissionDeniedError) as forbidden:
            denied.chat.completions.create(model="agent", messages=ask("hi"), web_search_options={})
        assert "agent = false" in forbidden.value.message
        # The same key still chats without hosted tools.
        assert denied.chat.completions.create(model="agent", messages=ask("plain")).choices[0].message.content == "plain"


def test_rounds_run_out_and_the_model_must_answer(client: openai.OpenAI) -> None:
    for rounds in (1, 3):
        body = client.chat.completions.with_raw_response.create(
            model="looper", messages=[{"role": "user", "content": "search"}], web_search_options={},
            extra_body={"max_tool_rounds": rounds},
        ).http_response.json()
        # Round rounds+1 offers no hosted tool: what the model writes then is its answer, and nothing more runs.
        assert [r["round"] for r in body["agentic_tool_calls"]] == list(range(1, rounds + 1))
        assert body["choices"][0]["finish_reason"] == "stop"
    default = client.chat.completions.with_raw_response.create(
        model="looper", messages=[{"role": "user", "content": "search"}], web_search_options={},
    ).http_response.json()
    assert len(default["agentic_tool_calls"]) == 2  # [agent] default_tool_rounds


def test_reload_enables_shell(server: Any, base: Path, client: openai.OpenAI) -> None:
    generation = server.health()["config"]["generation"]
    server.config_path.write_text(config(base, ["web_search", "code_interpreter", "shell"]))
    server.wait_for(lambda h: h["config"]["generation"] > generation, timeout=20, what="the reload")
    assert server.health()["agent"]["tools"] == ["web_search", "code_interpreter", "shell"]
    if not HAVE_BWRAP:
        return
    body = client.chat.completions.with_raw_response.create(
        model="agent", messages=ask(call("shell", commands=["echo hello > greeting.txt", "cat greeting.txt", "exit 3"])),
        tools=[{"type": "shell"}],
    ).http_response.json()
    [record] = body["agentic_tool_calls"]
    data = record["data"]
    assert data["tool_type"] == "shell" and data["stdout"] == "hello\n" and data["exit_code"] == 3
    assert [o["exit_code"] for o in data["outputs"]] == [0, 0, 3]
