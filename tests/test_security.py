"""API keys (with per-key model lists and limits), what anonymous callers
see, CORS on and off, body limits, auth before body, and connection limits,
through a real server process with scripted (model-free) models: none of
this depends on what a model says."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import local_http, scripted_model_toml

# 60 pieces, 20 ms apart: a stream that stays open while a test looks at the limits.
LONG_STORY = 'script = [' + ", ".join(['" wave"'] * 60) + ']\ntoken_delay = 0.02\n'
ALICE = "alice-secret-0001"
BOB = "bob-secret-00002"
MONITOR = "monitor-secret-003"
LIMITED = "limited-secret-04"
NARROW = "narrow-secret-005"
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

[[auth.keys]]
name = "monitor"
key = "{MONITOR}"
models = []
metrics = true

[[auth.keys]]
name = "limited"
key = "{LIMITED}"
rpm = 3

[[auth.keys]]
name = "narrow"
key = "{NARROW}"
max_parallel = 1

""" + scripted_model_toml("smol-a", options=LONG_STORY) + scripted_model_toml("other", load="lazy")

HEADER_TIMEOUT = 1.5
TRICKLE = HEADER_TIMEOUT / 3  # a slow client sends one header line this often
MAX_CONNECTIONS = 8
OPEN_CONFIG = (
    f'[server]\nheader_timeout = "{HEADER_TIMEOUT}s"\nkeep_alive_timeout = "1s"\nmax_connections = {MAX_CONNECTIONS}\n\n'
    + scripted_model_toml("lazy-one", load="lazy")
)
HELLO = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG, env={"TEST_ALICE_KEY": ALICE}, health_key=MONITOR)


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
    missing = local_http.get(url)
    assert_error(missing, 401, "missing_api_key")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(local_http.get(url, headers=auth("not-a-key-at-all")), 401, "invalid_api_key")
    assert_error(local_http.get(url, headers={"authorization": "Basic " + ALICE}), 401, "missing_api_key")
    chat = local_http.post(f"{server.base_url}/v1/chat/completions", json={"model": "smol-a", "messages": HELLO})
    assert_error(chat, 401)


def test_bearer_and_x_api_key_both_work(server: Any) -> None:
    assert local_http.get(f"{server.base_url}/v1/models", headers=auth(ALICE)).status_code == 200
    assert local_http.get(f"{server.base_url}/v1/models", headers={"x-api-key": ALICE}).status_code == 200


def test_open_routes_need_no_key(server: Any) -> None:
    assert local_http.get(f"{server.base_url}/health").json() == {"status": "ok"}
    assert local_http.get(f"{server.base_url}/ready").status_code == 200
    assert local_http.get(f"{server.base_url}/openapi.json").status_code == 200
    assert local_http.get(f"{server.base_url}/docs").status_code == 200


def test_models_list_shows_only_what_the_key_may_use(server: Any) -> None:
    alice = local_http.get(f"{server.base_url}/v1/models", headers=auth(ALICE)).json()
    assert [m["id"] for m in alice["data"]] == ["smol-a"]
    bob = local_http.get(f"{server.base_url}/v1/models", headers=auth(BOB)).json()
    assert [m["id"] for m in bob["data"]] == ["other"]
    assert_error(local_http.get(f"{server.base_url}/v1/models/other", headers=auth(ALICE)), 404, "model_not_found")
    assert local_http.get(f"{server.base_url}/v1/models/other", headers=auth(BOB)).status_code == 200


def test_per_key_model_access(server: Any) -> None:
    alice = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=ALICE, max_retries=0)
    assert alice.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=2).model == "smol-a"
    with pytest.raises(openai.NotFoundError) as denied:
        alice.chat.completions.create(model="other", messages=HELLO, max_tokens=2)
    assert denied.value.code == "model_not_found"
    bob = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=BOB, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=2)
    # The denied model was never loaded for the request.
    assert server.health()["models"]["other"]["status"] == "unloaded"
    alice.close()
    bob.close()


