"""The Messages surface's rendering of the agent loop, without a model or a
server: synthetic event sequences (router/events.py) go through
ServerToolRenderer, each stream event must parse as the anthropic SDK's
RawMessageStreamEvent, the SDK's own accumulator must rebuild from the stream
exactly the whole message of a request that does not stream, and the blocks
must be Anthropic's (server_tool_use, web_search_tool_result,
code_execution_tool_result, bash_code_execution_tool_result, citations). The
history side: an assistant turn sent back with those blocks becomes the
prompt's tool calls and tool results. End to end: tests/test_messages_agent.py."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import anthropic
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from modelyard.adapters.base import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    ChatRequest,
    Finished,
    PromptTokens,
    Sampling,
    TextDelta,
)
from modelyard.router.agent_loop import CALL_LIMIT_REACHED, agent_events
from modelyard.router.agent_plan import AgentPlan
from modelyard.router.agent_tools import (
    CodeOutcome,
    CommandResult,
    OutputFile,
    SearchOutcome,
    SearchSource,
    ShellOutcome,
)
from modelyard.router.anthropic_prompt import to_backend_messages
from modelyard.router.anthropic_server_blocks import ServerToolRenderer
from modelyard.router.errors import APIError
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    HostedCallDone,
    HostedCallStarted,
    PromptSize,
    ReasoningDelta,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.schemas import anthropic as an

STREAM_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
RAYS = SearchSource("local:rays.md", "Ray tracing", "Ray tracing follows rays of light from the eye into the scene.")
BVH = SearchSource("local:bvh.md", "BVH", "A bounding volume hierarchy speeds up ray queries.")
QUERY = {"query": "ray tracing"}


def plan(*tools: Any, max_rounds: int = 4) -> AgentPlan:
    return AgentPlan(tools=tools or ("web_search", "code_interpreter", "shell"), max_rounds=max_rounds)


def search(call_id: str, outcome: SearchOutcome, arguments: dict[str, Any] = QUERY, round: int = 1) -> list[Event]:
    return [HostedCallStarted(round, call_id, "web_search", arguments),
            HostedCallDone(round, call_id, "web_search", arguments, outcome)]


def run(events: list[Event], agent: AgentPlan | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The stream's events (checked against the SDK's types) and the whole message, which must be what the
    SDK's accumulator builds from the stream."""
    streamed = ServerToolRenderer("msg_1", "m", agent or plan(), session_idle=600)
    frames = streamed.opening()
    for event in events:
        frames += streamed.render(event)
    out = [f.data for f in frames + streamed.closing() if f.data["type"] != "ping"]
    snapshot = None
    for data in out:
        assert data["type"] == next(f.event for f in frames if f.data is data)
        snapshot = accumulate_event(event=STREAM_EVENT.validate_python(data), current_snapshot=snapshot, json_bufs={})
    whole = ServerToolRenderer("msg_1", "m", agent or plan(), session_idle=600)
    for event in events:
        whole.render(event)
    body = whole.result()
    message = anthropic.types.Message.model_validate(body)
    assert snapshot is not None
    rebuilt = anthropic.types.Message.model_validate(snapshot.to_dict())
    if body.get("container"):  # each renderer dates its container from when it finished
        rebuilt.container.expires_at = message.container.expires_at  # type: ignore[union-attr]
    assert rebuilt.model_dump() == message.model_dump()
    return out, body


