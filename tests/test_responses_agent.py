"""Hosted tools on POST /v1/responses through the real stack: a server whose
config enables web_search (the `local` provider over a folder of Markdown),
code_interpreter and shell; scripted models that call them (the request's
script is round 1, `after_tool_result` the answer after a tool result); the
tools really run (the search over the folder, code and commands in the
sandbox, skipped without bubblewrap as in tests/test_sandbox.py). Checked
with the openai SDK's typed items and against OpenAI's schemas, every
stream event and every response."""

from __future__ import annotations

import base64
import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionShellToolCallOutput,
    ResponseFunctionWebSearch,
    ResponseOutputMessage,
)

from tests.conftest import chat_model_toml, free_port, openai_validator, script, scripted_model_toml

RESPONSE = openai_validator("Response")
EVENT = openai_validator("ResponseStreamEvent")
HAVE_BWRAP = os.access("/usr/bin/bwrap", os.X_OK)
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap (/usr/bin/bwrap) is not installed: apt-get install bubblewrap")
ALICE = "alice-agent-key-00001"
NOAGENT = "plain-agent-key-00002"
SOURCES = "web_search_call.action.sources"
OUTPUTS = "code_interpreter_call.outputs"
DOCS = {
    "paris.md": "# Paris\n\nParis is the capital of France, on the Seine.\n",
    "lyon.md": "# Lyon\n\nLyon is a city in France where the Rhone meets the Saone.\n",
    "rust.md": "# Rust\n\nRust is a systems programming language.\n",
}
# A 1x1 PNG, for code that writes an image.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def keys() -> str:
    return "".join(
        f'[[auth.keys]]\nname = "{name}"\nkey = "{key}"\nmetrics = true\nagent = {agent}\n'
        for name, key, agent in (("alice", ALICE, "true"), ("plain", NOAGENT, "false"))
    )


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_call": {"name": name, "arguments": arguments}}


