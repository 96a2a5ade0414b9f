"""What the Messages surface makes of the fields coding agents send —
system messages anywhere, thinking in every form, context_management,
output_config, server tools, cache_control, beta headers — on the scripted
backend: the `echo` model answers with the JSON of what the router sent it,
the `fake` model plays scripts (reasoning budgets, thinking blocks and their
signature_delta). The recorded Claude Code requests (tests/data/claude-code)
are replayed here too; against the real model in test_claude_code.py."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from modelyard.adapters.system_messages import has_late_system, merged_system

from tests.claude_code import recorded
from tests.conftest import script, scripted_model_toml

if TYPE_CHECKING:  # the SDK is imported by the claude fixture, on the xdist worker that runs it (2.7 s of CPU)
    import anthropic

CONFIG = (
    scripted_model_toml("fake")
    + scripted_model_toml("echo", options="echo = true\n")
    + scripted_model_toml("plain", extra="reasoning_tags = []\n", options="echo = true\n")
)
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def seen(http: httpx.Client, model: str = "echo", **body: Any) -> dict[str, Any]:
    """What the backend was sent for this request (the echo model's answer)."""
    response = http.post("/v1/messages", json={"model": model, "max_tokens": 50, "messages": HI, **body})
    assert response.status_code == 200, response.text
    text = response.json()["content"][-1]["text"]
    data: dict[str, Any] = json.loads(text)
    return data


def stream_events(http: httpx.Client, body: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    with http.stream("POST", "/v1/messages", json={"stream": True, **body}, **kwargs) as response:
        assert response.status_code == 200, response.read().decode()
        lines = [line for line in response.iter_lines() if line]
    names = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names
    return datas


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    """message_start … message_stop, each block started, delta'd and stopped in order."""
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], kinds
    open_index = None
    next_index = 0
    for event in events[1:-2]:
        if event["type"] == "content_block_start":
            assert open_index is None and event["index"] == next_index, events
            open_index = event["index"]
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index, events
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index, events
            open_index, next_index = None, next_index + 1
    assert open_index is None and next_index >= 1, events


def anthropic_error(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    assert body["error"]["message"] == message, body


# --- system messages -----------------------------------------------------------------


def test_system_messages_anywhere_reach_the_model_in_place(http: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Mid-conversation note."},
        {"role": "assistant", "content": "Hello."},
        {"role": "system", "content": [{"type": "text", "text": "Late note.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Go on."},
    ]
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.1c0; cc_entrypoint=sdk-cli;"},
        {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief."},
    ]
    got = seen(http, messages=messages, system=system)["messages"]
    assert got == [
        {"role": "system", "content": "You are an agent.\nBe brief."},  # the billing header is not the model's business
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Mid-conversation note."},
        {"role": "assistant", "content": "Hello."},
        {"role": "system", "content": "Late note."},
        {"role": "user", "content": "Go on."},
    ]


def test_merged_system_for_templates_that_take_one_leading_system_message() -> None:
    # What the adapters fall back on when a chat template rejects late system messages.
    conversation = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "B"},
    ]
    assert has_late_system(conversation)
    assert merged_system(conversation) == [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "Hi"}]
    assert not has_late_system([{"role": "system", "content": "A"}, {"role": "user", "content": "Hi"}])
    assert merged_system([{"role": "user", "content": "Hi"}, {"role": "system", "content": "B"}])[0] == {
        "role": "system",
        "content": "B",
    }


# --- thinking ------------------------------------------------------------------------


THINKING_HISTORY = [
    {"role": "user", "content": "One?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "first thought", "signature": "sig-1"},
            {"type": "text", "text": "Answer one."},
        ],
    },
    {"role": "user", "content": "Two?"},
    {
        "role": "assistant",
        "content": [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "second thought", "signature": "sig-2"},
            {"type": "text", "text": "Answer two."},
        ],
    },
    {"role": "user", "content": "Three?"},
]


def assistant_turns(got: dict[str, Any]) -> list[str]:
    return [m["content"] for m in got["messages"] if m["role"] == "assistant"]


