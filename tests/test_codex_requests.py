"""What Codex sends to /v1/responses, on the scripted backend (fast tier):
every recording of tests/data/codex is accepted and streams a well-formed
answer; calls to namespaced, custom and local shell tools come back as the
items the client declared; hosted tools are left out with a warning; later
developer turns and reasoning items reach the prompt; what is still refused
is refused in OpenAI's words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.codex_cli import DATA, MODEL, recorded, script_prompt
from tests.conftest import openai_validator, scripted_model_toml

EVENT = openai_validator("ResponseStreamEvent")
RECORDINGS = sorted(path.stem for path in DATA.glob("*.json"))
# Headers that belong to the recorded connection, not to the request.
CONNECTION_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(scripted_model_toml(MODEL, extra='reasoning_tags = ["<think>", "</think>"]\n'))


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def replay_headers(request: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in request["headers"].items() if k not in CONNECTION_HEADERS and k != "authorization"}


def stream_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The stream's events, checked: `event:` names their data, sequence numbers count up from 0,
    each event fits OpenAI's schema, and it runs from response.created to one terminal event."""
    assert response.status_code == 200, response.read().decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines() if line]
    names = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    events = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("data: ")]
    assert [e["type"] for e in events] == names
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        error = next(iter(EVENT.iter_errors(event)), None)
        assert error is None, f"{event['type']}: {error.message}"
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert [e["type"] for e in events].count(events[-1]["type"]) == 1
    return events


def post(http: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    with http.stream("POST", "/v1/responses", json=body, headers=headers or {}) as response:
        return stream_events(response)


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = events[-1]["response"]
    return response


def with_prompt(name: str, *events: Any) -> dict[str, Any]:
    """A recorded body whose last user message tells the scripted backend what to answer."""
    body = json.loads(json.dumps(recorded(name)["body"]))
    last = max(i for i, item in enumerate(body["input"]) if item.get("role") == "user")
    body["input"][last]["content"] = [{"type": "input_text", "text": script_prompt(*events)}]
    return body


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_recording_streams_an_answer(http: httpx.Client, server: Any, name: str) -> None:
    request = recorded(name)
    body = request["body"]
    assert body["store"] is False and body["stream"] is True and "client_metadata" in body
    events = post(http, body, replay_headers(request))
    response = final(events)
    assert response["status"] == "completed" and response["store"] is False and response["output"]
    assert [t["type"] for t in response["tools"]] == [t["type"] for t in body["tools"]]  # echoed as declared
    if any(t["type"] == "web_search" for t in body["tools"]):
        assert any("left out of the prompt: tools of type web_search" in line for line in server.lines)


def test_namespaced_call_comes_back_with_its_namespace(http: httpx.Client) -> None:
    call = {"name": "multi_agent_v1.spawn_agent", "arguments": {"message": "run the tests"}}
    events = post(http, with_prompt("default", {"tool_call": call}))
    (item,) = final(events)["output"]
    assert (item["type"], item["namespace"], item["name"]) == ("function_call", "multi_agent_v1", "spawn_agent")
    assert json.loads(item["arguments"]) == {"message": "run the tests"}
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "spawn_agent"
    # A top-level function keeps its plain name and has no namespace.
    events = post(http, with_prompt("default", {"tool_call": {"name": "exec_command", "arguments": {"cmd": "ls"}}}))
    (item,) = final(events)["output"]
    assert item["name"] == "exec_command" and "namespace" not in item


def test_custom_and_local_shell_calls(http: httpx.Client) -> None:
    tools = [
        {"type": "custom", "name": "apply_patch", "description": "Edit files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /(.|\\n)*/'}},
        {"type": "local_shell"},
    ]  # fmt: skip
    patch = "*** Begin Patch\n*** End Patch"
    script = [
        {"tool_call": {"name": "apply_patch", "arguments": {"input": patch}}},
        {"tool_call": {"name": "local_shell", "arguments": {"command": ["ls", "-a"], "timeout_ms": 500}}},
    ]
    body = {"model": MODEL, "input": script_prompt(*script), "tools": tools, "stream": True, "store": False}
    events = post(http, body)
    custom, shell = final(events)["output"]
    assert (custom["type"], custom["name"], custom["input"]) == ("custom_tool_call", "apply_patch", patch)
    assert [e["input"] for e in events if e["type"] == "response.custom_tool_call_input.done"] == [patch]
    assert shell["type"] == "local_shell_call" and shell["action"]["command"] == ["ls", "-a"]
    assert shell["action"]["timeout_ms"] == 500
    # Their results, sent back with the calls, are accepted on the next turn.
    history = [
        {"role": "user", "content": "patch it"},
        custom,
        {"type": "custom_tool_call_output", "call_id": custom["call_id"], "output": "Done!"},
        shell,
        {"type": "local_shell_call_output", "id": shell["call_id"], "output": "a.txt"},
    ]
    answer = final(post(http, {"model": MODEL, "input": history, "tools": tools, "stream": True, "store": False}))
    assert answer["status"] == "completed"
    # A custom tool can be the named choice.
    choice = {"type": "custom", "name": "apply_patch"}
    forced = http.post("/v1/responses", json={"model": MODEL, "input": script_prompt(script[0]), "tools": tools, "tool_choice": choice})
    assert forced.status_code == 200, forced.text
    assert forced.json()["tool_choice"] == choice and forced.json()["output"][0]["type"] == "custom_tool_call"


def input_tokens(http: httpx.Client, items: list[dict[str, Any]]) -> int:
    """The scripted backend counts the prompt's words, message by message."""
    response = http.post("/v1/responses", json={"model": MODEL, "input": items, "store": False})
    assert response.status_code == 200, response.text
    tokens: int = response.json()["usage"]["input_tokens"]
    return tokens


def test_reasoning_items_go_back_into_the_prompt(http: httpx.Client) -> None:
    thought = "first I list the files then I answer"
    body = {
        "model": MODEL,
        "input": script_prompt({"reasoning": thought}, {"tool_call": {"name": "exec_command", "arguments": {"cmd": "ls"}}}),
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}],
        "include": ["reasoning.encrypted_content"],
        "stream": True,
        "store": False,
    }
    reasoning, call = final(post(http, body))["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"][0]["text"] == thought
    assert reasoning["encrypted_content"]
    history = [
        {"role": "user", "content": "list files"},
        reasoning,
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt"},
    ]
    foreign = {**reasoning, "encrypted_content": "gAAAAB-made-elsewhere", "content": []}
    with_thought = input_tokens(http, history)
    without = input_tokens(http, [history[0], foreign, *history[2:]])
    # "<think>first … answer</think>" before the call, against an empty text (which counts as one word).
    assert with_thought - without == len(thought.split()) - 1
    # Without include, no encrypted_content (and the item still comes back).
    plain = final(post(http, {**body, "include": []}))["output"][0]
    assert plain["type"] == "reasoning" and plain["encrypted_content"] is None