def models() -> str:
    return (
        scripted_model_toml("searcher", options='after_tool_result = ["Paris is the capital of France [1]."]\n')
        + scripted_model_toml("coder", options='after_tool_result = ["Done: see out.txt."]\n')
        + scripted_model_toml("echo", options="echo = true\n")
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agent")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def server(server_factory: Any, folder: Path) -> Any:
    config = (
        f'[storage]\npath = "{folder / "db.sqlite3"}"\n\n'
        '[agent]\ntools = ["web_search", "code_interpreter", "shell"]\n\n'
        f'[agent.search]\nprovider = "local"\nfolder = "{folder / "docs"}"\n\n'
        f"{keys()}\n{models()}"
    )
    return server_factory(config, health_key=ALICE)


@pytest.fixture(scope="module")
def alice(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=ALICE, max_retries=0, timeout=60) as client:
        yield client


def valid(response: Any) -> dict[str, Any]:
    """The response as JSON, checked against OpenAI's schema."""
    data = response if isinstance(response, dict) else response.to_dict(mode="json")
    error = jsonschema.exceptions.best_match(RESPONSE.iter_errors(data))
    assert error is None, f"{error.message} at {list(error.absolute_path)}"
    return data


def valid_events(events: list[Any]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        data = event if isinstance(event, dict) else event.to_dict(mode="json")
        error = jsonschema.exceptions.best_match(EVENT.iter_errors(data))
        assert error is None, f"{data['type']}: {error.message}"
        out.append(data)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def output_types(response: Response) -> list[str]:
    return [item.type for item in response.output]


# --- web search -----------------------------------------------------------------------------------


def test_web_search_runs_and_the_answer_cites_its_sources(alice: openai.OpenAI) -> None:
    response = alice.responses.create(
        model="searcher",
        input=script(call("web_search", query="capital of France")),
        tools=[{"type": "web_search"}],
        include=[SOURCES],
    )
    valid(response)
    assert output_types(response) == ["web_search_call", "message"]
    search, answer = response.output
    assert isinstance(search, ResponseFunctionWebSearch) and search.status == "completed"
    assert search.action.type == "search" and search.action.query == "capital of France"
    urls = [source.url for source in search.action.sources or []]
    assert urls[0] == "local:paris.md" and set(urls) <= {f"local:{name}" for name in DOCS}
    assert isinstance(answer, ResponseOutputMessage)
    part = answer.content[0]
    assert part.type == "output_text" and part.text == "Paris is the capital of France [1]."
    marker = part.text.index("[1]")
    citation = part.annotations[0]
    assert citation.type == "url_citation" and (citation.start_index, citation.end_index) == (marker, marker + 3)
    assert citation.url == "local:paris.md" and citation.title == "Paris"
    # Stored in full: GET shows the sources with the include, not without.
    assert "sources" not in alice.responses.retrieve(response.id).to_dict()["output"][0]["action"]
    assert alice.responses.retrieve(response.id, include=[SOURCES]).output[0].action.sources  # type: ignore[union-attr]


def test_web_search_streams_openai_events(alice: openai.OpenAI) -> None:
    with alice.responses.create(
        model="searcher", input=script("Looking.", call("web_search", query="Lyon Rhone")), tools=[{"type": "web_search_preview"}],
        stream=True,
    ) as stream:  # fmt: skip
        events = valid_events(list(stream))
    kinds = [e["type"] for e in events]
    assert [k for k in kinds if k.startswith("response.web_search_call.")] == [
        "response.web_search_call.in_progress", "response.web_search_call.searching", "response.web_search_call.completed"
    ]  # fmt: skip
    assert kinds[-1] == "response.completed" and "response.output_text.annotation.added" in kinds
    final = events[-1]["response"]
    valid(final)
    assert [item["type"] for item in final["output"]] == ["message", "web_search_call", "message"]
    assert final["output"][0]["content"][0]["text"] == "Looking."
    assert "sources" not in final["output"][1]["action"]  # not asked for
    annotated = next(e for e in events if e["type"] == "response.output_text.annotation.added")
    assert annotated["annotation"]["url"] == "local:lyon.md" and annotated["output_index"] == 2


def test_allowed_domains_filter_the_results(alice: openai.OpenAI) -> None:
    # The local provider's sources are local: URLs, in no web domain: a filter leaves none.
    response = alice.responses.create(
        model="searcher",
        input=script(call("web_search", query="capital of France")),
        tools=[{"type": "web_search", "filters": {"allowed_domains": ["example.com"]}, "search_context_size": "low",
                "user_location": {"type": "approximate", "country": "FR"}}],  # fmt: skip
        include=[SOURCES],
    )
    search = valid(response)["output"][0]
    assert search["status"] == "completed" and search["action"]["sources"] == []
    assert response.output[1].content[0].annotations == []  # type: ignore[union-attr]


def test_max_tool_calls_bounds_the_hosted_calls(alice: openai.OpenAI) -> None:
    two = script(call("web_search", query="Paris"), call("web_search", query="Lyon"))
    response = alice.responses.create(model="searcher", input=two, tools=[{"type": "web_search"}], max_tool_calls=1)
    valid(response)
    assert output_types(response) == ["web_search_call", "message"]
    assert response.output[0].action.query == "Paris" and response.max_tool_calls == 1  # type: ignore[union-attr]
    both = alice.responses.create(model="searcher", input=two, tools=[{"type": "web_search"}])
    assert output_types(both) == ["web_search_call", "web_search_call", "message"]


# --- tool_choice ----------------------------------------------------------------------------------


def seen(response: Response) -> dict[str, Any]:
    """What the echo model was sent in round 1."""
    message = response.output[-1]
    assert isinstance(message, ResponseOutputMessage)
    data: dict[str, Any] = json.loads(message.content[0].text)  # type: ignore[union-attr]
    return data


def test_tool_choice_forces_a_hosted_tool_in_round_one(alice: openai.OpenAI) -> None:
    function = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    tools: Any = [{"type": "web_search_preview"}, {"type": "code_interpreter", "container": {"type": "auto"}}, function]
    forced = alice.responses.create(model="echo", input="hi", tools=tools, tool_choice={"type": "web_search_preview"})
    assert valid(forced)["tool_choice"] == {"type": "web_search_preview"}
    sent = seen(forced)
    assert sent["tool_mode"] == "named" and [t["name"] for t in sent["tools"]] == ["lookup", "web_search", "code_interpreter"]
    assert seen(alice.responses.create(model="echo", input="hi", tools=tools, tool_choice={"type": "code_interpreter"}))["tool_mode"] == "named"
    assert seen(alice.responses.create(model="echo", input="hi", tools=tools, tool_choice="required"))["tool_mode"] == "required"
    assert seen(alice.responses.create(model="echo", input="hi", tools=tools))["tool_mode"] == "auto"
    assert seen(alice.responses.create(model="echo", input="hi", tools=tools, tool_choice="none"))["tools"] is None
    with pytest.raises(openai.BadRequestError) as caught:
        alice.responses.create(model="echo", input="hi", tools=[function], tool_choice={"type": "code_interpreter"})  # type: ignore[list-item]
    assert caught.value.body["param"] == "tool_choice"  # type: ignore[index]


# --- refusals -------------------------------------------------------------------------------------


def test_a_key_without_agent_tools_gets_403_and_no_search(server: Any, alice: openai.OpenAI) -> None:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=NOAGENT, max_retries=0, timeout=60) as plain:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            plain.responses.create(model="coder", input="hi", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
        assert caught.value.body["code"] == "agent_not_allowed"  # type: ignore[index]
        # A web search (Codex sends one with every request) is left out for it, as for a server without search.
        answer = plain.responses.create(model="searcher", input=script("No search."), tools=[{"type": "web_search"}])
        assert output_types(answer) == ["message"] and answer.output_text == "No search."


def test_tools_the_config_does_not_enable(server_factory: Any, folder: Path) -> None:
    # web search over a SearXNG that is down; no code interpreter, no shell.
    config = (
        '[agent]\ntools = ["web_search"]\n\n'
        f'[agent.search]\nprovider = "searxng"\nurl = "http://127.0.0.1:{free_port()}"\ntimeout = "2s"\n\n'
        + scripted_model_toml("searcher", options='after_tool_result = ["The search failed, sorry."]\n')
        + scripted_model_toml("echo", options="echo = true\n")
    )
    other = server_factory(config)
    with openai.OpenAI(base_url=f"{other.base_url}/v1", api_key="x", max_retries=0, timeout=60) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="echo", input="hi", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
        assert caught.value.body["code"] == "tool_not_enabled" and caught.value.body["param"] == "tools[0]"  # type: ignore[index]
        assert "'code_interpreter'" in caught.value.message
        with pytest.raises(openai.BadRequestError, match="'shell' is not enabled"):
            client.responses.create(model="echo", input="hi", tools=[{"type": "shell", "environment": {"type": "container_auto"}}])  # type: ignore[list-item]
        # A failing provider: the call is failed, and the model still answers.
        failed = client.responses.create(model="searcher", input=script(call("web_search", query="x")), tools=[{"type": "web_search"}])
        assert [item.status for item in failed.output] == ["failed", "completed"] and failed.output_text == "The search failed, sorry."
        assert valid(failed)["status"] == "completed"
        # Codex's search (external_web_access: false) over a provider on the web: left out, with a warning.
        codex = client.responses.create(model="echo", input="hi", tools=[{"type": "web_search", "external_web_access": False}])  # type: ignore[list-item]
        assert seen(codex)["tools"] is None
        assert other.wait_for_lines(lambda line: "left out of the prompt: tools of type web_search" in line)


# --- code interpreter -----------------------------------------------------------------------------


@needs_bwrap
def test_code_runs_in_a_container_and_its_files_are_cited(server: Any, alice: openai.OpenAI) -> None:
    # (As in a notebook, the value of a last expression is shown too: the writes are assigned.)
    code = f"print(6 * 7)\n_ = open('out.txt', 'w').write('hi')\n_ = open('dot.png', 'wb').write({PNG!r})"
    response = alice.responses.create(
        model="coder", input=script(call("code_interpreter", code=code)),
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}], include=[OUTPUTS],
    )  # fmt: skip
    valid(response)
    item, answer = response.output
    assert isinstance(item, ResponseCodeInterpreterToolCall) and item.status == "completed", item
    assert item.code == code and item.container_id.startswith("cntr_")
    assert item.outputs is not None and item.outputs[0].type == "logs" and item.outputs[0].logs == "42\n"
    image = item.outputs[1]
    assert image.type == "image" and image.url.startswith(f"{server.base_url}/v1/files/")
    got = httpx.get(image.url, headers={"authorization": f"Bearer {ALICE}"}, timeout=10)
    assert got.status_code == 200 and got.content == PNG
    assert isinstance(answer, ResponseOutputMessage)
    text = answer.content[0].text  # type: ignore[union-attr]
    cited = {a.filename: a for a in answer.content[0].annotations if a.type == "container_file_citation"}  # type: ignore[union-attr]
    assert set(cited) == {"out.txt", "dot.png"} and cited["out.txt"].container_id == item.container_id
    assert text[cited["out.txt"].start_index : cited["out.txt"].end_index] == "out.txt"
    assert alice.files.content(cited["out.txt"].file_id).read() == b"hi"
    # Without the include, outputs are null.
    plain = alice.responses.create(model="coder", input=script(call("code_interpreter", code="print(1)")),
                                   tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])  # fmt: skip
    assert plain.output[0].outputs is None  # type: ignore[union-attr]