def test_earlier_thinking_is_dropped_without_context_management(http: httpx.Client) -> None:
    assert assistant_turns(seen(http, messages=THINKING_HISTORY)) == ["Answer one.", "Answer two."]


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        ("all", ["<think>first thought</think>\nAnswer one.", "<think>second thought</think>\nAnswer two."]),
        ({"type": "all"}, ["<think>first thought</think>\nAnswer one.", "<think>second thought</think>\nAnswer two."]),
        ({"type": "thinking_turns", "value": 1}, ["Answer one.", "<think>second thought</think>\nAnswer two."]),
        (None, ["Answer one.", "<think>second thought</think>\nAnswer two."]),  # Anthropic's default: the last turn
        ({"type": "thinking_turns", "value": 0}, ["Answer one.", "Answer two."]),
    ],
)
def test_clear_thinking_keeps_the_latest_turns_thinking(http: httpx.Client, keep: Any, expected: list[str]) -> None:
    edit: dict[str, Any] = {"type": "clear_thinking_20251015"}
    if keep is not None:
        edit["keep"] = keep
    # Another edit type with its own `keep` (Anthropic's tool-use clearing): accepted, not applied.
    others = [
        {
            "type": "clear_tool_uses_20250919",
            "trigger": {"type": "input_tokens", "value": 1000},
            "keep": {"type": "tool_uses", "value": 3},
            "clear_at_least": {"type": "input_tokens", "value": 500},
        }
    ]
    got = seen(http, messages=THINKING_HISTORY, context_management={"edits": [edit, *others]})
    assert assistant_turns(got) == expected


def test_kept_thinking_needs_reasoning_tags(http: httpx.Client) -> None:
    got = seen(http, "plain", messages=THINKING_HISTORY, context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]})
    assert assistant_turns(got) == ["Answer one.", "Answer two."]


@pytest.mark.parametrize(
    ("thinking", "reasoning"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, {"enabled": True, "budget_tokens": 2048}),
        ({"type": "adaptive"}, {"enabled": True, "budget_tokens": None}),
        ({"type": "adaptive", "display": "summarized"}, {"enabled": True, "budget_tokens": None}),
        ({"type": "disabled"}, {"enabled": False, "budget_tokens": 0}),
        (None, None),
    ],
)
def test_thinking_maps_onto_the_reasoning_tags(http: httpx.Client, thinking: Any, reasoning: Any) -> None:
    body = {"thinking": thinking} if thinking is not None else {}
    assert seen(http, **body)["reasoning"] == reasoning
    assert seen(http, "plain", **body)["reasoning"] is None  # no reasoning tags: a no-op


def signature(thinking: str) -> str:
    return base64.b64encode(hashlib.sha256(b"modelyard-thinking\0" + thinking.encode()).digest()).decode()


def test_thinking_block_streams_thinking_and_signature_deltas(http: httpx.Client) -> None:
    body = {
        "model": "fake",
        "max_tokens": 50,
        "thinking": {"type": "adaptive"},
        "messages": [{"role": "user", "content": script("<think>", "Let me", " see.", "</think>", "Yes.")}],
    }
    events = stream_events(http, body)
    assert_well_formed(events)
    blocks = [e for e in events if e["type"].startswith("content_block")]
    assert blocks[0] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    deltas = [e["delta"] for e in blocks if e["type"] == "content_block_delta" and e["index"] == 0]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "Let me"},
        {"type": "thinking_delta", "thinking": " see."},
        {"type": "signature_delta", "signature": signature("Let me see.")},
    ]
    assert blocks[len(deltas) + 1] == {"type": "content_block_stop", "index": 0}
    assert blocks[-2]["delta"] == {"type": "text_delta", "text": "Yes."}
    whole = http.post("/v1/messages", json={**body, "stream": False}).json()
    assert whole["content"] == [
        {"type": "thinking", "thinking": "Let me see.", "signature": signature("Let me see.")},
        {"type": "text", "text": "Yes."},
    ]


