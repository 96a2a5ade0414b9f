"""Anthropic's Messages API on the real SmolLM2 through a real server, driven
by the official `anthropic` SDK (base URL without /v1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import chat_model_toml

pytestmark = pytest.mark.real_model

KEY = "anthropic-test-key-1"
# A strict template, as Qwen3's (one leading system message only), that also
# opens the reasoning tag itself unless enable_thinking is false, as
# DeepSeek-R1's: SmolLM2 never writes <think> on its own.
STRICT_THINKING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('System message must be at the beginning.') }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is not defined or enable_thinking %}<think>\n{% endif %}{% endif %}"
)
CONFIG = (
    f'[server]\nbody_limit = "32KiB"\n[[auth.keys]]\nname = "claude-code"\nkey = "{KEY}"\nmetrics = true\n\n'
    + chat_model_toml("smol")
    + chat_model_toml("smol-strict")
    + f"chat_template = {json.dumps(STRICT_THINKING_TEMPLATE)}\ntop_k = 1\n"
)
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG, health_key=KEY)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120) as client:
        yield client


def test_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="smol", max_tokens=24, system="You are brief.", messages=[{"role": "user", "content": "Say hello."}]
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "smol"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5 and 0 < message.usage.output_tokens <= 24


def test_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="smol", max_tokens=3, messages=[{"role": "user", "content": "Write a long story."}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


def test_stop_sequence_is_reported(client: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": "smol", "max_tokens": 40, "messages": ASK, "extra_body": {"temperature": 0}}
    full = client.messages.create(**kwargs).content[0].text  # type: ignore[union-attr]
    stop = full.split()[3]
    cut = client.messages.create(stop_sequences=[stop], **kwargs)
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert stop not in cut.content[0].text  # type: ignore[union-attr]


def test_text_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="smol", max_tokens=20, messages=[{"role": "user", "content": "Say hello."}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


def test_raw_event_sequence(server: Any) -> None:
    request = {"model": "smol", "max_tokens": 8, "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json=request, headers={"x-api-key": KEY}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    body = [n for n in names if n != "ping"]
    assert body[1] == "content_block_start" and body[-3] == "content_block_stop"
    assert set(body[2:-3]) == {"content_block_delta"}
    start = datas[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    delta = datas[-2]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 8


def test_forced_tool_use(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="smol", max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    )
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id.startswith("toolu_")
    jsonschema.validate(uses[0].input, WEATHER["input_schema"])


def test_streamed_tool_use_and_round_trip(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="smol",
        max_tokens=100,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(uses) == 1
    jsonschema.validate(uses[0].input, WEATHER["input_schema"])
    reply = client.messages.create(
        model="smol",
        max_tokens=30,
        tools=[WEATHER],
        messages=[
            *ASK,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}]},
        ],
    )
    assert reply.content and reply.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model="smol", messages=[{"role": "user", "content": "Hi"}])
    longer = client.messages.count_tokens(model="smol", messages=[{"role": "user", "content": "Hi " * 50}])
    assert 0 < short.input_tokens < longer.input_tokens
    made = client.messages.create(model="smol", max_tokens=1, messages=[{"role": "user", "content": "Hi"}])
    # Anthropic's input_tokens leaves out the prompt tokens read from the cache (reuse_prefix).
    assert made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0) == short.input_tokens


def anthropic_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert set(body["error"]) == {"type", "message"}
    assert body["request_id"] == response.headers["x-request-id"]


def test_errors_take_anthropic_shape(server: Any) -> None:
    url = f"{server.base_url}/v1/messages"
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    anthropic_error(httpx.post(url, json={"model": "smol", "messages": ASK}), 401, "authentication_error")
    anthropic_error(httpx.post(url, json={"model": "smol", "messages": ASK}, headers=headers), 400, "invalid_request_error")
    anthropic_error(httpx.post(url, json={"model": "nope", "max_tokens": 5, "messages": ASK}, headers=headers), 404, "not_found_error")
    big = {"model": "smol", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 40000}]}
    anthropic_error(httpx.post(url, json=big, headers=headers), 413, "request_too_large")
    anthropic_error(httpx.post(url, content=b"{", headers={**headers, "content-type": "application/json"}), 400, "invalid_request_error")
    # The same server still answers OpenAI routes in OpenAI's shape.
    openai_style = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "nope", "messages": ASK}, headers=headers)
    assert openai_style.status_code == 404 and set(openai_style.json()) == {"error"}


def test_sdk_raises_typed_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=ASK)
    with anthropic.Anthropic(base_url=client.base_url, api_key="wrong-key-000", max_retries=0) as stranger:
        with pytest.raises(anthropic.AuthenticationError):
            stranger.messages.create(model="smol", max_tokens=5, messages=ASK)


# --- what coding agents send ---------------------------------------------------------


MID_SYSTEM = [
    {"role": "user", "content": "Say hello."},
    {"role": "system", "content": "Answer in one short sentence."},
]
MERGED_BY_HAND = "You are brief.\n\nAnswer in one short sentence."


def count(client: anthropic.Anthropic, model: str, **body: Any) -> int:
    return client.messages.count_tokens(model=model, **body).input_tokens


def test_system_messages_in_place_or_merged_as_the_template_needs(client: anthropic.Anthropic) -> None:
    with_mid: dict[str, Any] = {"system": "You are brief.", "messages": MID_SYSTEM}
    merged: dict[str, Any] = {"system": MERGED_BY_HAND, "messages": MID_SYSTEM[:1]}
    # ChatML takes a system turn anywhere: the prompt keeps it where it was sent.
    assert count(client, "smol", **with_mid) != count(client, "smol", **merged)
    # The strict template rejects it there: it is merged into the leading system message.
    assert count(client, "smol-strict", **with_mid) == count(client, "smol-strict", **merged)
    for model in ("smol", "smol-strict"):
        message = client.messages.create(model=model, max_tokens=16, thinking={"type": "disabled"}, **with_mid)
        assert message.content[-1].type == "text" and message.content[-1].text.strip()


def thinking_of(message: Any) -> str:
    return "".join(b.thinking for b in message.content if b.type == "thinking")


def test_thinking_budget_closes_the_reasoning_tag(client: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {"model": "smol-strict", "max_tokens": 48, "messages": [{"role": "user", "content": "What is 2+2?"}]}
    short = client.messages.create(thinking={"type": "enabled", "budget_tokens": 6}, **ask)
    longer = client.messages.create(thinking={"type": "enabled", "budget_tokens": 18}, **ask)
    kinds = [b.type for b in short.content]
    assert kinds == ["thinking", "text"], short.content
    assert short.content[0].signature  # type: ignore[union-attr]
    assert short.content[1].text.strip()  # type: ignore[union-attr]
    # Greedy: the same thinking, cut off sooner by the smaller budget; with
    # room enough, the model ends its thinking itself, as without a budget.
    assert thinking_of(longer).startswith(thinking_of(short)) and len(thinking_of(longer)) > len(thinking_of(short))
    unbounded = client.messages.create(thinking={"type": "adaptive"}, **ask)
    assert thinking_of(unbounded) == thinking_of(longer)
    off = client.messages.create(thinking={"type": "disabled"}, **ask)
    assert [b.type for b in off.content] == ["text"]


def test_streamed_thinking_ends_with_its_signature(server: Any) -> None:
    body = {
        "model": "smol-strict",
        "max_tokens": 24,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 5},
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=120) as response:
        datas = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [d["delta"]["type"] for d in datas if d["type"] == "content_block_delta" and d["index"] == 0]
    assert datas[1]["type"] == "ping" or datas[1]["type"] == "content_block_start"
    assert deltas[0] == "thinking_delta" and deltas[-1] == "signature_delta" and deltas.count("signature_delta") == 1
    counted = httpx.post(f"{server.base_url}/v1/messages/count_tokens", json=body, headers={"x-api-key": KEY}, timeout=60)
    usage = datas[0]["message"]["usage"]  # input_tokens leaves out the prompt tokens read from the cache
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == counted.json()["input_tokens"] > 0


def test_output_config_format_is_enforced(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    message = client.messages.create(
        model="smol",
        max_tokens=40,
        messages=[{"role": "user", "content": "Name a city in France."}],
        extra_body={"output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}}},
    )
    jsonschema.validate(json.loads(message.content[0].text), schema)  # type: ignore[union-attr]
