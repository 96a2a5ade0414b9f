"""Anthropic's web search server tool on the real SmolLM2 through a real
server: with tool_choice forcing `web_search`, the grammar makes the model
call it, the local search runs over a folder of documents, and the model
answers from the results; the SDK reads the typed blocks, streamed and not.
`count_tokens` counts the hosted tool's description as the first round's
prompt holds it. The scripted counterpart: tests/test_messages_agent.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import ServerProcess, chat_model_toml

pytestmark = pytest.mark.real_model

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
QUESTION = [{"role": "user", "content": "Search the documents: what does a ray tracer follow?"}]


@pytest.fixture(scope="module")
def server(server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    docs: Path = tmp_path_factory.mktemp("docs")
    (docs / "rays.md").write_text("# Ray tracing\n\nA ray tracer follows rays of light from the eye into the scene.\n")
    (docs / "gardens.md").write_text("# Gardens\n\nTomatoes want sun and water.\n")
    # Small results: SmolLM2 runs with a 1024-token context here.
    agent = (f'[agent]\ntools = ["web_search"]\nmax_tool_output_chars = 600\n\n'
             f'[agent.search]\nprovider = "local"\nfolder = "{docs}"\nmax_results = 2\nmax_page_chars = 200\n\n')
    server: ServerProcess = server_factory(agent + chat_model_toml("smol"))
    return server


def test_a_forced_web_search_runs_and_the_model_answers(claude: anthropic.Anthropic) -> None:
    request: dict[str, Any] = {"model": "smol", "max_tokens": 48, "extra_body": {"top_k": 1}, "messages": QUESTION,
                               "tools": [WEB_SEARCH], "tool_choice": {"type": "tool", "name": "web_search"}}
    message = claude.messages.create(**request)
    use, result = message.content[0], message.content[1]
    assert isinstance(use, anthropic.types.ServerToolUseBlock) and use.name == "web_search"
    assert isinstance(use.input, dict) and isinstance(use.input.get("query"), str) and use.input["query"].strip()
    assert isinstance(result, anthropic.types.WebSearchToolResultBlock) and result.tool_use_id == use.id
    assert isinstance(result.content, list)  # the search ran (SmolLM2-135M's query may find nothing)
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 1
    # max_uses 1: a second search would have been refused and not counted; the answer follows.
    assert message.stop_reason in ("end_turn", "max_tokens", "pause_turn")
    with claude.messages.stream(**request) as stream:
        streamed = stream.get_final_message()
    # Greedy, and round 1's prompt is the same: the same forced call, with the same results. (The second
    # round may read its prompt from the cache the first request left, at another split point, so its text
    # is not compared.)
    assert streamed.content[0].input == use.input  # type: ignore[union-attr]
    assert streamed.content[1].model_dump(exclude={"tool_use_id"}) == result.model_dump(exclude={"tool_use_id"})
    assert streamed.usage.server_tool_use == message.usage.server_tool_use


def test_count_tokens_counts_the_hosted_tool(claude: anthropic.Anthropic) -> None:
    bare = claude.messages.count_tokens(model="smol", messages=QUESTION).input_tokens  # type: ignore[arg-type]
    searching = claude.messages.count_tokens(model="smol", messages=QUESTION, tools=[WEB_SEARCH]).input_tokens  # type: ignore[arg-type, list-item]
    assert searching > bare + 20  # the web_search function's description and schema
