"""Anthropic's server tools on POST /v1/messages, end to end: a real server
with `[agent] tools = ["web_search", "code_interpreter", "shell"]` and a local
search folder, the scripted model calling the tools (its `after_tool_result`
answers once a result is in the conversation), the tools really running
(local search; code and bash in the sandbox, skipped without bubblewrap), and
the official `anthropic` SDK reading the typed blocks, streamed and not.
The rendering alone, event by event: tests/test_messages_agent_blocks.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import script, scripted_model_toml

HAVE_BWRAP = os.access("/usr/bin/bwrap", os.X_OK)
needs_sandbox = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap (/usr/bin/bwrap) is not installed")
KEY = "alice-messages-agent-1"
NO_AGENT_KEY = "bob-messages-agent-2"
ANSWER = "Rays follow light [1]."
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}
CODE = {"type": "code_execution_20250522", "name": "code_execution"}
BASH = {"type": "code_execution_20250825", "name": "code_execution"}
DOCS = {
    "rays.md": "# Ray tracing\n\nRay tracing follows rays of light from the eye into the scene, bouncing off surfaces.\n",
    "bvh.md": "# Bounding volumes\n\nA bounding volume hierarchy speeds up the ray queries of a ray tracer.\n",
    "gardens.md": "# Gardens\n\nTomatoes want sun and water.\n",
}


def keys() -> str:
    return (f'[[auth.keys]]\nname = "alice"\nkey = "{KEY}"\nmetrics = true\n\n'
            f'[[auth.keys]]\nname = "bob"\nkey = "{NO_AGENT_KEY}"\nagent = false\n\n')


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def server(server_factory: Any, docs: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    storage = tmp_path_factory.mktemp("storage") / "responses.sqlite3"
    config = (
        f'[storage]\npath = "{storage}"\n\n{keys()}'
        '[agent]\ntools = ["web_search", "code_interpreter", "shell"]\n\n'
        f'[agent.search]\nprovider = "local"\nfolder = "{docs}"\n\n'
        + scripted_model_toml("agent", options=f"after_tool_result = {json.dumps([ANSWER])}\n")
        + scripted_model_toml("echo", options="echo = true\n")
    )
    return server_factory(config, health_key=KEY)


@pytest.fixture(scope="module")
def claude(server: Any) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_call": {"name": name, "arguments": arguments}}


def ask(claude: anthropic.Anthropic, *events: Any, tools: list[dict[str, Any]], model: str = "agent",
        **body: Any) -> anthropic.types.Message:
    """The message for a scripted turn, which must equal what the stream of the same request builds."""
    request: dict[str, Any] = {"model": model, "max_tokens": 200, "tools": tools,
                               "messages": [{"role": "user", "content": script(*events)}], **body}
    whole = claude.messages.create(**request)
    with claude.messages.stream(**request) as stream:
        starts = [e.content_block.type for e in stream if e.type == "content_block_start"]
        streamed = stream.get_final_message()
    assert starts == [block.type for block in whole.content]
    assert same_shape(streamed) == same_shape(whole)
    return whole


def same_shape(message: anthropic.types.Message) -> dict[str, Any]:
    """The message without what differs between two runs: ids (message, calls, container) and dates."""
    body = message.model_dump(mode="json")
    ids: dict[str, str] = {}
    text = json.dumps(body)
    for block in body["content"]:
        for key in ("id", "tool_use_id"):
            if key in block:
                ids.setdefault(block[key], f"id{len(ids)}")
        result = block.get("content")
        for output in result.get("content", []) if isinstance(result, dict) else []:
            ids.setdefault(output["file_id"], f"file{len(ids)}")  # each run writes its own copy
    for real, placeholder in ids.items():
        text = text.replace(real, placeholder)
    body = json.loads(text)
    body["id"] = "msg"
    if body.get("container"):
        body["container"] = {"id": "container", "expires_at": "later"}
    return body


def test_a_search_answer_cites_its_results(claude: anthropic.Anthropic) -> None:
    message = ask(claude, call("web_search", query="ray tracing light"), tools=[WEB_SEARCH])
    use, result, text = message.content
    assert isinstance(use, anthropic.types.ServerToolUseBlock) and use.id.startswith("srvtoolu_")
    assert use.name == "web_search" and use.input == {"query": "ray tracing light"}
    assert isinstance(result, anthropic.types.WebSearchToolResultBlock) and result.tool_use_id == use.id
    assert isinstance(result.content, list)
    urls = [r.url for r in result.content]
    assert urls[0] == "local:rays.md" and "local:gardens.md" not in urls
    assert result.content[0].title == "Ray tracing" and result.content[0].page_age is None
    assert isinstance(text, anthropic.types.TextBlock) and text.text == ANSWER
    assert text.citations is not None and len(text.citations) == 1
    cited = text.citations[0]
    assert isinstance(cited, anthropic.types.CitationsWebSearchResultLocation)
    assert cited.url == "local:rays.md" and cited.title == "Ray tracing" and "rays of light" in cited.cited_text
    assert message.stop_reason == "end_turn" and message.container is None
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 1


def test_max_uses_caps_the_searches(claude: anthropic.Anthropic) -> None:
    tool = {**WEB_SEARCH, "max_uses": 1}
    message = ask(claude, call("web_search", query="ray"), call("web_search", query="bvh"), tools=[tool])
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "server_tool_use",
                                                 "web_search_tool_result", "text"]
    refused = message.content[3]
    assert isinstance(refused, anthropic.types.WebSearchToolResultBlock)
    assert isinstance(refused.content, anthropic.types.WebSearchToolResultErrorObject)
    assert refused.content.error_code == "max_uses_exceeded"
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 1


def test_domain_lists_filter_the_results(claude: anthropic.Anthropic) -> None:
    # Local results have no domain: an allowed_domains list keeps none of them.
    allowed = ask(claude, call("web_search", query="ray"), tools=[{**WEB_SEARCH, "allowed_domains": ["example.com"]}])
    assert allowed.content[1].content == []  # type: ignore[union-attr]
    both = {**WEB_SEARCH, "allowed_domains": ["a.example"], "blocked_domains": ["b.example"]}
    with pytest.raises(anthropic.BadRequestError, match="either allowed_domains or blocked_domains"):
        claude.messages.create(model="agent", max_tokens=5, messages=[{"role": "user", "content": "hi"}], tools=[both])


def test_a_failing_tool_is_reported_and_the_answer_still_comes(claude: anthropic.Anthropic) -> None:
    message = ask(claude, call("web_search"), tools=[WEB_SEARCH])  # no query
    use, result, text = message.content
    assert use.input == {}  # type: ignore[union-attr]
    assert isinstance(result, anthropic.types.WebSearchToolResultBlock)
    assert isinstance(result.content, anthropic.types.WebSearchToolResultErrorObject)
    assert result.content.error_code == "invalid_tool_input"
    assert text.text == ANSWER and text.citations is None  # type: ignore[union-attr]


@needs_sandbox
def test_code_that_raises_is_a_result_with_its_traceback(claude: anthropic.Anthropic) -> None:
    message = ask(claude, call("code_interpreter", code="print('before')\n1 / 0"), tools=[CODE])
    result = message.content[1]
    assert isinstance(result, anthropic.types.CodeExecutionToolResultBlock)
    assert isinstance(result.content, anthropic.types.CodeExecutionResultBlock)
    assert result.content.return_code == 1 and result.content.stdout == "before\n"
    assert "ZeroDivisionError" in result.content.stderr
    assert message.content[2].text == ANSWER  # type: ignore[union-attr]


@needs_sandbox
def test_code_execution_writes_a_file_the_files_api_serves(claude: anthropic.Anthropic, server: Any) -> None:
    code = "rows = [(n, n * n) for n in range(4)]\nopen('squares.csv', 'w').write(''.join(f'{a},{b}\\n' for a, b in rows))\nprint(len(rows))"
    message = ask(claude, call("code_interpreter", code=code), tools=[CODE])
    use, result, _ = message.content
    assert use.name == "code_execution" and use.input == {"code": code}  # type: ignore[union-attr]
    assert isinstance(result, anthropic.types.CodeExecutionToolResultBlock)
    assert isinstance(result.content, anthropic.types.CodeExecutionResultBlock)
    assert result.content.stdout == "4\n" and result.content.return_code == 0 and result.content.stderr == ""
    [output] = result.content.content
    content = httpx.get(f"{server.base_url}/v1/files/{output.file_id}/content", headers={"x-api-key": KEY})
    assert content.status_code == 200 and content.text == "0,0\n1,1\n2,4\n3,9\n"
    assert message.container is not None and message.container.id.startswith("cntr_")
    assert message.usage.server_tool_use is None  # no web search in this request


@needs_sandbox
def test_the_container_keeps_python_state(claude: anthropic.Anthropic) -> None:
    first = ask(claude, call("code_interpreter", code="x = 41"), tools=[CODE])
    assert first.container is not None
    again = claude.messages.create(model="agent", max_tokens=200, tools=[CODE], container=first.container.id,  # type: ignore[arg-type]
                                   messages=[{"role": "user", "content": script(call("code_interpreter", code="print(x + 1)"))}])
    result = again.content[1]
    assert isinstance(result, anthropic.types.CodeExecutionToolResultBlock)
    assert result.content.stdout == "42\n"  # type: ignore[union-attr]
    assert again.container is not None and again.container.id == first.container.id
    fresh = claude.messages.create(model="agent", max_tokens=200, tools=[CODE],
                                   messages=[{"role": "user", "content": script(call("code_interpreter", code="print(x + 1)"))}])
    assert "NameError" in fresh.content[1].content.stderr  # type: ignore[union-attr]
    assert fresh.container is not None and fresh.container.id != first.container.id


@needs_sandbox
def test_bash_code_execution(claude: anthropic.Anthropic) -> None:
    message = ask(claude, call("shell", commands=["echo hello > note.txt", "cat note.txt"]), tools=[BASH])
    use, result, _ = message.content
    assert use.name == "bash_code_execution"  # type: ignore[union-attr]
    assert use.input == {"command": "echo hello > note.txt\ncat note.txt"}  # type: ignore[union-attr]
    assert isinstance(result, anthropic.types.BashCodeExecutionToolResultBlock)
    assert isinstance(result.content, anthropic.types.BashCodeExecutionResultBlock)
    assert result.content.stdout == "hello\n" and result.content.return_code == 0
    assert len(result.content.content) == 1  # note.txt, in the file store
    assert message.container is not None


def test_tool_choice_forces_the_hosted_tool(claude: anthropic.Anthropic) -> None:
    def seen(**body: Any) -> dict[str, Any]:
        message = claude.messages.create(model="echo", max_tokens=50, messages=[{"role": "user", "content": "Hi"}], **body)
        return json.loads(message.content[-1].text)  # type: ignore[union-attr]

    forced = seen(tools=[WEB_SEARCH, CODE], tool_choice={"type": "tool", "name": "web_search"})
    assert forced["tool_mode"] == "named" and [t["name"] for t in forced["tools"]] == ["web_search", "code_interpreter"]
    assert seen(tools=[BASH], tool_choice={"type": "tool", "name": "code_execution"})["tool_mode"] == "named"
    assert seen(tools=[WEB_SEARCH], tool_choice={"type": "any"})["tool_mode"] == "required"
    assert seen(tools=[WEB_SEARCH])["tool_mode"] == "auto"
    assert seen(tools=[WEB_SEARCH], tool_choice={"type": "none"})["tools"] is None


def test_the_history_round_trip(claude: anthropic.Anthropic) -> None:
    question = script(call("web_search", query="bounding volume"))
    first = claude.messages.create(model="agent", max_tokens=200, tools=[WEB_SEARCH],
                                   messages=[{"role": "user", "content": question}])
    history = [{"role": "user", "content": question}, {"role": "assistant", "content": first.content},
               {"role": "user", "content": "Thanks"}]
    echoed = claude.messages.create(model="echo", max_tokens=50, tools=[WEB_SEARCH], messages=history)  # type: ignore[arg-type]
    messages = json.loads(echoed.content[-1].text)["messages"]  # type: ignore[union-attr]
    use = first.content[0]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    call_id = "call_" + use.id.removeprefix("srvtoolu_")  # type: ignore[union-attr]  # the model's own id again
    assert messages[1]["tool_calls"] == [{"id": call_id, "type": "function",
                                          "function": {"name": "web_search", "arguments": '{"query": "bounding volume"}'}}]
    assert messages[2]["tool_call_id"] == call_id
    assert messages[2]["content"].startswith("[1] Bounding volumes\nURL: local:bvh.md\n")
    assert "A bounding volume hierarchy speeds up" in messages[2]["content"]  # the result's text, from encrypted_content
    assert messages[3]["content"] == ANSWER


def test_a_server_tool_the_config_does_not_enable_is_a_400(server_factory: Any) -> None:
    narrow = server_factory(f'[agent]\ntools = ["code_interpreter"]\n\n{keys()}' + scripted_model_toml("agent"), health_key=KEY)
    with anthropic.Anthropic(base_url=narrow.base_url, api_key=KEY, max_retries=0) as other:
        for tool, hosted in ((WEB_SEARCH, "web_search"), (BASH, "shell")):
            with pytest.raises(anthropic.BadRequestError) as refused:
                other.messages.create(model="agent", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                                      tools=[tool])  # type: ignore[list-item]
            body = refused.value.body
            assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
            assert f"'{tool['type']}' (tools.0)" in body["error"]["message"]
            assert f"hosted tool '{hosted}', which is not enabled" in body["error"]["message"]


def test_a_key_without_agent_tools_gets_a_403(server: Any) -> None:
    with anthropic.Anthropic(base_url=server.base_url, api_key=NO_AGENT_KEY, max_retries=0) as bob:
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            bob.messages.create(model="agent", max_tokens=5, messages=[{"role": "user", "content": "hi"}], tools=[WEB_SEARCH])  # type: ignore[list-item]
        assert refused.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
        assert "agent = false" in refused.value.body["error"]["message"]  # type: ignore[index]
        plain = bob.messages.create(model="agent", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert plain.stop_reason in ("end_turn", "max_tokens")



@needs_sandbox
def test_history_sent_back_to_its_container_is_not_doubled(claude: anthropic.Anthropic) -> None:
    # The session keeps the loop's transcript, and the client sends the same exchange back as blocks: the
    # prompt holds it once.
    question = script(call("code_interpreter", code="print(6 * 7)"))
    first = claude.messages.create(model="agent", max_tokens=200, tools=[CODE], messages=[{"role": "user", "content": question}])
    assert first.container is not None
    history = [{"role": "user", "content": question}, {"role": "assistant", "content": first.content},
               {"role": "user", "content": "And now?"}]
    echoed = claude.messages.create(model="echo", max_tokens=50, tools=[CODE], messages=history,  # type: ignore[arg-type]
                                    container=first.container.id)
    messages = json.loads(echoed.content[-1].text)["messages"]  # type: ignore[union-attr]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[2]["content"] == "stdout:\n42\n"