def test_a_search_then_a_cited_answer() -> None:
    events = [PromptSize(10), ContentDelta("Let me look."),
              *search("call_s1", SearchOutcome("ray tracing", (RAYS, BVH))),
              ContentDelta("Rays follow light [1]."), Finish(30, 8, "stop")]
    out, body = run(events)
    assert [(e["type"], e.get("index")) for e in out] == [
        ("message_start", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_stop", 2),
        ("content_block_start", 3), ("content_block_delta", 3), ("content_block_delta", 3), ("content_block_stop", 3),
        ("message_delta", None), ("message_stop", None),
    ]
    assert out[4]["content_block"] == {"type": "server_tool_use", "id": "srvtoolu_s1", "name": "web_search", "input": {}}
    assert out[5]["delta"] == {"type": "input_json_delta", "partial_json": '{"query": "ray tracing"}'}
    result = out[7]["content_block"]
    assert result["type"] == "web_search_tool_result" and result["tool_use_id"] == "srvtoolu_s1"
    assert [(r["type"], r["url"], r["title"], r["page_age"]) for r in result["content"]] == [
        ("web_search_result", "local:rays.md", "Ray tracing", None), ("web_search_result", "local:bvh.md", "BVH", None)]
    assert base64.b64decode(result["content"][0]["encrypted_content"]).decode() == RAYS.text
    # The answer cites [1] only; the text before the search cites nothing.
    assert out[11]["delta"]["type"] == "citations_delta"
    assert out[11]["delta"]["citation"] == {
        "type": "web_search_result_location", "url": "local:rays.md", "title": "Ray tracing",
        "cited_text": RAYS.text, "encrypted_index": base64.b64encode(b"0").decode()}
    assert "citations" not in body["content"][0] and body["content"][3]["citations"] == [out[11]["delta"]["citation"]]
    assert [b["type"] for b in body["content"]] == ["text", "server_tool_use", "web_search_tool_result", "text"]
    assert body["content"][1]["input"] == QUERY
    assert body["stop_reason"] == "end_turn" and "container" not in body
    assert body["usage"]["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    assert out[-2]["usage"]["server_tool_use"] == body["usage"]["server_tool_use"]
    assert body["usage"]["input_tokens"] == 30 and body["usage"]["output_tokens"] == 8


def test_an_answer_that_cites_nothing_cites_every_result_it_was_given() -> None:
    _, body = run([PromptSize(3), *search("call_s", SearchOutcome("ray tracing", (RAYS, BVH))),
                   ContentDelta("Rays."), Finish(9, 2, "stop")])
    assert [c["url"] for c in body["content"][-1]["citations"]] == ["local:rays.md", "local:bvh.md"]
    assert len(body["content"][-1]["citations"][1]["cited_text"]) <= 150


def test_code_that_wrote_a_file_shows_it_and_the_container() -> None:
    plot = OutputFile("file-abc", "plot.png", 120, "image/png")
    outcome = CodeOutcome("print(2 + 2)", stdout="4\n", exit_code=0, files=(plot,), session_id="sess_9")
    arguments = {"code": "print(2 + 2)"}
    events = [PromptSize(5), HostedCallStarted(1, "call_c", "code_interpreter", arguments),
              HostedCallDone(1, "call_c", "code_interpreter", arguments, outcome), ContentDelta("4."), Finish(9, 3, "stop")]
    out, body = run(events, plan("code_interpreter"))
    assert body["content"][0] == {"type": "server_tool_use", "id": "srvtoolu_c", "name": "code_execution", "input": arguments}
    assert body["content"][1] == {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_c", "content": {
        "type": "code_execution_result", "stdout": "4\n", "stderr": "", "return_code": 0,
        "content": [{"type": "code_execution_output", "file_id": "file-abc"}]}}
    assert "citations" not in body["content"][2] and "server_tool_use" not in body["usage"]
    assert body["container"]["id"] == "sess_9" and body["container"]["expires_at"].endswith("Z")
    assert out[-2]["delta"]["container"]["id"] == "sess_9"
    anthropic.types.Container.model_validate(body["container"])


def test_bash_commands_run_as_one_bash_code_execution() -> None:
    arguments = {"commands": ["ls", "echo hi"]}
    outcome = ShellOutcome(("ls", "echo hi"), (CommandResult("ls", "a.txt\n", "", 0), CommandResult("echo hi", "hi\n", "", 0)),
                           session_id="sess_2")
    _, body = run([PromptSize(5), HostedCallStarted(1, "call_b", "shell", arguments),
                   HostedCallDone(1, "call_b", "shell", arguments, outcome), Finish(9, 0, "stop")], plan("shell"))
    assert body["content"][0]["name"] == "bash_code_execution" and body["content"][0]["input"] == {"command": "ls\necho hi"}
    assert body["content"][1]["type"] == "bash_code_execution_tool_result"
    assert body["content"][1]["content"] == {"type": "bash_code_execution_result", "stdout": "a.txt\nhi\n", "stderr": "",
                                             "return_code": 0, "content": []}
    assert len(body["content"]) == 2  # an empty answer after the blocks adds no text block
    assert body["container"]["id"] == "sess_2"


@pytest.mark.parametrize(("outcome", "arguments", "error_code"), [
    (SearchOutcome("ray tracing", error="local did not answer within 5s"), QUERY, "unavailable"),
    (SearchOutcome("", error="give a non-empty `query` string"), {}, "invalid_tool_input"),
    (SearchOutcome("", error=CALL_LIMIT_REACHED), QUERY, "max_uses_exceeded"),
])
def test_failed_searches_are_error_objects_and_the_answer_still_comes(outcome: SearchOutcome, arguments: dict[str, Any],
                                                                      error_code: str) -> None:
    _, body = run([PromptSize(3), *search("call_f", outcome, arguments), ContentDelta("No luck."), Finish(9, 2, "stop")])
    assert body["content"][0]["input"] == arguments
    assert body["content"][1]["content"] == {"type": "web_search_tool_result_error", "error_code": error_code}
    assert body["content"][2] == {"type": "text", "text": "No luck."}  # no results: nothing to cite
    assert body["usage"]["server_tool_use"]["web_search_requests"] == (1 if error_code == "unavailable" else 0)


@pytest.mark.parametrize(("outcome", "content"), [
    (CodeOutcome("1/0", stderr="ZeroDivisionError: division by zero\n", error="ZeroDivisionError: division by zero",
                 exit_code=1, session_id="s"),
     {"type": "code_execution_result", "stdout": "", "stderr": "ZeroDivisionError: division by zero\n", "return_code": 1,
      "content": []}),
    (CodeOutcome("while True: pass", error="timeout", timed_out=True, session_id="s"),
     {"type": "code_execution_tool_result_error", "error_code": "execution_time_exceeded"}),
    (CodeOutcome("x", error="the sandbox is not available", session_id="s"),
     {"type": "code_execution_tool_result_error", "error_code": "unavailable"}),
])
def test_code_failures(outcome: CodeOutcome, content: dict[str, Any]) -> None:
    arguments = {"code": outcome.code}
    _, body = run([PromptSize(3), HostedCallStarted(1, "call_x", "code_interpreter", arguments),
                   HostedCallDone(1, "call_x", "code_interpreter", arguments, outcome), ContentDelta("Done."),
                   Finish(9, 2, "stop")], plan("code_interpreter"))
    assert body["content"][1]["content"] == content


def test_the_rounds_ran_out_is_pause_turn_and_each_round_keeps_its_blocks() -> None:
    events = [PromptSize(3), ReasoningDelta("search first"), *search("call_1", SearchOutcome("ray tracing", (RAYS,))),
              ReasoningDelta("again"), *search("call_2", SearchOutcome("bvh", (BVH,)), {"query": "bvh"}, round=2),
              ContentDelta("See [1]."), Finish(20, 9, "stop")]
    _, body = run(events, plan("web_search", max_rounds=2))
    assert [b["type"] for b in body["content"]] == ["thinking", "server_tool_use", "web_search_tool_result", "thinking",
                                                    "server_tool_use", "web_search_tool_result", "text"]
    assert body["content"][0]["thinking"] == "search first" and body["content"][0]["signature"]
    assert body["stop_reason"] == "pause_turn"
    assert [c["url"] for c in body["content"][-1]["citations"]] == ["local:rays.md"]
    assert body["usage"]["server_tool_use"]["web_search_requests"] == 2
    _, fewer = run(events, plan("web_search", max_rounds=3))
    assert fewer["stop_reason"] == "end_turn"


def test_a_client_tool_call_after_a_search_is_tool_use() -> None:
    events = [PromptSize(3), *search("call_s", SearchOutcome("ray tracing", (RAYS,))), ToolCallOpened(0, "call_w", "Write"),
              ToolArgumentsDelta(0, '{"path": "a.md"}'), Finish(9, 4, "stop", tool_calls=1)]
    _, body = run(events)
    assert body["content"][-1] == {"type": "tool_use", "id": "toolu_w", "name": "Write", "input": {"path": "a.md"}}
    assert body["stop_reason"] == "tool_use"


# --- an assistant turn sent back ----------------------------------------------


def prompt(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = an.MessagesRequest.model_validate({"max_tokens": 5, "messages": [
        {"role": "user", "content": "What is ray tracing?"}, {"role": "assistant", "content": content},
        {"role": "user", "content": "Thanks"}]})
    return to_backend_messages(body, None)[1:-1]


def test_a_search_sent_back_is_the_tool_exchange_the_model_read() -> None:
    _, body = run([PromptSize(3), ContentDelta("Looking."), *search("call_s", SearchOutcome("ray tracing", (RAYS, BVH))),
                   ContentDelta("See [1]."), Finish(9, 2, "stop")])
    assert prompt(body["content"]) == [
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_s", "type": "function", "function": {"name": "web_search", "arguments": '{"query": "ray tracing"}'}}]},
        {"role": "tool", "tool_call_id": "call_s", "content": SearchOutcome("ray tracing", (RAYS, BVH)).for_model(8000)},
        {"role": "assistant", "content": "See [1]."},
    ]


def test_code_and_bash_sent_back() -> None:
    code = [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "code_execution", "input": {"code": "print(4)"}},
            {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_1", "content": {
                "type": "code_execution_result", "stdout": "4\n", "stderr": "", "return_code": 0,
                "content": [{"type": "code_execution_output", "file_id": "file-1"}]}},
            {"type": "server_tool_use", "id": "srvtoolu_2", "name": "bash_code_execution", "input": {"command": "ls"}},
            {"type": "bash_code_execution_tool_result", "tool_use_id": "srvtoolu_2", "content": {
                "type": "bash_code_execution_tool_result_error", "error_code": "execution_time_exceeded"}}]
    got = prompt(code)
    assert got[0]["tool_calls"][0]["function"] == {"name": "code_interpreter", "arguments": '{"code": "print(4)"}'}
    assert got[1] == {"role": "tool", "tool_call_id": "call_1", "content": "stdout:\n4\n\nfiles written: file-1"}
    assert got[2]["tool_calls"][0]["function"] == {"name": "shell", "arguments": '{"commands": ["ls"]}'}
    assert got[3]["content"] == "error: execution_time_exceeded"
    # An encrypted_content of Anthropic's own (not ours) keeps the result's title and URL.
    theirs = [{"type": "server_tool_use", "id": "srvtoolu_3", "name": "web_search", "input": {"query": "q"}},
              {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_3", "content": [
                  {"type": "web_search_result", "url": "https://a.example/", "title": "A", "encrypted_content": "Eq0K!!"}]}]
    assert prompt(theirs)[1]["content"] == "[1] A\nURL: https://a.example/\n"