def test_developer_turns_after_the_first_are_user_turns(http: httpx.Client) -> None:
    opening = [{"role": "developer", "content": "Be brief."}, {"role": "developer", "content": "Use tools."}]
    later = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]
    developer = {"role": "developer", "content": "Now be verbose."}
    user = {"role": "user", "content": "again"}
    # Moved into a user turn, it gains its two-word prefix ("[developer message]").
    assert input_tokens(http, [*opening, *later, developer, user]) == input_tokens(http, [*opening, *later, user]) + 3 + 2
    assert input_tokens(http, [*opening, *later, user]) == input_tokens(http, [*later, user]) + 4


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, f"Hosted tool 'file_search' is not supported with {MODEL}.", "tools"),
        ({"tools": [{"type": "webbsearch"}]}, "Invalid value: 'webbsearch'. Supported values are: 'function', 'custom', ", "tools[0].type"),
        ({"reasoning": {"effort": "extreme"}}, "Invalid value: 'extreme'. Supported values are: 'none', 'minimal', ", "reasoning.effort"),
        ({"reasoning": {"summary": "brief"}}, "Invalid value: 'brief'. Supported values are: 'auto', 'concise', and 'detailed'.", "reasoning.summary"),
        ({"service_tier": "turbo"}, "Invalid value: 'turbo'. Supported values are: 'auto', 'default', ", "service_tier"),
    ],
)
def test_refusals_use_openai_wording(http: httpx.Client, extra: dict[str, Any], message: str, param: str) -> None:
    response = http.post("/v1/responses", json={"model": MODEL, "input": "hi", **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_accepted_settings_are_echoed(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "input": "hi",
        "reasoning": {"effort": "low", "summary": "auto"},
        "service_tier": "auto",
        "text": {"verbosity": "low"},
        "prompt_cache_key": "session-1",
        "client_metadata": {"turn_id": "t1"},
        "include": ["reasoning.encrypted_content"],
    }
    response = http.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["reasoning"] == {"effort": "low", "summary": "auto"} and data["text"]["verbosity"] == "low"
    assert data["prompt_cache_key"] == "session-1" and data["service_tier"] == "default"


def test_reasoning_items_of_other_shapes_and_oversized_ones(http: httpx.Client) -> None:
    """Reasoning items are untrusted input: parts of other shapes carry nothing,
    and an encoded value that inflates past the prompt limit is a 400, not
    gigabytes decoded on the event loop."""
    import base64
    import zlib

    odd = {"type": "reasoning", "content": ["x", {"type": "reasoning_text", "text": 5}], "summary": []}
    assert input_tokens(http, [{"role": "user", "content": "hi"}, odd]) > 0
    bomb = "modelyard.reasoning.v1:" + base64.urlsafe_b64encode(zlib.compress(b"a" * 2_000_000)).decode()
    items = [{"role": "user", "content": "hi"}, {"type": "reasoning", "summary": [], "encrypted_content": bomb}]
    response = http.post("/v1/responses", json={"model": MODEL, "input": items, "store": False})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input" and error["code"] == "limit_exceeded" and "reasoning items" in error["message"]
