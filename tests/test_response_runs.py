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
from modelyard.router.errors import APIError
from modelyard.router.response_runs import ResponseRun, chat_messages, normalize_input
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
        {"role": "system", "content": "Answer in French."},
        {"role": "system", "content": "Be terse."},
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
        ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}, "input[0].content[0]"),
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