# Every route that takes a model, with a body naming MODEL.
MODEL_ROUTES = [
    ("POST", "/v1/chat/completions", {"model": "MODEL", "messages": HELLO, "max_tokens": 1}),
    ("POST", "/v1/completions", {"model": "MODEL", "prompt": "Hi", "max_tokens": 1}),
    ("POST", "/v1/embeddings", {"model": "MODEL", "input": "Hi"}),
    ("POST", "/v1/responses", {"model": "MODEL", "input": "Hi", "max_output_tokens": 16}),
    ("POST", "/v1/messages", {"model": "MODEL", "max_tokens": 1, "messages": HELLO}),
    ("POST", "/v1/messages/count_tokens", {"model": "MODEL", "messages": HELLO}),
    ("POST", "/v1/images/generations", {"model": "MODEL", "prompt": "a cat"}),
    ("POST", "/v1/audio/speech", {"model": "MODEL", "input": "Hi", "voice": "alloy"}),
    ("GET", "/v1/audio/voices?model=MODEL", None),
    ("GET", "/v1/models/MODEL", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MODEL_ROUTES, ids=[r[1] for r in MODEL_ROUTES])
def test_a_model_the_key_may_not_use_looks_like_no_model(server: Any, method: str, path: str, body: Any) -> None:
    def ask(model: str) -> httpx.Response:
        content = json.dumps(body).replace("MODEL", model) if body is not None else None
        return local_http.request(
            method,
            server.base_url + path.replace("MODEL", model),
            content=content,
            headers={**auth(ALICE), "content-type": "application/json"},
            timeout=60,
        )

    denied, unknown = ask("other"), ask("no-such-model")
    assert denied.status_code == 404, denied.text
    assert unknown.status_code == 404, unknown.text
    # The same answer, word for word, but for the name the caller sent (and
    # the request id Anthropic's shape carries).
    first, second = denied.json(), json.loads(unknown.text.replace("no-such-model", "other"))
    first.pop("request_id", None), second.pop("request_id", None)
    assert first == second
    assert "not_found" in denied.text


def test_anonymous_callers_see_no_inventory(server: Any) -> None:
    assert server.config_path is not None
    for headers in ({}, auth(ALICE), auth(BOB)):
        health = local_http.get(f"{server.base_url}/health", headers=headers)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = local_http.get(f"{server.base_url}/ready", headers=headers)
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        for text in (health.text, ready.text):
            assert "smol-a" not in text and "other" not in text and "pid" not in text
            assert str(server.config_path) not in text
    metrics = local_http.get(f"{server.base_url}/metrics")
    assert_error(metrics, 401, "missing_api_key")
    assert "smol-a" not in metrics.text
    assert_error(local_http.get(f"{server.base_url}/metrics", headers=auth(ALICE)), 403, "metrics_required")
    assert_error(local_http.get(f"{server.base_url}/health", headers=auth("not-a-key-at-all")), 401, "invalid_api_key")


def test_a_metrics_key_sees_the_details(server: Any) -> None:
    assert server.config_path is not None
    health = local_http.get(f"{server.base_url}/health", headers=auth(MONITOR)).json()
    assert set(health["models"]) == {"smol-a", "other"}
    assert health["models"]["smol-a"]["pid"] > 0
    assert health["config"]["file"] == str(server.config_path)
    ready = local_http.get(f"{server.base_url}/ready", headers=auth(MONITOR)).json()
    assert ready == {"ready": True, "waiting_for": []}
    metrics = local_http.get(f"{server.base_url}/metrics", headers=auth(MONITOR))
    assert metrics.status_code == 200 and 'model="smol-a"' in metrics.text
    # A key with metrics = true but no models uses none.
    assert_error(
        local_http.post(f"{server.base_url}/v1/chat/completions", json={"model": "smol-a", "messages": HELLO}, headers=auth(MONITOR)),
        404,
        "model_not_found",
    )


def test_rpm_limit_answers_429_with_retry_after(server: Any) -> None:
    assert server.config_path is not None
    url = f"{server.base_url}/v1/models"
    for _ in range(3):
        assert local_http.get(url, headers=auth(LIMITED)).status_code == 200
    refused = local_http.get(url, headers=auth(LIMITED))
    error = assert_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error" and "3 per minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    # Anthropic's shape on /v1/messages, and still before the body is looked at.
    messages = local_http.post(f"{server.base_url}/v1/messages", content=b"not json", headers=auth(LIMITED))
    assert messages.status_code == 429 and int(messages.headers["retry-after"]) >= 1
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "rate_limit_error"
    # Other keys are not affected.
    assert local_http.get(url, headers=auth(ALICE)).status_code == 200
    # A reload that keeps the key keeps its count.
    number = server.health()["config"]["generation"]
    server.config_path.write_text(server.config_path.read_text() + "\n# touched\n")
    server.wait_for(lambda h: h["config"]["generation"] > number, 60, "the reload")
    assert_error(local_http.get(url, headers=auth(LIMITED)), 429, "rate_limit_exceeded")


def test_max_parallel_limit(server: Any) -> None:
    request = {
        "model": "smol-a",
        "messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "max_tokens": 60,
        "logit_bias": {"2": -100},
        "stream": True,
    }
    url = f"{server.base_url}/v1/models"
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, headers=auth(NARROW)) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            refused = local_http.get(url, headers=auth(NARROW))
            assert_error(refused, 429, "rate_limit_exceeded")
            assert refused.headers["retry-after"] == "1"
            assert "max_parallel = 1" in refused.json()["error"]["message"]
            assert local_http.get(url, headers=auth(ALICE)).status_code == 200
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
    assert local_http.get(url, headers=auth(NARROW)).status_code == 200