def test_a_text_editor_call_sent_back_is_refused() -> None:
    editor = [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "text_editor_code_execution",
               "input": {"command": "view", "path": "a.md"}}]
    with pytest.raises(APIError) as refused:
        prompt(editor)
    assert refused.value.status == 400 and "text_editor_code_execution" in refused.value.message
    assert "no text editor" in refused.value.message


def test_server_blocks_in_a_user_turn_are_refused() -> None:
    body = an.MessagesRequest.model_validate({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}]}]})
    with pytest.raises(APIError) as refused:
        to_backend_messages(body, None)
    assert "'server_tool_use' are not supported here" in refused.value.message
    assert json.dumps(refused.value.body("/v1/messages")["error"]["type"]) == '"invalid_request_error"'


# --- the loop's call cap (AgentPlan.max_uses: Anthropic's max_uses) -------------


def test_calls_past_the_cap_are_refused_and_the_tool_is_no_longer_offered() -> None:
    offered: list[list[str] | None] = []
    ran: list[dict[str, Any]] = []

    async def model(request: ChatRequest) -> Any:
        offered.append(None if request.tools is None else [t["function"]["name"] for t in request.tools.tools])
        yield PromptTokens(3)
        if request.tools is None:
            yield TextDelta("Answer.")
        else:
            for query in ("one", "two"):
                yield TextDelta(TOOL_CALL_START + json.dumps({"name": "web_search", "arguments": {"query": query}}) + TOOL_CALL_END)
        yield Finished("stop", 3, 2)

    class Runner:
        async def run(self, tool: Any, arguments: dict[str, Any]) -> SearchOutcome:
            ran.append(arguments)
            return SearchOutcome(arguments["query"], (RAYS,))

    async def events() -> list[Event]:
        capped = AgentPlan(tools=("web_search",), max_rounds=4, max_uses={"web_search": 1})
        request = ChatRequest(messages=[{"role": "user", "content": "hi"}], sampling=Sampling(max_tokens=50))
        return [e async for e in agent_events(model, request, capped, Runner(), [])]

    seen = asyncio.run(events())
    done = [e for e in seen if isinstance(e, HostedCallDone)]
    assert ran == [{"query": "one"}]
    assert [d.outcome.error for d in done] == [None, CALL_LIMIT_REACHED]
    assert offered == [["web_search"], None]  # round 2 offers nothing: the model must answer
    assert isinstance(seen[-1], Finish) and seen[-2] == ContentDelta("Answer.")