@needs_bwrap
def test_code_that_raises_is_reported_and_the_answer_still_comes(alice: openai.OpenAI) -> None:
    with alice.responses.create(
        model="coder", input=script(call("code_interpreter", code="1 / 0")),
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}], include=[OUTPUTS], stream=True,
    ) as stream:  # fmt: skip
        events = valid_events(list(stream))
    kinds = [e["type"] for e in events]
    assert "response.code_interpreter_call.interpreting" in kinds and "response.code_interpreter_call.completed" not in kinds
    code_done = next(e for e in events if e["type"] == "response.code_interpreter_call_code.done")
    assert code_done["code"] == "1 / 0"
    final = valid(events[-1]["response"])
    item, answer = final["output"]
    assert item["status"] == "failed" and "ZeroDivisionError" in item["outputs"][0]["logs"]
    assert final["status"] == "completed" and answer["content"][0]["text"] == "Done: see out.txt."


@needs_bwrap
def test_a_container_keeps_python_state_across_requests(alice: openai.OpenAI) -> None:
    auto: Any = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    first = alice.responses.create(model="coder", input=script(call("code_interpreter", code="x = 41")), tools=auto)
    container = first.output[0].container_id  # type: ignore[union-attr]
    named: Any = [{"type": "code_interpreter", "container": container}]
    again = alice.responses.create(model="coder", input=script(call("code_interpreter", code="print(x + 1)")), tools=named,
                                   include=[OUTPUTS])  # fmt: skip
    assert again.output[0].container_id == container and again.output[0].outputs[0].logs == "42\n"  # type: ignore[union-attr,index]
    # previous_response_id with an auto container: the conversation's container again (OpenAI's auto mode).
    follow = alice.responses.create(model="coder", input=script(call("code_interpreter", code="print(x * 2)")), tools=auto,
                                    previous_response_id=first.id, include=[OUTPUTS])  # fmt: skip
    assert follow.output[0].container_id == container and follow.output[0].outputs[0].logs == "82\n"  # type: ignore[union-attr,index]
    # A fresh auto container knows no x.
    fresh = alice.responses.create(model="coder", input=script(call("code_interpreter", code="print(x)")), tools=auto,
                                   include=[OUTPUTS])  # fmt: skip
    assert fresh.output[0].container_id != container and fresh.output[0].status == "failed"  # type: ignore[union-attr]
    assert "NameError" in fresh.output[0].outputs[0].logs  # type: ignore[union-attr,index]
    with pytest.raises(openai.BadRequestError) as caught:
        alice.responses.create(model="coder", input="hi", tools=[{"type": "code_interpreter", "container": "../bad id"}])
    assert caught.value.body["param"] == "tools[0].container"  # type: ignore[index]


