"""Each API surface's rendering of scripted model output — text, reasoning,
tool calls, stop reasons, a worker crash — in JSON and in streams, through a
real server process whose models are the scripted fake backend
(tests/scripted_backend): exact, deterministic, no model loaded.

Also the fast tier's own guarantees: the scripted backend is registered
through the backend entry point, and a test not marked real_model cannot
start a real backend."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import openai
import pytest
from modelyard.adapters.catalog import ENTRY_POINT_GROUP, backends

from tests.conftest import local_http, real_backends_of, script, scripted_model_toml, sse_events
from tests.conftest import scripted_user as user

if TYPE_CHECKING:  # the SDK is imported by the claude fixture, on the xdist worker that runs it (2.7 s of CPU)
    import anthropic

WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
TOOL_CALL = {"tool_call": {"name": "weather", "arguments": {"city": "Paris"}}}
CONFIG = (
    scripted_model_toml("fake", aliases=["gpt-4o-mini"])
    + scripted_model_toml("fake-embed", "embeddings")
    + scripted_model_toml("crashy", options='script = ["Hi", { crash = true }]\n', load="lazy")
)


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)




# --- the fast tier itself ---------------------------------------------------------


def test_scripted_backend_is_a_registered_entry_point_plugin() -> None:
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert "scripted" in names, "pip install -e tests/scripted_backend --no-deps"
    backend = backends()["scripted"]
    assert backend.extra is None  # a third-party backend, not a built-in one
    assert set(backend.modalities) == {"chat", "embeddings", "image", "speech", "transcription"}


def test_guard_sees_real_backends(tmp_path: Any) -> None:
    config = tmp_path / "config.toml"
    config.write_text(scripted_model_toml("a") + scripted_model_toml("b", "embeddings"))
    assert real_backends_of(["-c", str(config)]) == []
    config.write_text(scripted_model_toml("a") + scripted_model_toml("b").replace('"scripted"', '"llama-cpp"'))
    assert real_backends_of(["-c", str(config)]) == ["llama-cpp"]
    assert real_backends_of(["-m", "model.gguf"]) and real_backends_of([])  # a -m model; the default config


# --- chat completions --------------------------------------------------------------


def test_chat_json_text_and_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="fake", messages=user("Hello", ",", " world"))
    choice = completion.choices[0]
    assert choice.message.content == "Hello, world" and choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert completion.model == "fake"


def test_alias_routes_to_the_model(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="gpt-4o-mini", messages=user("x")).choices[0].message.content == "x"


def test_chat_max_tokens_is_length(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(model="fake", messages=user("a", "b", "c"), max_tokens=2).choices[0]
    assert choice.message.content == "ab" and choice.finish_reason == "length"


def test_chat_stop_string(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(model="fake", messages=user("one ", "two ", "three"), stop=["two"]).choices[0]
    assert choice.message.content == "one " and choice.finish_reason == "stop"


def test_chat_reasoning_is_split_out(client: openai.OpenAI) -> None:
    message = client.chat.completions.create(model="fake", messages=user({"reasoning": "hmm"}, "Answer")).choices[0].message
    assert message.content == "Answer"
    assert getattr(message, "reasoning_content", None) == "hmm"


def test_chat_tool_call_json(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(model="fake", messages=user(TOOL_CALL), tools=[WEATHER]).choices[0]  # type: ignore[list-item]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_chat_stream_pieces_in_order(server: Any) -> None:
    body = {"model": "fake", "messages": user("a", "b", "c"), "stream": True, "stream_options": {"include_usage": True}}
    with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "abc"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_chat_stream_tool_call(server: Any) -> None:
    body = {"model": "fake", "messages": user("Let me check.", TOOL_CALL), "tools": [WEATHER], "stream": True}
    with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        chunks = [json.loads(e) for e in sse_events(response)[:-1]]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls and calls[0]["function"]["name"] == "weather"
    assert json.loads("".join(tc["function"].get("arguments") or "" for tc in calls)) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_backend_error_is_a_clean_500_and_invalid_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fake", messages=user({"error": "boom"}))
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="fake", messages=user({"invalid": "no such thing"}))
    assert "no such thing" in str(bad.value)


def test_worker_crash_fails_the_request_and_the_next_one_restarts_it(server: Any, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as crashed:
        client.chat.completions.create(model="crashy", messages=[{"role": "user", "content": "hi"}])
    assert crashed.value.code == "worker_crashed", crashed.value.body
    assert server.proc.poll() is None  # the server lives on
    health = server.health()["models"]
    assert health["crashy"]["status"] == "failed" and health["crashy"]["pid"] is None
    assert "exited unexpectedly (status 4)" in health["crashy"]["error"]
    assert health["fake"]["status"] == "loaded"  # the other model's worker is untouched
    # The request's own script (no crash event) on a fresh worker.
    assert client.chat.completions.create(model="crashy", messages=user("back")).choices[0].message.content == "back"
    assert server.health()["models"]["crashy"]["status"] == "loaded"


# --- legacy completions ------------------------------------------------------------


def test_completions_json_and_stream(client: openai.OpenAI, server: Any) -> None:
    completion = client.completions.create(model="fake", prompt=script("x", "y"), max_tokens=5)
    assert completion.choices[0].text == "xy" and completion.choices[0].finish_reason == "stop"
    body = {"model": "fake", "prompt": script("p", "q", "r"), "max_tokens": 2, "stream": True}
    with local_http.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=60) as response:
        chunks = [json.loads(e) for e in sse_events(response)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "pq"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


# --- Anthropic Messages ------------------------------------------------------------


def test_messages_json_text_and_thinking(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="fake", max_tokens=50, messages=user({"reasoning": "ponder"}, "Done"))  # type: ignore[arg-type]
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text"], kinds
    assert message.content[-1].text == "Done"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"


def test_messages_max_tokens_and_stop_sequence(claude: anthropic.Anthropic) -> None:
    cut = claude.messages.create(model="fake", max_tokens=1, messages=user("a", "b"))  # type: ignore[arg-type]
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "a"  # type: ignore[union-attr]
    stopped = claude.messages.create(model="fake", max_tokens=9, messages=user("a", "STOP", "b"), stop_sequences=["STOP"])  # type: ignore[arg-type]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "STOP"


def test_messages_tool_use_json_and_stream(claude: anthropic.Anthropic) -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    message = claude.messages.create(model="fake", max_tokens=50, messages=user(TOOL_CALL), tools=tools)  # type: ignore[arg-type]
    assert message.stop_reason == "tool_use"
    use = [b for b in message.content if b.type == "tool_use"]
    assert len(use) == 1 and use[0].name == "weather" and use[0].input == {"city": "Paris"}  # type: ignore[union-attr]
    with claude.messages.stream(model="fake", max_tokens=50, messages=user("Checking.", TOOL_CALL), tools=tools) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_messages_stream_event_order(server: Any) -> None:
    body = {"model": "fake", "max_tokens": 50, "messages": user("a", "b"), "stream": True}
    with local_http.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=60) as response:
        kinds = [json.loads(e)["type"] for e in sse_events(response) if json.loads(e)["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds.count("content_block_delta") == 2
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


# --- Responses ---------------------------------------------------------------------


def test_responses_json_text_and_function_call(client: openai.OpenAI) -> None:
    response = client.responses.create(model="fake", input=script("Hi", " there"), store=False)
    assert response.output_text == "Hi there" and response.status == "completed"
    tool = {"type": "function", "name": "weather", "parameters": WEATHER["function"]["parameters"]}  # type: ignore[index]
    called = client.responses.create(model="fake", input=script(TOOL_CALL), tools=[tool], store=False)  # type: ignore[list-item]
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "weather" and json.loads(calls[0].arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    cut = client.responses.create(model="fake", input=script("a", "b", "c"), max_output_tokens=16, store=False)
    assert cut.output_text == "abc"


def test_responses_stream_events(client: openai.OpenAI) -> None:
    with client.responses.stream(model="fake", input=script("x", "y", "z"), store=False) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert final.output_text == "xyz"


# --- embeddings --------------------------------------------------------------------


def test_embeddings_are_deterministic_and_ordered(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="fake-embed", input=["one", "two", "one"])
    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1] and len(vectors[0]) == 8