def test_the_sdk_assembles_thinking_with_its_signature(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="fake",
        max_tokens=50,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": script({"reasoning": "hmm"}, "Done.")}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == "hmm"
    assert final.content[0].signature == signature("hmm")
    assert final.content[1].type == "text" and final.content[1].text == "Done."


def test_budget_tokens_closes_the_thinking(http: httpx.Client) -> None:
    pieces = ["<think>", "a", "b", "c", "d", "</think>", "Answer."]
    body = {"model": "fake", "max_tokens": 50, "messages": [{"role": "user", "content": script(*pieces)}]}
    budgeted = http.post("/v1/messages", json={**body, "thinking": {"type": "enabled", "budget_tokens": 2}}).json()
    assert [b.get("thinking", b.get("text")) for b in budgeted["content"]] == ["ab", "Answer."]
    free = http.post("/v1/messages", json={**body, "thinking": {"type": "adaptive"}}).json()
    assert [b.get("thinking", b.get("text")) for b in free["content"]] == ["abcd", "Answer."]
    disabled = http.post("/v1/messages", json={**body, "thinking": {"type": "disabled"}}).json()
    assert disabled["content"] == [{"type": "text", "text": "Answer."}]


def test_omitted_thinking_keeps_only_the_signature(http: httpx.Client) -> None:
    body = {
        "model": "fake",
        "max_tokens": 50,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "messages": [{"role": "user", "content": script({"reasoning": "secret"}, "Hi.")}],
    }
    events = stream_events(http, body)
    assert_well_formed(events)
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
    assert deltas == [{"type": "signature_delta", "signature": signature("secret")}]
    whole = http.post("/v1/messages", json={**body, "stream": False}).json()
    assert whole["content"][0] == {"type": "thinking", "thinking": "", "signature": signature("secret")}


# --- output_config, tools, the rest ---------------------------------------------------------


def test_output_config_format_is_a_json_schema_constraint(http: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fmt = {"type": "json_schema", "schema": schema}
    assert seen(http, output_config={"effort": "high", "format": fmt})["json_schema"] == schema
    assert seen(http, output_format=fmt)["json_schema"] == schema
    assert seen(http, output_config={"effort": "low"})["json_schema"] is None
    both = http.post("/v1/messages", json={"model": "echo", "max_tokens": 5, "messages": HI, "output_config": {"format": fmt}, "output_format": fmt})
    anthropic_error(both, "Send either output_config.format or output_format, not both.")
    deep = {"type": "json_schema", "schema": {"type": "string", "maxLength": 10**9}}
    too_big = http.post("/v1/messages", json={"model": "echo", "max_tokens": 5, "messages": HI, "output_config": {"format": deep}})
    assert too_big.status_code == 400 and "output_config.format.schema.maxLength" in too_big.json()["error"]["message"]


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
WEB_FETCH = {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 5}
BASH = {
    "name": "Bash",
    "description": "Run a command",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
        "additionalProperties": False,
    },
    "cache_control": {"type": "ephemeral"},
}


def test_server_tools_this_server_does_not_run_are_left_out_with_a_warning(server: Any, http: httpx.Client) -> None:
    got = seen(http, tools=[WEB_FETCH, BASH, {"type": "custom", **BASH, "name": "Bash2"}])
    assert [t["name"] for t in got["tools"]] == ["Bash", "Bash2"]
    assert got["tools"][0]["parameters"] == {k: v for k, v in BASH["input_schema"].items() if k != "$schema"}
    # The server's log is read by another thread: give it a moment to store the line.
    deadline = time.monotonic() + 10
    warned = False
    while not warned and time.monotonic() < deadline:
        warned = any(
            "server tools left out of the prompt" in line and "web_fetch (web_fetch_20250910)" in line
            for line in list(server.lines)
        )
        if not warned:
            time.sleep(0.05)
    assert warned
    only_server = seen(http, tools=[WEB_FETCH, {"type": "code_execution_20260120", "name": "code_execution"}])
    assert only_server["tools"] is None


@pytest.mark.parametrize(("tool", "hosted"), [(WEB_SEARCH, "web_search"),
                                               ({"type": "code_execution_20250825", "name": "code_execution"}, "shell")])
def test_server_tools_the_config_does_not_enable_are_refused(http: httpx.Client, tool: dict[str, Any], hosted: str) -> None:
    # As Claude Code's WebSearch tool asks: its own request, forcing the server tool (docs/compatibility.md).
    body = {"model": "echo", "max_tokens": 5, "messages": HI, "tools": [BASH, tool],
            "tool_choice": {"type": "tool", "name": tool["name"]}}
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert f"'{tool['type']}' (tools.1)" in error["error"]["message"] and f"'{hosted}'" in error["error"]["message"]
    # tool_choice "none" turns the tools off: nothing to refuse.
    assert seen(http, tools=[tool], tool_choice={"type": "none"})["tools"] is None


def test_a_tool_over_the_limits_gets_free_arguments_unless_strict(http: httpx.Client) -> None:
    huge = {"name": "Workflow", "input_schema": {"type": "object", "properties": {"script": {"type": "string", "maxLength": 524288}}}}
    got = seen(http, tools=[BASH, huge])
    assert [t["name"] for t in got["tools"]] == ["Bash", "Workflow"] and got["free_arguments"] == ["Workflow"]
    strict = http.post("/v1/messages", json={"model": "echo", "max_tokens": 5, "messages": HI, "tools": [BASH, {**huge, "strict": True}]})
    assert strict.status_code == 400 and strict.json()["error"]["message"].startswith("tools.1.input_schema.properties.script.maxLength")


def test_cache_control_metadata_betas_and_the_rest_are_accepted(http: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Run it", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}, "cache_control": {"type": "ephemeral"}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt", "cache_control": {"type": "ephemeral"}}], "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]
    body = {
        "model": "echo",
        "max_tokens": 32000,
        "messages": messages,
        "tools": [BASH],
        "cache_control": {"type": "ephemeral"},
        "metadata": {"user_id": json.dumps({"device_id": "0" * 64, "session_id": "s"})},
        "service_tier": "auto",
        "container": None,
        "mcp_servers": [],
        "inference_geo": "us",
        "speed": "standard",
    }
    headers = {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14", "anthropic-version": "2023-06-01"}
    response = http.post("/v1/messages", params={"beta": "true"}, json=body, headers=headers)
    assert response.status_code == 200, response.text
    got = json.loads(response.json()["content"][0]["text"])
    assert got["messages"][1]["tool_calls"][0]["function"] == {"name": "Bash", "arguments": '{"command": "ls"}'}
    assert got["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"}
    assert got["max_tokens"] == 32000


def test_message_start_reports_the_prompts_tokens(http: httpx.Client) -> None:
    body = {"model": "fake", "max_tokens": 20, "system": "You are brief.", "messages": [{"role": "user", "content": script("a", "b")}]}
    count = http.post("/v1/messages/count_tokens", json=body).json()["input_tokens"]
    events = stream_events(http, body)
    assert_well_formed(events)
    assert count > 0 and events[0]["message"]["usage"]["input_tokens"] == count
    assert events[-2]["usage"]["input_tokens"] == count


def test_errors_use_anthropics_wording(http: httpx.Client) -> None:
    base = {"model": "echo", "max_tokens": 5, "messages": HI}
    anthropic_error(http.post("/v1/messages", json={**base, "frobnicate": 1}), "frobnicate: Extra inputs are not permitted")
    bad_role = {**base, "messages": [{"role": "robot", "content": "x"}]}
    anthropic_error(http.post("/v1/messages", json=bad_role), "messages.0.role: Input should be 'user', 'assistant' or 'system'")
    no_budget = {**base, "thinking": {"type": "enabled"}}
    anthropic_error(http.post("/v1/messages", json=no_budget), "thinking.enabled.budget_tokens: Field required")
    anthropic_error(http.post("/v1/messages", json={"model": "echo", "messages": HI}), "max_tokens: Field required")
    image = {**base, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]}
    anthropic_error(http.post("/v1/messages", json=image), "The model 'echo' does not take images: messages.0.content.0 is an image.")


# --- what Claude Code sends -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "short", "bash-call", "bash-result"])
def test_recorded_claude_code_requests_are_served(http: httpx.Client, name: str) -> None:
    request = recorded(name)
    body = {**request["body"], "model": "fake"}
    events = stream_events(http, body, params=request["query"], headers=request["headers"])
    assert_well_formed(events)
    assert events[0]["message"]["usage"]["input_tokens"] > 0
    counted = http.post("/v1/messages/count_tokens", params=request["query"], headers=request["headers"], json=body)
    assert counted.status_code == 200 and counted.json()["input_tokens"] == events[0]["message"]["usage"]["input_tokens"]