@needs_bwrap
def test_previous_response_hosted_items_come_back_as_tool_calls(alice: openai.OpenAI) -> None:
    first = alice.responses.create(
        model="coder", input=script(call("code_interpreter", code="print('seen before')")),
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    )  # fmt: skip
    searched = alice.responses.create(model="searcher", input=script(call("web_search", query="Rust")), tools=[{"type": "web_search"}],
                                      previous_response_id=first.id)  # fmt: skip
    echoed = alice.responses.create(model="echo", input="what happened?", previous_response_id=searched.id)
    messages = seen(echoed)["messages"]
    calls = [c["function"] for m in messages for c in m.get("tool_calls", [])]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("code_interpreter", {"code": "print('seen before')"}), ("web_search", {"query": "Rust"})
    ]  # fmt: skip
    results = [m["content"] for m in messages if m["role"] == "tool"]
    assert "seen before" in results[0] and "local:rust.md" in results[1]


# --- shell ----------------------------------------------------------------------------------------


def skill_zip(name: str) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/SKILL.md", f"---\nname: {name}\ndescription: Says hello.\n---\nSay hello-from-{name}.\n")
    return base64.b64encode(buffer.getvalue()).decode()


@needs_bwrap
def test_shell_commands_run_in_the_container_with_its_skills(alice: openai.OpenAI) -> None:
    skill = {"type": "inline", "name": "greeter", "description": "Says hello.",
             "source": {"type": "base64", "media_type": "application/zip", "data": skill_zip("greeter")}}  # fmt: skip
    tools: Any = [{"type": "shell", "environment": {"type": "container_auto", "skills": [skill]}}]
    commands = ["echo hi", "cat skills/greeter/SKILL.md", "exit 3"]
    with alice.responses.create(model="coder", input=script(call("shell", commands=commands)), tools=tools, stream=True) as stream:
        events = valid_events(list(stream))
    final = Response.model_validate(valid(events[-1]["response"]))
    shell, output, answer = final.output
    assert isinstance(shell, ResponseFunctionShellToolCall) and shell.action.commands == commands
    assert shell.environment is not None and shell.environment.type == "container_reference"
    assert isinstance(output, ResponseFunctionShellToolCallOutput) and output.call_id == shell.call_id
    assert [o.stdout for o in output.output][0] == "hi\n" and "hello-from-greeter" in output.output[1].stdout
    assert [o.outcome.to_dict() for o in output.output] == [{"type": "exit", "exit_code": c} for c in (0, 0, 3)]
    kinds = [e["type"] for e in events]
    assert kinds.count("response.shell_call_command.done") == 3 and kinds.count("response.shell_call_output_content.done") == 3
    assert isinstance(answer, ResponseOutputMessage)
    # The container is named back as a container_reference: the next request's shell runs in the same folder.
    reference: Any = [{"type": "shell", "environment": {"type": "container_reference", "container_id": shell.environment.container_id}}]  # type: ignore[union-attr]
    again = alice.responses.create(model="coder", input=script(call("shell", commands=["ls skills"])), tools=reference)
    assert again.output[1].output[0].stdout == "greeter\n"  # type: ignore[union-attr]


