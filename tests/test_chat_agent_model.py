"""The agent loop on a real model (SmolLM2 through llama.cpp): a forced first call makes the tiny model call a
hosted tool with grammar-constrained arguments, the tool really runs (the `local` search provider; Python in the
sandbox), its result goes back into the prompt, and the model answers from it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.conftest import chat_model_toml

pytestmark = pytest.mark.real_model
HAVE_BWRAP = os.access("/usr/bin/bwrap", os.X_OK)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="modelyard-agent-model-"))
    path.chmod(0o711)
    (path / "docs").mkdir()
    (path / "docs" / "zorland.md").write_text("# Zorland\n\nThe capital of Zorland is Quibble.\n")
    (path / "docs" / "kettles.md").write_text("# Kettles\n\nA kettle boils water for tea.\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server_factory: Any, base: Path) -> Iterator[openai.OpenAI]:
    config = (
        f'[storage]\npath = "{base / "storage" / "db.sqlite3"}"\n\n'
        '[agent]\ntools = ["web_search", "code_interpreter"]\n\n'
        f'[agent.search]\nprovider = "local"\nfolder = "{base / "docs"}"\n\n'
        f'[agent.sandbox]\nmode = "{"on" if HAVE_BWRAP else "off"}"\n\n' + chat_model_toml("smollm2")
    )
    server = server_factory(config)
    with openai.OpenAI(base_url=f"{server.base_url}/v1", max_retries=0, timeout=120, api_key="none") as c:
        yield c


def test_a_forced_search_reaches_the_model(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is the capital of Zorland? Search for it."}]
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=question, web_search_options={}, max_tokens=40, temperature=0,
        tool_choice={"type": "function", "function": {"name": "web_search"}},
    )
    body = raw.http_response.json()
    first = body["agentic_tool_calls"][0]
    assert first["round"] == 1 and first["name"] == "web_search"
    query = json.loads(first["arguments"])["query"]
    assert isinstance(query, str) and query  # the grammar made the model write a query
    plain = client.chat.completions.create(model="smollm2", messages=question, max_tokens=40, temperature=0)
    # The search results went into the prompt: it is longer than the question alone by the results' text
    # (and the tool definition), summed over the two rounds.
    assert body["usage"]["prompt_tokens"] > 2 * plain.usage.prompt_tokens + 20
    if first["data"]["results_count"]:
        assert body["choices"][0]["message"]["annotations"][0]["type"] == "url_citation"


@pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap (/usr/bin/bwrap) is not installed")
def test_forced_code_runs_for_real(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "Use Python to print 6*7."}], max_tokens=60, temperature=0,
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}], tool_choice="required",
        extra_body={"max_tool_rounds": 1},
    )
    body = raw.http_response.json()
    record = body["agentic_tool_calls"][0]
    data = record["data"]
    assert record["name"] == "code_interpreter" and data["code"] == json.loads(record["arguments"]).get("code", "")
    # Whatever the tiny model wrote really ran: it printed, or Python said why not.
    assert data["stdout"] or data["stderr"] or data.get("exception")
    assert body["choices"][0]["finish_reason"] == "stop"
