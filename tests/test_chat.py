"""Chat completions on the real SmolLM2 through a real server: routing,
OpenAI-exact responses and streams, sampling controls, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import SMOLLM2_SOURCE, TEST_LLAMA_OPTIONS, chat_model_toml, openai_validator, sse_events

pytestmark = pytest.mark.real_model

CONFIG = (
    'default_model = "smol-a"\n'
    + chat_model_toml("smol-a")
    + chat_model_toml("smol-b", aliases=["gpt-4o-mini"])
    + chat_model_toml("hf-style/smol", load="lazy")
    + f'[[models]]\nid = "smol-embed"\nmodality = "embeddings"\nbackend = "llama-cpp"\nsource = "{SMOLLM2_SOURCE}"\n'
    'load = "lazy"\n'
    f"[models.options]\n{TEST_LLAMA_OPTIONS}"
)
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def test_completion_is_openai_shaped(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="smol-a", messages=HELLO, max_tokens=24, seed=1)
    body = json.loads(raw.text)
    openai_validator("CreateChatCompletionResponse").validate(body)
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "smol-a"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert raw.headers["x-request-id"]


def test_max_tokens_stops_with_length_and_exact_count(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
    for field in ("max_tokens", "max_completion_tokens"):
        completion = client.chat.completions.create(model="smol-a", messages=messages, seed=3, **{field: 7})
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 7


def test_routing_by_id_alias_and_default(client: openai.OpenAI, server: Any) -> None:
    assert client.chat.completions.create(model="smol-b", messages=HELLO, max_tokens=2).model == "smol-b"
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=2).model == "smol-b"
    assert client.chat.completions.create(model="default", messages=HELLO, max_tokens=2).model == "smol-a"
    # `model` omitted altogether: the default model.
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "smol-a"


def test_models_list_and_retrieve(client: openai.OpenAI, server: Any) -> None:
    raw = httpx.get(f"{server.base_url}/v1/models").json()
    openai_validator("ListModelsResponse").validate(raw)
    cards = {m["id"]: m for m in raw["data"]}
    assert set(cards) == {"smol-a", "smol-b", "hf-style/smol", "smol-embed"}
    assert cards["smol-a"]["status"] == "loaded"
    assert cards["smol-b"]["aliases"] == ["gpt-4o-mini"]
    assert cards["smol-embed"]["modality"] == "embeddings"
    assert all(c["object"] == "model" and c["owned_by"] and c["created"] > 0 for c in cards.values())
    # Ids with a slash, as the SDK sends them (URL-encoded).
    model = client.models.retrieve("hf-style/smol")
    assert model.id == "hf-style/smol"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


def test_lazy_model_loads_on_first_request(client: openai.OpenAI, server: Any) -> None:
    assert server.health()["models"]["hf-style/smol"]["status"] == "unloaded"  # no test before this one used it
    completion = client.chat.completions.create(model="hf-style/smol", messages=HELLO, max_tokens=3)
    assert completion.model == "hf-style/smol"
    assert server.health()["models"]["hf-style/smol"]["status"] == "loaded"


def test_stream_framing(server: Any) -> None:
    request = {"model": "smol-a", "messages": HELLO, "max_tokens": 16, "stream": True, "seed": 5}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    validator = openai_validator("CreateChatCompletionStreamResponse")
    for chunk in chunks:
        validator.validate(chunk)
        assert chunk["object"] == "chat.completion.chunk"
        assert "usage" not in chunk  # only with stream_options.include_usage
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip()


def test_stream_usage_chunk(server: Any) -> None:
    request = {
        "model": "smol-a",
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 6
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 6


def test_stream_matches_non_stream_for_same_seed(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "smol-a", "messages": HELLO, "max_tokens": 20, "seed": 42, "temperature": 0.9}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    parts = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(stream=True, **kwargs)
        if chunk.choices
    ]
    assert "".join(parts) == whole


def test_sdk_stream_helper_accumulates(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    with client.chat.completions.stream(model="smol-b", messages=messages, max_tokens=200, seed=2) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert deltas
    assert final.choices[0].message.content == "".join(deltas)


def test_seed_reproducible(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "smol-a", "messages": HELLO, "max_tokens": 24, "temperature": 1.0}
    first = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    second = client.chat.completions.create(seed=1234, **kwargs).choices[0].message.content
    assert first == second
    others = {client.chat.completions.create(seed=s, **kwargs).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {first}) > 1, "different seeds should not all give the same text"


def test_stop_sequence_cuts_and_is_not_returned(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": "smol-a",
        "messages": [{"role": "user", "content": "Describe the sea in three sentences."}],
        "max_tokens": 40,
        "seed": 9,
        "temperature": 0.7,
    }
    full = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    words = full.split()
    assert len(words) >= 6, full
    stop = " " + words[4]
    cut = client.chat.completions.create(stop=[stop, "@@never@@"], **kwargs)
    text = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in text
    assert full.startswith(text)
    assert len(text) < len(full)


def test_temperature_zero_is_greedy(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "smol-a", "messages": HELLO, "max_tokens": 16, "temperature": 0}
    assert {client.chat.completions.create(seed=s, **kwargs).choices[0].message.content for s in (1, 2)}.__len__() == 1


def test_system_and_developer_messages_and_content_parts(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smol-a",
        messages=[
            {"role": "developer", "content": "You answer in English."},
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        ],
        max_tokens=8,
    )
    assert completion.choices[0].message.content


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    openai_validator("ErrorResponse").validate(body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("payload", "status", "param", "code"),
    [
        ({"model": "nope", "messages": HELLO}, 404, "model", "model_not_found"),
        ({"model": "smol-embed", "messages": HELLO}, 400, "model", "model_modality_mismatch"),
        ({"model": "smol-a"}, 400, "messages", None),
        ({"model": "smol-a", "messages": []}, 400, "messages", None),
        ({"model": "smol-a", "messages": HELLO, "temperature": 5}, 400, "temperature", None),
        ({"model": "smol-a", "messages": HELLO, "max_tokens": 0}, 400, "max_tokens", None),
        ({"model": "smol-a", "messages": HELLO, "frobnicate": 1}, 400, "frobnicate", None),
        ({"model": "smol-a", "messages": [{"role": "wizard", "content": "hi"}]}, 400, None, None),
        ({"model": "smol-a", "messages": HELLO, "tools": [], "tool_choice": "required"}, 400, "tool_choice", None),
        ({"model": "smol-a", "messages": HELLO, "top_logprobs": 2}, 400, "top_logprobs", None),
        ({"model": "smol-a", "messages": HELLO, "logit_bias": {"abc": 1}}, 400, "logit_bias", None),
        ({"model": "smol-a", "messages": HELLO, "functions": [{"name": "f"}]}, 400, "functions", "unsupported_parameter"),
        ({"model": "smol-a", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
        ({"model": "smol-a", "messages": [{"role": "user", "content": "word " * 2000}]}, 400, "messages", None),
        (
            # smol-a has no projector: the part is named (tests/test_vision.py serves one that has).
            {"model": "smol-a", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
            400,
            "messages[0].content[0]",
            None,
        ),
    ],
)
def test_bad_requests_get_openai_errors(server: Any, payload: dict[str, Any], status: int, param: str | None, code: str | None) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=payload, timeout=60)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_malformed_json_and_non_object(server: Any) -> None:
    url = f"{server.base_url}/v1/chat/completions"
    broken = httpx.post(url, content=b'{"model": "smol-a", "messages": [', headers={"content-type": "application/json"})
    assert broken.status_code == 400
    assert error_of(broken)["code"] == "invalid_json"
    listed = httpx.post(url, json=[1, 2, 3])
    assert listed.status_code == 400
    error_of(listed)
    empty = httpx.post(url, content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400
    error_of(empty)


def test_unknown_route_and_method(server: Any) -> None:
    missing = httpx.get(f"{server.base_url}/v1/nothing-here")
    assert missing.status_code == 404
    assert error_of(missing)["type"] == "not_found_error"
    wrong = httpx.get(f"{server.base_url}/v1/chat/completions")
    assert wrong.status_code == 405
    error_of(wrong)


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smol-a", messages=HELLO, temperature=9)
    assert bad.value.param == "temperature"


def test_request_id_is_echoed(server: Any) -> None:
    response = httpx.get(f"{server.base_url}/v1/models", headers={"x-request-id": "my-trace-42"})
    assert response.headers["x-request-id"] == "my-trace-42"
    made = httpx.get(f"{server.base_url}/v1/models")
    assert made.headers["x-request-id"].startswith("req_")


def test_server_survives_errors(client: openai.OpenAI) -> None:
    # After every error above, the model still answers.
    assert client.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=3).choices[0].message.content
