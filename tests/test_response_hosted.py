"""The Responses rendering of the agent loop without a model or a sandbox:
synthetic event sequences (what router/agent_loop.py yields) become
spec-valid hosted call items, stream events and citations, and those items
in a later request's history become the tool calls and results they were.
The end-to-end cases are in tests/test_responses_agent.py."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from modelyard.router import events as ev
from modelyard.router.agent_tools import CodeOutcome, CommandResult, OutputFile, SearchOutcome, SearchSource, ShellOutcome
from modelyard.router.response_hosted import AgentRun, shown_response
from modelyard.router.response_input import chat_messages, normalize_input
from modelyard.schemas import responses as rs
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionShellToolCallOutput,
    ResponseFunctionWebSearch,
    ResponseOutputMessage,
)

from tests.conftest import openai_validator

RESPONSE = openai_validator("Response")
EVENT = openai_validator("ResponseStreamEvent")
CONTAINER = "cntr_0123"
FILES_URL = "http://127.0.0.1:9/v1/files"
ALL = ["web_search_call.action.sources", "code_interpreter_call.outputs"]
SOURCES = (
    SearchSource("https://docs.example/paris.md", "Paris", "Paris is the capital of France."),
    SearchSource("https://docs.example/lyon.md", "Lyon", "Lyon is in France."),
)
PLOT = OutputFile("file-plot", "plot.png", 120, "image/png")
TABLE = OutputFile("file-table", "table.csv", 30, "text/csv")


def new_run(include: list[str] | None = None) -> AgentRun:
    response = rs.ResponseObject(id="resp_test", created_at=0, status="in_progress", model="m")
    return AgentRun(response, ["<think>", "</think>"], True, container_id=CONTAINER, files_url=FILES_URL, include=include or [])


def text(*pieces: str) -> list[ev.Event]:
    return [ev.ContentDelta(piece) for piece in pieces]


def call(tool: Any, arguments: dict[str, Any], outcome: Any, call_id: str = "call_1", round_number: int = 1) -> list[ev.Event]:
    return [ev.HostedCallStarted(round_number, call_id, tool, arguments), ev.HostedCallDone(round_number, call_id, tool, arguments, outcome)]


def play(run: AgentRun, events: list[ev.Event]) -> list[dict[str, Any]]:
    out = run.created() + run.started()
    for event in [ev.PromptSize(10), *events, ev.Finish(30, 12, "stop")]:
        out += run.apply(event)
    for event in out:
        error = jsonschema.exceptions.best_match(EVENT.iter_errors(json.loads(json.dumps(event))))
        assert error is None, f"{event['type']}: {error.message}"
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def valid(response: dict[str, Any]) -> dict[str, Any]:
    error = jsonschema.exceptions.best_match(RESPONSE.iter_errors(response))
    assert error is None, error.message
    Response.model_validate(response)  # and the SDK reads it
    return response


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_search_becomes_a_web_search_call_and_the_answer_cites_its_sources() -> None:
    run = new_run([ALL[0]])
    events = play(run, text("Let me look.") + call("web_search", {"query": "capital of France"}, SearchOutcome("capital of France", SOURCES))
                  + text("Paris [1].", " See https://docs.example/lyon.md"))  # fmt: skip
    response = valid(run.snapshot())
    before, search, answer = response["output"]
    assert before["content"][0]["text"] == "Let me look." and before["status"] == "completed"
    assert search["type"] == "web_search_call" and search["id"].startswith("ws_") and search["status"] == "completed"
    assert search["action"] == {"type": "search", "query": "capital of France", "queries": ["capital of France"],
                                "sources": [{"type": "url", "url": s.url} for s in SOURCES]}  # fmt: skip
    sequence = [k for k in kinds(events) if "web_search_call" in k]
    assert sequence == ["response.web_search_call.in_progress", "response.web_search_call.searching", "response.web_search_call.completed"]
    part = answer["content"][0]
    assert part["text"] == "Paris [1]. See https://docs.example/lyon.md"
    assert part["annotations"] == [
        {"type": "url_citation", "start_index": 6, "end_index": 9, "url": SOURCES[0].url, "title": "Paris"},
        {"type": "url_citation", "start_index": 15, "end_index": 15 + len(SOURCES[1].url), "url": SOURCES[1].url, "title": "Lyon"},
    ]
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [(e["annotation_index"], e["output_index"], e["annotation"]) for e in added] == [(0, 2, part["annotations"][0]), (1, 2, part["annotations"][1])]
    done = [e for e in events if e["type"] == "response.output_text.done"][-1]  # the answer's
    assert kinds(events).index("response.output_text.annotation.added") < events.index(done)
    assert done["item_id"] == answer["id"]
    typed = Response.model_validate(response).output
    assert isinstance(typed[1], ResponseFunctionWebSearch) and isinstance(typed[2], ResponseOutputMessage)


def test_sources_are_shown_only_when_included_but_always_stored() -> None:
    run = new_run()
    events = play(run, call("web_search", {"query": "q"}, SearchOutcome("q", SOURCES)) + text("Answer."))
    search = valid(run.snapshot())["output"][0]
    assert "sources" not in search["action"]
    item_done = next(e for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "web_search_call")
    assert "sources" not in item_done["item"]["action"]
    stored = run.stored()["output"][0]
    assert len(stored["action"]["sources"]) == 2  # a later GET with include shows them
    assert "sources" in shown_response(run.stored(), ALL)["output"][0]["action"]
    # Not cited by marker or URL: the whole answer cites each source.
    assert [(a["start_index"], a["end_index"]) for a in valid(run.snapshot())["output"][1]["content"][0]["annotations"]] == [(0, 7), (0, 7)]


def test_a_failed_search_is_failed_and_the_answer_still_comes() -> None:
    run = new_run()
    events = play(run, call("web_search", {"query": "q"}, SearchOutcome("q", error="the provider timed out")) + text("I could not search."))
    search, answer = valid(run.snapshot())["output"]
    assert search["status"] == "failed" and "response.web_search_call.completed" not in kinds(events)
    assert answer["content"][0]["text"] == "I could not search." and answer["content"][0]["annotations"] == []
    assert run.snapshot()["status"] == "completed"


def test_code_becomes_a_code_interpreter_call_with_logs_images_and_file_citations() -> None:
    run = new_run([ALL[1]])
    code = "import matplotlib\nprint(6 * 7)"
    outcome = CodeOutcome(code, stdout="42\n", files=(PLOT, TABLE), session_id=CONTAINER)
    events = play(run, call("code_interpreter", {"code": code}, outcome) + text("The answer is 42; see table.csv."))
    response = valid(run.snapshot())
    item, answer = response["output"]
    assert item["id"].startswith("ci_") and item["status"] == "completed" and item["container_id"] == CONTAINER
    assert item["code"] == code
    assert item["outputs"] == [{"type": "logs", "logs": "42\n"}, {"type": "image", "url": f"{FILES_URL}/file-plot/content"}]
    assert [k for k in kinds(events) if "code_interpreter" in k] == [
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
    ]
    added = next(e for e in events if e["type"] == "response.output_item.added" and e["item"]["type"] == "code_interpreter_call")
    assert added["item"]["status"] == "in_progress" and added["item"]["outputs"] is None
    text_ = answer["content"][0]["text"]
    citations = answer["content"][0]["annotations"]
    # table.csv is named in the answer; plot.png is not, so the whole answer cites it.
    assert citations == [
        {"type": "container_file_citation", "start_index": 0, "end_index": len(text_), "container_id": CONTAINER,
         "file_id": "file-plot", "filename": "plot.png"},
        {"type": "container_file_citation", "start_index": text_.index("table.csv"), "end_index": text_.index("table.csv") + 9,
         "container_id": CONTAINER, "file_id": "file-table", "filename": "table.csv"},
    ]  # fmt: skip
    assert isinstance(Response.model_validate(response).output[0], ResponseCodeInterpreterToolCall)
    # Without the include, outputs are null (as OpenAI's), and kept in the store.
    assert shown_response(run.stored(), [])["output"][0]["outputs"] is None


def test_code_that_raises_is_a_failed_call_with_the_error_in_its_logs() -> None:
    run = new_run([ALL[1]])
    outcome = CodeOutcome("1/0", stderr="Traceback (most recent call last):\nZeroDivisionError: division by zero\n",
                          error="ZeroDivisionError: division by zero", exit_code=1)  # fmt: skip
    events = play(run, call("code_interpreter", {"code": "1/0"}, outcome) + text("It fails: division by zero."))
    item, answer = valid(run.snapshot())["output"]
    assert item["status"] == "failed" and "response.code_interpreter_call.completed" not in kinds(events)
    assert "ZeroDivisionError" in item["outputs"][0]["logs"] and answer["type"] == "message"
    timed_out = new_run([ALL[1]])
    play(timed_out, call("code_interpreter", {"code": "while True: pass"}, CodeOutcome("while True: pass", error="timeout", timed_out=True)))
    item, answer = valid(timed_out.snapshot())["output"]
    assert item["status"] == "failed" and item["outputs"] == [{"type": "logs", "logs": "timeout"}]
    assert answer["type"] == "message" and answer["content"][0]["text"] == ""  # the model said nothing after: still a message


def test_shell_commands_become_a_shell_call_and_its_output() -> None:
    run = new_run()
    results = (
        CommandResult("echo hi", stdout="hi\n", exit_code=0),
        CommandResult("false", exit_code=1),
        CommandResult("sleep 99", timed_out=True, error="timeout"),
        CommandResult("python3 -c 'x' * 9", exit_code=-24, error="cpu_limit"),
    )
    commands = [r.command for r in results]
    events = play(run, call("shell", {"commands": commands}, ShellOutcome(tuple(commands), results)) + text("Done."))
    response = valid(run.snapshot())
    shell, output, _ = response["output"]
    assert shell["type"] == "shell_call" and shell["id"].startswith("sh_") and shell["call_id"] == "call_1"
    assert shell["action"]["commands"] == commands and shell["status"] == "completed"
    assert shell["environment"] == {"type": "container_reference", "container_id": CONTAINER}
    assert output["type"] == "shell_call_output" and output["call_id"] == "call_1" and output["status"] == "completed"
    assert [o["outcome"] for o in output["output"]] == [
        {"type": "exit", "exit_code": 0}, {"type": "exit", "exit_code": 1}, {"type": "timeout"}, {"type": "exit", "exit_code": -24}
    ]
    assert output["output"][0]["stdout"] == "hi\n" and output["output"][3]["stderr"] == "[cpu_limit]"
    names = kinds(events)
    assert names.count("response.shell_call_command.added") == names.count("response.shell_call_command.done") == 4
    assert names.count("response.shell_call_output_content.done") == 4
    done = [e for e in events if e["type"] == "response.shell_call_command.done"]
    assert [e["command"] for e in done] == commands and [e["command_index"] for e in done] == [0, 1, 2, 3]
    typed = Response.model_validate(response).output
    assert isinstance(typed[0], ResponseFunctionShellToolCall) and isinstance(typed[1], ResponseFunctionShellToolCallOutput)


def test_a_shell_call_that_could_not_run_says_why_in_its_output() -> None:
    run = new_run()
    play(run, call("shell", {}, ShellOutcome((), error="give `commands`, a list of command lines")) + text("Sorry."))
    shell, output, _ = valid(run.snapshot())["output"]
    assert shell["action"]["commands"] == []
    assert output["output"] == [{"stdout": "", "stderr": "give `commands`, a list of command lines", "outcome": {"type": "exit", "exit_code": -1}}]


def test_hosted_items_in_the_history_become_calls_and_results() -> None:
    run = new_run(ALL)
    shell = ShellOutcome(("ls",), (CommandResult("ls", stdout="a.txt\n", exit_code=0),))
    play(
        run,
        call("web_search", {"query": "q"}, SearchOutcome("q", SOURCES), "call_s")
        + call("code_interpreter", {"code": "x = 41"}, CodeOutcome("x = 41", stdout="ok\n"), "call_c", 2)
        + call("shell", {"commands": ["ls"]}, shell, "call_sh", 3)
        + text("All done."),
    )
    history = [{"role": "user", "content": "go"}, *run.snapshot()["output"], {"role": "user", "content": "next"}]
    items = normalize_input(rs.CreateResponseRequest.model_validate({"input": history}).input)
    messages = chat_messages(None, items)
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for m in messages for c in m.get("tool_calls", [])]
    assert calls == [("web_search", {"query": "q"}), ("code_interpreter", {"code": "x = 41"}), ("shell", {"commands": ["ls"]})]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    assert results[0] == f"[1] URL: {SOURCES[0].url}\n[2] URL: {SOURCES[1].url}"
    assert results[1] == "stdout:\nok\n" and results[2] == "$ ls\na.txt\nexit code: 0"
    ids = [c["id"] for m in messages for c in m.get("tool_calls", [])]
    assert ids == [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert messages[-2] == {"role": "assistant", "content": "All done."} and messages[-1]["role"] == "user"
