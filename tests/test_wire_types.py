"""Strict wire types, as at OpenAI: a string where a boolean or a number
belongs, a boolean where a number belongs, a fraction where an integer
belongs get 400 `invalid_type` naming the field, in the API's error shape;
JSON integers are still numbers. A real server with no models: the body is
checked before any model is looked up, so an accepted body gets 404
`model_not_found` instead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
CLAUDE = {"model": "m", "max_tokens": 5, "messages": MESSAGES}

REFUSED = [
    (CHAT, {"messages": MESSAGES, "stream": "yes"}, "stream"),
    (CHAT, {"messages": MESSAGES, "stream": "true"}, "stream"),
    (CHAT, {"messages": MESSAGES, "stream": 1}, "stream"),
    (CHAT, {"messages": MESSAGES, "top_p": "0.5"}, "top_p"),
    (CHAT, {"messages": MESSAGES, "max_tokens": "10"}, "max_tokens"),
    (CHAT, {"messages": MESSAGES, "n": 1.5}, "n"),
    (CHAT, {"messages": MESSAGES, "n": True}, "n"),
    (CHAT, {"messages": MESSAGES, "temperature": True}, "temperature"),
    (CHAT, {"messages": MESSAGES, "seed": "7"}, "seed"),
    (CHAT, {"messages": MESSAGES, "logprobs": "true"}, "logprobs"),
    (CHAT, {"messages": MESSAGES, "logit_bias": {"1": "5"}}, "logit_bias.1"),
    (CHAT, {"messages": MESSAGES, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ("/v1/completions", {"prompt": "hi", "echo": "false"}, "echo"),
    ("/v1/completions", {"prompt": "hi", "best_of": "2"}, "best_of"),
    ("/v1/embeddings", {"input": "hi", "dimensions": "3"}, "dimensions"),
    ("/v1/responses", {"input": "hi", "stream": "yes"}, "stream"),
    ("/v1/responses", {"input": "hi", "temperature": "1"}, "temperature"),
    ("/v1/responses", {"input": "hi", "store": "false"}, "store"),
    ("/v1/audio/speech", {"input": "hi", "speed": "1.0"}, "speed"),
    ("/v1/images/generations", {"prompt": "a cat", "n": "1"}, "n"),
]
ANTHROPIC_REFUSED = [
    ({**CLAUDE, "max_tokens": "10"}, "max_tokens"),
    ({**CLAUDE, "stream": "true"}, "stream"),
    ({**CLAUDE, "top_k": 1.5}, "top_k"),
    ({**CLAUDE, "temperature": False}, "temperature"),
]
# Integers for numbers, and the fields that take several types.
ACCEPTED = [
    (CHAT, {"messages": MESSAGES, "temperature": 1, "top_p": 1, "frequency_penalty": 0, "logit_bias": {"1": 5}}),
    (CHAT, {"messages": MESSAGES, "stream": True, "stop": "x", "n": 1, "max_tokens": 3}),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stop": ["a", "b"]}),
    ("/v1/completions", {"prompt": [1, 2, 3], "stream": False, "temperature": 0}),
    ("/v1/embeddings", {"input": ["a", "b"], "dimensions": 3}),
    ("/v1/responses", {"input": [{"role": "user", "content": "hi"}], "temperature": 0, "top_p": 1}),
    ("/v1/audio/speech", {"input": "hi", "speed": 2, "voice": {"id": "alloy"}}),
    ("/v1/images/generations", {"prompt": "a cat", "n": 1, "guidance_scale": 7}),
]


@pytest.fixture(scope="module")
def client(server_factory: Any) -> Iterator[httpx.Client]:
    server = server_factory('[storage]\npath = "responses.sqlite3"\n')
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.mark.parametrize(("path", "body", "param"), REFUSED)
def test_loose_types_are_refused(client: httpx.Client, path: str, body: dict[str, Any], param: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_type", error
    assert error["message"].startswith(f"Invalid type for '{param}': expected "), error
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param"), ANTHROPIC_REFUSED)
def test_loose_types_are_refused_in_anthropic_shape(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400, response.text
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data
    # Anthropic's wording (pydantic's): "max_tokens: Input should be a valid integer".
    assert data["error"]["message"].startswith(f"{param}: Input should be "), data


@pytest.mark.parametrize(("path", "body"), ACCEPTED)
def test_strict_types_still_accept_what_openai_accepts(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body)
    # Valid: it gets as far as the model lookup, and this server has none.
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found", response.text
