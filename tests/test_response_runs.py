"""The Responses run state machine without a model: reasoning, text and
tool calls from text deltas become spec-valid output items and stream
events; input items become the chat conversation a backend takes."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from modelyard.adapters.base import Finished, TextDelta
from modelyard.router import reasoning
from modelyard.router.errors import APIError
from modelyard.router.response_input import chat_messages, normalize_input
from modelyard.router.response_runs import ResponseRun
from modelyard.router.response_tools import (
    ToolTarget,
    custom_arguments,
    custom_input,
    plan_tools,
    shell_action,
    shell_arguments,
)
from modelyard.schemas import responses as rs

from tests.conftest import REPO, openai_validator

RESPONSE = openai_validator("Response")
EVENT = openai_validator("ResponseStreamEvent")


def new_run(**fields: Any) -> ResponseRun:
    response = rs.ResponseObject(id="resp_test", created_at=0, status="in_progress", model="m", **fields)
    return ResponseRun(response, ["<think>", "</think>"], parse_tools=True)


def play(run: ResponseRun, pieces: list[str], finish_reason: str = "stop") -> list[dict[str, Any]]:
    events = run.created() + run.started()
    for piece in pieces:
        events += run.feed(TextDelta(piece))
    events += run.finish(Finished(finish_reason, prompt_tokens=10, completion_tokens=5))
    for event in events:
        error = jsonschema.exceptions.best_match(EVENT.iter_errors(json.loads(json.dumps(event))))
        assert error is None, f"{event['type']}: {error.message}"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def valid(response: dict[str, Any]) -> dict[str, Any]:
    error = jsonschema.exceptions.best_match(RESPONSE.iter_errors(response))
    assert error is None, error.message
    return response


def test_reasoning_text_and_tool_call_become_three_items() -> None:
    run = new_run()
    pieces = ["<th", "ink>Paris is", " in France.</think>", "\nLet me check.\n", "<tool_call>\n", '{"name": "get_weather", ', '"arguments": {"city": "Paris"}}\n</tool_call>']
    events = play(run, pieces)
    response = valid(run.snapshot())
    assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
    reasoning, message, call = response["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Paris is in France."}]
    assert message["content"][0]["text"].strip() == "Let me check."
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["call_id"].startswith("call_") and call["status"] == "completed"
    kinds = [e["type"] for e in events]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 3
    assert "response.reasoning_text.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert kinds[-1] == "response.completed" and response["usage"]["total_tokens"] == 15


def test_whitespace_around_a_tool_call_makes_no_message() -> None:
    run = new_run()
    play(run, ["\n\n", '<tool_call>{"name": "f", "arguments": {}}</tool_call>', "\n"])
    assert [item["type"] for item in valid(run.snapshot())["output"]] == ["function_call"]


def test_empty_output_is_an_empty_message_and_length_is_incomplete() -> None:
    run = new_run()
    events = play(run, [], finish_reason="length")
    response = valid(run.snapshot())
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "" and response["output"][0]["status"] == "incomplete"
    assert events[-1]["type"] == "response.incomplete"


def test_failure_and_cancel() -> None:
    run = new_run()
    run.created()
    run.feed(TextDelta("partial"))
    events = run.fail(APIError(500, "boom"))
    response = valid(run.snapshot())
    assert events[-1]["type"] == "response.failed" and response["error"] == {"code": "server_error", "message": "boom"}
    assert response["output"][0]["status"] == "incomplete"
    run = new_run(background=True)
    run.feed(TextDelta("partial"))
    run.cancel()
    assert valid(run.snapshot())["status"] == "cancelled"


def test_input_items_become_chat_messages() -> None:
    request = rs.CreateResponseRequest.model_validate(
        {
            "input": [
                {"role": "developer", "content": "Be terse."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ]
        }
    )
    items = normalize_input(request.input)
    assert all(item["id"] for item in items)
    assert chat_messages("Answer in French.", items) == [
        {"role": "system", "content": "Answer in French.\n\nBe terse."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}, "input[0].content[0]"),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
    ],
)
def test_unsupported_input_is_refused(item: dict[str, Any], param: str) -> None:
    request = rs.CreateResponseRequest.model_validate({"input": [item]})
    with pytest.raises(APIError) as caught:
        normalize_input(request.input)
    assert caught.value.status == 400 and caught.value.param == param


def responses_table() -> dict[str, str]:
    text = (REPO / "docs" / "compatibility.md").read_text()
    section = text.split("## `POST /v1/responses`", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            for name in re.findall(r"`([a-z_.]+)`", cells[0]):
                rows[name.split(".")[0]] = cells[1]
    return rows


def test_every_request_field_is_documented() -> None:
    rows = responses_table()
    missing = [name for name in rs.CreateResponseRequest.model_fields if name not in rows]
    assert not missing, f"docs/compatibility.md lacks rows for {missing}"
    for name in rs.NOT_SUPPORTED:
        assert rows[name].startswith("rejected"), f"{name} is rejected by the code but documented as {rows[name]!r}"
    assert {n for n, s in rows.items() if s.startswith("rejected")} == set(rs.NOT_SUPPORTED)


# --- what coding agents send (Codex): system turns, namespaces, custom tools, reasoning ---


def items_of(*raw: dict[str, Any]) -> list[dict[str, Any]]:
    return normalize_input(rs.CreateResponseRequest.model_validate({"input": list(raw)}).input)


def test_leading_developer_messages_merge_and_later_ones_become_user_turns() -> None:
    items = items_of(
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<skills/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
        {"type": "message", "role": "system", "content": "Sandbox is now read-only."},
        {"type": "message", "role": "user", "content": "Again"},
    )
    assert chat_messages(None, items) == [
        {"role": "system", "content": "You are Codex.\n\n<skills/>"},
        {"role": "user", "content": "<environment_context/>\n\nSay hello"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "[system message]\nSandbox is now read-only.\n\nAgain"},
    ]


def test_history_of_every_client_tool_becomes_calls_and_results() -> None:
    items = items_of(
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "spawn_agent", "namespace": "multi_agent_v1", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned", "namespace": "multi_agent_v1", "name": "spawn_agent"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "done"},
        {"type": "local_shell_call", "call_id": "c3", "status": "completed", "action": {"type": "exec", "command": ["ls"], "env": {}}},
        {"type": "local_shell_call_output", "id": "c3", "output": "a.txt"},
        {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "aGk="},
        {"type": "compaction", "encrypted_content": "opaque"},
    )
    messages = chat_messages(None, items)
    calls = [(m["tool_calls"][0]["function"]["name"], m["tool_calls"][0]["function"]["arguments"]) for m in messages if m.get("tool_calls")]
    assert calls == [
        ("multi_agent_v1.spawn_agent", "{}"),
        ("apply_patch", json.dumps({"input": "*** Begin Patch"})),
        ("local_shell", json.dumps({"command": ["ls"]})),
    ]
    assert [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"] == [("c1", "spawned"), ("c2", "done"), ("c3", "a.txt")]
    assert len(messages) == 7  # the image generation call and the compaction are not shown
    assert [item["type"] for item in items][-2:] == ["image_generation_call", "compaction"]  # but kept


def test_reasoning_of_the_current_turn_goes_back_into_the_prompt() -> None:
    tags = ["<think>", "</think>"]
    old = {"type": "reasoning", "summary": [], "encrypted_content": reasoning.seal("old thought")}
    mine = {"type": "reasoning", "summary": [], "encrypted_content": reasoning.seal("I should list files.")}
    theirs = {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAopaque-from-openai"}
    items = items_of(
        {"role": "user", "content": "first"},
        old,
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "list files"},
        mine,
        theirs,
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": '{"cmd": "ls"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
    )
    messages = chat_messages(None, items, tags)
    assert messages[1] == {"role": "assistant", "content": "ok"}  # an earlier turn's reasoning is left out
    assert messages[3]["content"] == "<think>I should list files.</think>" and messages[3]["tool_calls"]
    # Without reasoning tags the model has no place for it.
    assert chat_messages(None, items)[3]["content"] == ""


def test_reasoning_seal_round_trips_and_rejects_foreign_values() -> None:
    text = "Let me think… ünïcode"
    assert reasoning.unseal(reasoning.seal(text)) == text
    for foreign in (None, 3, "gAAAAB-openai", reasoning.MARKER + "!!!", reasoning.MARKER):
        assert reasoning.unseal(foreign) in (None, "")


def planned(tools: list[dict[str, Any]], **fields: Any) -> Any:
    return plan_tools(rs.CreateResponseRequest.model_validate({"input": "hi", "tools": tools, **fields}), "smol")


NAMESPACE = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents.",
    "tools": [
        {"type": "function", "name": "spawn_agent", "strict": False, "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}},
        {"type": "custom", "name": "note", "description": "Free text."},
    ],
}


def test_namespace_tools_are_flattened_and_hosted_ones_set_apart(caplog: pytest.LogCaptureFixture) -> None:
    exec_command = {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}
    with caplog.at_level("WARNING", "modelyard.responses"):
        plan = planned([exec_command, NAMESPACE, {"type": "web_search", "external_web_access": False}, {"type": "mcp", "server_label": "x"}])
    assert plan.calling is not None
    names = [t["function"]["name"] for t in plan.calling.tools]
    assert names == ["exec_command", "multi_agent_v1.spawn_agent", "multi_agent_v1.note"]
    assert plan.targets["multi_agent_v1.spawn_agent"] == ToolTarget("function", "spawn_agent", "multi_agent_v1")
    assert plan.targets["multi_agent_v1.note"] == ToolTarget("custom", "note", "multi_agent_v1")
    note = plan.calling.tools[2]["function"]["parameters"]
    assert note["required"] == ["input"] and note["properties"]["input"]["type"] == "string"
    assert plan.dropped == ["mcp"] and "tools of type mcp" in caplog.text
    assert [tool.type for _, tool in plan.hosted] == ["web_search"]  # for router/response_agent.py to plan (or drop)
    assert [tool["type"] for tool in plan.echo] == ["function", "namespace", "web_search", "mcp"]
    assert [path for _, path in plan.schemas][1] == "tools[1].tools[0].parameters"
    # Only hosted tools: nothing for the model to call.
    assert planned([{"type": "web_search"}]).calling is None


def test_custom_tool_grammars_and_named_choices() -> None:
    regex = {"type": "custom", "name": "digits", "format": {"type": "grammar", "syntax": "regex", "definition": "[0-9]+"}}
    lark = {"type": "custom", "name": "patch", "description": "Edit files.", "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "x"+'}}
    plan = planned([regex, lark], tool_choice={"type": "custom", "name": "patch"})
    assert plan.calling is not None and plan.calling.mode == "named" and plan.calling.name == "patch"
    by_name = {t["function"]["name"]: t["function"] for t in plan.calling.tools}
    assert by_name["digits"]["parameters"]["properties"]["input"]["pattern"] == "^([0-9]+)$" and by_name["digits"]["strict"]
    assert 'start: "x"+' in by_name["patch"]["description"] and not by_name["patch"]["strict"]
    # A namespaced function chosen by its own name.
    plan = planned([NAMESPACE], tool_choice={"type": "function", "name": "spawn_agent"})
    assert plan.calling is not None and plan.calling.name == "multi_agent_v1.spawn_agent"


@pytest.mark.parametrize(
    ("tools", "message", "param"),
    [
        ([{"type": "file_search", "vector_store_ids": ["vs_1"]}], "Hosted tool 'file_search' is not supported with smol.", "tools"),
        ([{"type": "frobnicate"}], "Invalid value: 'frobnicate'. Supported values are: 'function', 'custom', ", "tools[0].type"),
        ([{"type": "function", "name": "f"}, {"type": "function", "name": "f"}], "'f' is declared twice", "tools[1]"),
    ],
)
def test_refused_tools_use_openai_wording(tools: list[dict[str, Any]], message: str, param: str) -> None:
    with pytest.raises(APIError) as caught:
        planned(tools)
    assert message in caught.value.message and caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize(
    ("arguments", "command", "workdir", "timeout"),
    [
        ('{"command": ["ls", "-a"], "workdir": "/tmp", "timeout_ms": 500}', ["ls", "-a"], "/tmp", 500),
        ('{"command": "ls"}', ["ls"], None, None),  # a bare string is the whole command
        ('{"command": ["echo", 1], "workdir": 7, "timeout_ms": true}', ["echo", "1"], None, None),
        ("not json", [], None, None),
    ],
)
def test_shell_arguments_become_an_action_leaving_out_fields_of_the_wrong_type(
    arguments: str, command: list[str], workdir: str | None, timeout: int | None
) -> None:
    action = shell_action(arguments)
    assert (action.command, action.working_directory, action.timeout_ms) == (command, workdir, timeout)


def test_custom_and_shell_calls_round_trip_through_their_function_arguments() -> None:
    assert custom_input(custom_arguments("line 1\n\"quoted\"")) == "line 1\n\"quoted\""
    assert custom_input('{"other": 1}') == '{"other": 1}'  # no input string: the arguments as they came
    assert custom_input("free text") == "free text"
    action = {"type": "exec", "command": ["ls"], "working_directory": "/srv", "timeout_ms": 0, "env": {}}
    assert json.loads(shell_arguments(action)) == {"command": ["ls"], "workdir": "/srv", "timeout_ms": 0}
    assert shell_action(shell_arguments(action)).model_dump(mode="json") == action | {"user": None}


def test_calls_map_back_to_namespaced_custom_and_shell_items() -> None:
    plan = planned([NAMESPACE, {"type": "local_shell"}])
    response = rs.ResponseObject(id="resp_test", created_at=0, status="in_progress", model="m")
    run = ResponseRun(response, ["<think>", "</think>"], True, plan.targets, seal_reasoning=True)
    calls = [
        {"name": "multi_agent_v1.spawn_agent", "arguments": {"task": "tests"}},
        {"name": "multi_agent_v1.note", "arguments": {"input": "line 1\nline 2"}},
        {"name": "local_shell", "arguments": {"command": ["ls", "-la"], "workdir": "/tmp"}},
    ]
    pieces = ["<think>Three calls.</think>"] + [f"<tool_call>{json.dumps(c)}</tool_call>" for c in calls]
    events = play(run, pieces)
    thought, spawn, note, shell = valid(run.snapshot())["output"]
    assert reasoning.unseal(thought["encrypted_content"]) == "Three calls."
    assert (spawn["type"], spawn["namespace"], spawn["name"], json.loads(spawn["arguments"])) == (
        "function_call", "multi_agent_v1", "spawn_agent", {"task": "tests"}
    )
    assert (note["type"], note["namespace"], note["name"], note["input"]) == ("custom_tool_call", "multi_agent_v1", "note", "line 1\nline 2")
    assert shell["type"] == "local_shell_call" and shell["action"]["command"] == ["ls", "-la"]
    assert shell["action"]["working_directory"] == "/tmp" and shell["call_id"].startswith("call_")
    done = {e["type"]: e for e in events}
    assert done["response.custom_tool_call_input.done"]["input"] == "line 1\nline 2"
    assert done["response.function_call_arguments.done"]["name"] == "spawn_agent"
    # What the run returned, sent back as the next request's input, renders as the calls it was.
    history = normalize_input(rs.CreateResponseRequest.model_validate({"input": [{"role": "user", "content": "go"}, *run.snapshot()["output"]]}).input)
    messages = chat_messages(None, history, ["<think>", "</think>"])
    assert messages[1]["content"] == "<think>Three calls.</think>"
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == [c["name"] for c in calls]