# --- background -----------------------------------------------------------------------------------


def test_a_background_run_goes_through_the_loop(alice: openai.OpenAI) -> None:
    with alice.responses.create(
        model="searcher", input=script(call("web_search", query="capital of France")), tools=[{"type": "web_search"}],
        background=True, stream=True,
    ) as stream:  # fmt: skip
        events = valid_events(list(stream))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert "response.web_search_call.completed" in kinds and kinds[-1] == "response.completed"
    response_id = events[0]["response"]["id"]
    stored = alice.responses.retrieve(response_id)
    valid(stored)
    assert output_types(stored) == ["web_search_call", "message"]
    assert stored.output[1].content[0].annotations[0].url == "local:paris.md"  # type: ignore[union-attr]
    queued = alice.responses.create(model="searcher", input=script(call("web_search", query="Lyon")), tools=[{"type": "web_search"}],
                                    background=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while queued.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
        queued = alice.responses.retrieve(queued.id)
    assert queued.status == "completed" and output_types(queued) == ["web_search_call", "message"]


# --- a real model ---------------------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_forced_to_search_answers_with_citations(server_factory: Any, folder: Path) -> None:
    config = (
        '[agent]\ntools = ["web_search"]\n\n'
        f'[agent.search]\nprovider = "local"\nfolder = "{folder / "docs"}"\n\n'
        + chat_model_toml("smol")
    )
    real = server_factory(config)
    with openai.OpenAI(base_url=f"{real.base_url}/v1", api_key="x", max_retries=0, timeout=300) as client:
        response = client.responses.create(
            model="smol", input="What is the capital of France?", tools=[{"type": "web_search_preview"}],
            tool_choice={"type": "web_search_preview"}, max_tool_calls=1, max_output_tokens=60, temperature=0,
            include=[SOURCES],
        )  # fmt: skip
    valid(response)
    search = response.output[0]
    assert isinstance(search, ResponseFunctionWebSearch) and search.status == "completed" and search.action.query  # type: ignore[union-attr]
    assert search.action.sources  # type: ignore[union-attr]
    answer = response.output[-1]
    assert isinstance(answer, ResponseOutputMessage) and answer.content[0].text.strip()  # type: ignore[union-attr]
    cited = [a.url for a in answer.content[0].annotations if a.type == "url_citation"]  # type: ignore[union-attr]
    assert cited and set(cited) <= {s.url for s in search.action.sources}  # type: ignore[union-attr]