def test_json_access_log_without_keys(server: Any) -> None:
    local_http.get(f"{server.base_url}/v1/models", headers={**auth(ALICE), "x-request-id": "trace-json-1"})
    local_http.get(f"{server.base_url}/v1/models", headers=auth("wrong-key-xyz-123"))
    lines = server.wait_for_lines(lambda line: line.startswith("{") and '"trace-json-1"' in line)
    records = [json.loads(line) for line in lines]
    access = [r for r in records if r["logger"] == "modelyard.access" and r.get("request_id") == "trace-json-1"]
    assert access, server.log()
    assert access[0]["status"] == 200 and access[0]["key_name"] == "alice" and access[0]["path"] == "/v1/models"
    assert access[0]["duration_ms"] >= 0
    log = server.log()
    assert "GET /v1/models" in log
    for secret in (ALICE, BOB, "wrong-key-xyz-123"):
        assert secret not in log


def test_cors_preflight_and_simple_requests(server: Any) -> None:
    preflight = local_http.options(
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
    denied = local_http.options(
        f"{server.base_url}/v1/chat/completions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers
    simple = local_http.get(f"{server.base_url}/v1/models", headers={"origin": ORIGIN, **auth(ALICE)})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    # Error answers carry CORS headers too, so a browser app can read them.
    refused = local_http.get(f"{server.base_url}/v1/models", headers={"origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    other = local_http.get(f"{server.base_url}/v1/models", headers={"origin": "https://evil.example", **auth(ALICE)})
    assert "access-control-allow-origin" not in other.headers


def test_cors_off_sends_no_cors_headers(open_server: Any) -> None:
    preflight = local_http.options(
        f"{open_server.base_url}/v1/models", headers={"origin": ORIGIN, "access-control-request-method": "GET"}
    )
    assert not any(h.startswith("access-control-") for h in preflight.headers)
    simple = local_http.get(f"{open_server.base_url}/v1/models", headers={"origin": ORIGIN})
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
    over = local_http.post(url, content=body_of(64 * 1024 + 1), headers=headers)
    assert_error(over, 413, "request_too_large")
    under = local_http.post(url, content=body_of(64 * 1024), headers=headers, timeout=60)
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


# --- auth before body --------------------------------------------------------------------


def server_rss(server: Any) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_unauthenticated_upload_is_refused_before_its_body(server: Any) -> None:
    # 50 MB chunked, no key: 401 from the headers, not 413 after reading.
    started = time.monotonic()
    response = local_http.post(
        f"{server.base_url}/v1/chat/completions",
        content=chunked(b"x" * (50 * 1000 * 1000), 1024 * 1024),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert_error(response, 401, "missing_api_key")
    assert response.headers["connection"] == "close"
    print(f"50 MB unauthenticated chunked POST: {response.status_code} in {elapsed:.2f}s")


def test_parallel_unauthenticated_uploads_do_not_grow_memory(server: Any) -> None:
    upload = b"x" * (7 * 1024 * 1024)
    before = server_rss(server)
    statuses: list[int | str] = []

    def post() -> None:
        try:  # local_http: no keep-alive, so each of the 20 has its own connection
            response = local_http.post(
                f"{server.base_url}/v1/embeddings", content=chunked(upload, 256 * 1024), headers=auth("wrong-key-xyz-123"), timeout=60
            )
            statuses.append(response.status_code)
        except httpx.TransportError as exc:  # the server closed while the body was still going out
            statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    after = server_rss(server)
    print(f"server RSS before/after 20 parallel unauthenticated 7 MiB uploads: {before / 2**20:.1f} / {after / 2**20:.1f} MiB")
    assert statuses.count(401) >= 15, statuses
    assert all(s == 401 or isinstance(s, str) for s in statuses), statuses
    # Buffering them (the old behaviour) added 140 MiB and more.
    assert after - before < 40 * 2**20


# --- connection limits ------------------------------------------------------------------


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (reads until EOF), or fail after `limit`."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {limit}s")


def connect(server: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_slow_headers_are_cut_off(open_server: Any) -> None:
    socks = [connect(open_server) for _ in range(3)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
            sock.setblocking(False)
        held: dict[socket.socket, float] = {}
        next_line = started + TRICKLE
        # One more header line every TRICKLE s, as long as the connection lasts.
        while len(held) < len(socks) and time.monotonic() - started < HEADER_TIMEOUT + 10:
            time.sleep(0.05)
            send = time.monotonic() >= next_line
            if send:
                next_line += TRICKLE
            for sock in socks:
                if sock in held:
                    continue
                try:
                    if send:
                        sock.sendall(b"x-slow: 1\r\n")
                    if sock.recv(65536) == b"":
                        held[sock] = time.monotonic() - started
                except BlockingIOError:
                    continue
                except OSError:
                    held[sock] = time.monotonic() - started
        assert len(held) == len(socks), "slow-header connections were not closed"
        print(f"slow-header connections held {min(held.values()):.1f}-{max(held.values()):.1f}s (header_timeout {HEADER_TIMEOUT}s)")
        assert HEADER_TIMEOUT - 0.5 <= min(held.values()) and max(held.values()) < HEADER_TIMEOUT + 5
    finally:
        for sock in socks:
            sock.close()


def test_a_bare_ge_is_cut_off(open_server: Any) -> None:
    with connect(open_server) as sock:
        sock.sendall(b"GE")
        held = closed_after(sock, HEADER_TIMEOUT + 5)
    print(f"bare GE held {held:.1f}s")
    assert held >= HEADER_TIMEOUT - 0.5


def test_slow_but_complete_request_works(open_server: Any) -> None:
    parts = [b"GET /v1/models HTTP/1.1\r\n", b"host: 127.0.0.1\r\n", b"accept: application/json\r\n", b"\r\n"]
    with connect(open_server) as sock:
        for part in parts:  # slow, but all its headers within header_timeout
            sock.sendall(part)
            time.sleep(HEADER_TIMEOUT / 6)
        sock.settimeout(10)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 ")
        # An idle keep-alive connection is closed after keep_alive_timeout (1 s here).
        assert closed_after(sock, 5) < 4


def test_connections_past_the_cap_get_503(open_server: Any) -> None:
    socks = [connect(open_server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        with connect(open_server) as extra:
            extra.settimeout(5)
            reply = b""
            while chunk := extra.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.3)
    assert local_http.get(f"{open_server.base_url}/v1/models").status_code == 200
