"""API keys (with per-key model lists), CORS on and off, and body limits,
through a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import chat_model_toml

pytestmark = pytest.mark.real_model

ALICE = "alice-secret-0001"
BOB = "bob-secret-00002"
ORIGIN = "https://app.example"
CONFIG = f"""
[logging]
format = "json"

[server]
body_limit = "64KiB"
[server.cors]
allow_origins = ["{ORIGIN}"]

[[auth.keys]]
name = "alice"
key = "${{TEST_ALICE_KEY}}"
models = ["smol*"]

[[auth.keys]]
name = "bob"
key = "{BOB}"
models = ["other"]

""" + chat_model_toml("smol-a") + chat_model_toml("other", load="lazy")

OPEN_CONFIG = chat_model_toml("lazy-one", load="lazy")
HELLO = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG, env={"TEST_ALICE_KEY": ALICE})


@pytest.fixture(scope="module")
def open_server(server_factory: Any) -> Any:
    # No keys, no CORS, default body limit; its one model is never loaded.
    return server_factory(OPEN_CONFIG, wait=False)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error


def test_missing_and_wrong_keys_get_401(server: Any) -> None:
    url = f"{server.base_url}/v1/models"
    missing = httpx.get(url)
    assert_error(missing, 401, "missing_api_key")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(httpx.get(url, headers=auth("not-a-key-at-all")), 401, "invalid_api_key")
    assert_error(httpx.get(url, headers={"authorization": "Basic " + ALICE}), 401, "missing_api_key")
    chat = httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "smol-a", "messages": HELLO})
    assert_error(chat, 401)


def test_bearer_and_x_api_key_both_work(server: Any) -> None:
    assert httpx.get(f"{server.base_url}/v1/models", headers=auth(ALICE)).status_code == 200
    assert httpx.get(f"{server.base_url}/v1/models", headers={"x-api-key": ALICE}).status_code == 200


def test_open_routes_need_no_key(server: Any) -> None:
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    assert httpx.get(f"{server.base_url}/openapi.json").status_code == 200
    assert httpx.get(f"{server.base_url}/docs").status_code == 200


def test_models_list_shows_only_what_the_key_may_use(server: Any) -> None:
    alice = httpx.get(f"{server.base_url}/v1/models", headers=auth(ALICE)).json()
    assert [m["id"] for m in alice["data"]] == ["smol-a"]
    bob = httpx.get(f"{server.base_url}/v1/models", headers=auth(BOB)).json()
    assert [m["id"] for m in bob["data"]] == ["other"]
    assert_error(httpx.get(f"{server.base_url}/v1/models/other", headers=auth(ALICE)), 404, "model_not_found")
    assert httpx.get(f"{server.base_url}/v1/models/other", headers=auth(BOB)).status_code == 200


def test_per_key_model_access(server: Any) -> None:
    alice = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=ALICE, max_retries=0)
    assert alice.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=2).model == "smol-a"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        alice.chat.completions.create(model="other", messages=HELLO, max_tokens=2)
    assert denied.value.code == "model_not_allowed"
    bob = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=BOB, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        bob.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=2)
    # The denied model was never loaded for the request.
    assert server.health()["models"]["other"]["status"] == "unloaded"
    alice.close()
    bob.close()


def test_json_access_log_without_keys(server: Any) -> None:
    httpx.get(f"{server.base_url}/v1/models", headers={**auth(ALICE), "x-request-id": "trace-json-1"})
    httpx.get(f"{server.base_url}/v1/models", headers=auth("wrong-key-xyz-123"))
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    access = [r for r in records if r["logger"] == "modelyard.access" and r.get("request_id") == "trace-json-1"]
    assert access, server.log()
    assert access[0]["status"] == 200 and access[0]["key_name"] == "alice" and access[0]["path"] == "/v1/models"
    assert access[0]["duration_ms"] >= 0
    log = server.log()
    assert "GET /v1/models" in log
    for secret in (ALICE, BOB, "wrong-key-xyz-123"):
        assert secret not in log


def test_cors_preflight_and_simple_requests(server: Any) -> None:
    preflight = httpx.options(
        f"{server.base_url}/v1/chat/completions",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    denied = httpx.options(
        f"{server.base_url}/v1/chat/completions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers
    simple = httpx.get(f"{server.base_url}/v1/models", headers={"origin": ORIGIN, **auth(ALICE)})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    # Error answers carry CORS headers too, so a browser app can read them.
    refused = httpx.get(f"{server.base_url}/v1/models", headers={"origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(f"{server.base_url}/v1/models", headers={"origin": "https://evil.example", **auth(ALICE)})
    assert "access-control-allow-origin" not in other.headers


def test_cors_off_sends_no_cors_headers(open_server: Any) -> None:
    preflight = httpx.options(
        f"{open_server.base_url}/v1/models", headers={"origin": ORIGIN, "access-control-request-method": "GET"}
    )
    assert not any(h.startswith("access-control-") for h in preflight.headers)
    simple = httpx.get(f"{open_server.base_url}/v1/models", headers={"origin": ORIGIN})
    assert simple.status_code == 200
    assert not any(h.startswith("access-control-") for h in simple.headers)


def body_of(size: int) -> bytes:
    # A valid chat request padded to `size` bytes with whitespace.
    core = b'{"model": "smol-a", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}'
    return core + b" " * (size - len(core))


def chunked(data: bytes, piece: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def test_body_limit_with_content_length(server: Any) -> None:
    url = f"{server.base_url}/v1/chat/completions"
    headers = {"content-type": "application/json", **auth(ALICE)}
    over = httpx.post(url, content=body_of(64 * 1024 + 1), headers=headers)
    assert_error(over, 413, "request_too_large")
    under = httpx.post(url, content=body_of(64 * 1024), headers=headers, timeout=60)
    assert under.status_code == 200, under.text


def test_body_limit_without_content_length(server: Any) -> None:
    url = f"{server.base_url}/v1/chat/completions"
    headers = {"content-type": "application/json", **auth(ALICE)}
    with httpx.Client(timeout=60) as client:
        over = client.post(url, content=chunked(body_of(200 * 1024)), headers=headers)
        assert "content-length" not in over.request.headers
        assert_error(over, 413, "request_too_large")
        under = client.post(url, content=chunked(body_of(32 * 1024)), headers=headers)
        assert under.status_code == 200, under.text
