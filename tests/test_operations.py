"""Operating it: lazy loads, idle unloads, LRU eviction, queue limits,
timeouts, admin routes, graceful shutdown, /ready and /metrics — through
real server processes with scripted (model-free) models: a "long" request
is a long script, 10 ms a piece, that runs to its max_tokens."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, local_http, scripted_model_toml

ADMIN = "ops-admin-key-1"
USER = "ops-user-key-22"
LONG = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
# What was SmolLM2's end-of-turn ban: the scripted model ignores it; its
# 1000-piece story runs to any max_tokens below that.
NO_EOS = {"2": -100}
STORY = 'script = [' + ", ".join(['" wave"'] * 1000) + ']\ntoken_delay = 0.01\n'
# One piece, then a wait that only a cancellation ends: the answer can only come from the timeout.
STUCK = 'script = ["Once", { sleep = 600 }]\n'


def chat_model_toml(model_id: str, *, load: str = "eager", extra: str = "", options: str = STORY) -> str:
    return scripted_model_toml(model_id, load=load, extra=extra, options=options)
HELLO = [{"role": "user", "content": "Say hi."}]


def chat(server: ServerProcess, model: str, key: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": HELLO, "max_tokens": 2, **extra}
    return local_http.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def statuses(server: ServerProcess) -> dict[str, str]:
    return {name: m["status"] for name, m in server.health()["models"].items()}


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    # A keyed server shows /metrics to the key its /health uses (admin or metrics = true).
    headers = {"authorization": f"Bearer {server.health_key}"} if server.health_key else {}
    text = local_http.get(f"{server.base_url}/metrics", headers=headers).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(part in (match.group(1) or "") for part in want.split(",") if part):
            total += float(match.group(2))
    return total


@pytest.fixture(scope="module")
def lifecycle(server_factory: Any) -> ServerProcess:
    config = (
        "[server]\nmax_loaded_models = 2\n\n"
        + chat_model_toml("lazy-a", load="lazy")
        + chat_model_toml("lazy-b", load="lazy")
        + chat_model_toml("lazy-c", load="lazy")
        + chat_model_toml("idler", load="lazy", extra='idle_timeout = "1s"\n')
    )
    server: ServerProcess = server_factory(config)
    return server


def test_lazy_load_on_first_request(lifecycle: ServerProcess) -> None:
    assert statuses(lifecycle)["lazy-a"] == "unloaded"
    before = metric(lifecycle, "modelyard_model_loads_total", model="lazy-a", result="loaded")
    assert chat(lifecycle, "lazy-a").status_code == 200
    assert statuses(lifecycle)["lazy-a"] == "loaded"
    assert metric(lifecycle, "modelyard_model_loads_total", model="lazy-a", result="loaded") == before + 1


def test_concurrent_first_requests_share_one_load(lifecycle: ServerProcess) -> None:
    before = metric(lifecycle, "modelyard_model_loads_total", model="lazy-b", result="loaded")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(chat(lifecycle, "lazy-b").status_code)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [200, 200, 200]
    assert metric(lifecycle, "modelyard_model_loads_total", model="lazy-b", result="loaded") == before + 1


def test_lru_eviction_under_max_loaded_models(lifecycle: ServerProcess) -> None:
    assert chat(lifecycle, "lazy-a").status_code == 200
    assert chat(lifecycle, "lazy-b").status_code == 200  # a is now the least recently used
    assert chat(lifecycle, "lazy-c").status_code == 200
    now = statuses(lifecycle)
    assert now["lazy-a"] == "unloaded" and now["lazy-b"] == "loaded" and now["lazy-c"] == "loaded"
    assert metric(lifecycle, "modelyard_model_unloads_total", model="lazy-a") >= 1


def test_busy_model_is_not_evicted(lifecycle: ServerProcess) -> None:
    assert chat(lifecycle, "lazy-b").status_code == 200
    assert chat(lifecycle, "lazy-c").status_code == 200  # loaded: b, c; LRU is b
    started = threading.Event()
    done: list[int] = []

    def long_b() -> None:
        request = {"model": "lazy-b", "messages": LONG, "max_tokens": 200, "stream": True, "logit_bias": NO_EOS}
        with local_http.stream("POST", f"{lifecycle.base_url}/v1/chat/completions", json=request, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    started.set()
            done.append(response.status_code)

    reader = threading.Thread(target=long_b)
    reader.start()
    assert started.wait(60)
    assert chat(lifecycle, "lazy-c").status_code == 200  # c is now more recent than b, but b is busy
    assert chat(lifecycle, "lazy-a").status_code == 200  # must evict: c (idle), never b (busy)
    now = statuses(lifecycle)
    assert now["lazy-b"] == "loaded" and now["lazy-c"] == "unloaded" and now["lazy-a"] == "loaded"
    reader.join(120)
    assert done == [200]


def test_idle_unload(lifecycle: ServerProcess) -> None:
    assert chat(lifecycle, "idler").status_code == 200
    pid = lifecycle.health()["models"]["idler"]["pid"]
    health = lifecycle.wait_for(lambda h: h["models"]["idler"]["status"] == "unloaded", 20, "the idle unload")
    assert health["models"]["idler"]["pid"] is None
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the process really ends, so its memory returns
            import os

            os.kill(pid, 0)
            time.sleep(0.1)
    assert chat(lifecycle, "idler").status_code == 200  # and loads again on demand


@pytest.fixture(scope="module")
def limits(server_factory: Any) -> ServerProcess:
    config = (
        chat_model_toml("queued", extra="max_queue = 0\n")
        + chat_model_toml("slowpoke", extra='request_timeout = "0.5s"\n', options=STUCK)
        + chat_model_toml("twins", extra="replicas = 2\n")
    )
    server: ServerProcess = server_factory(config)
    return server


def test_429_past_the_queue(limits: ServerProcess) -> None:
    started = threading.Event()

    def long_stream() -> None:
        request = {"model": "queued", "messages": LONG, "max_tokens": 150, "stream": True, "logit_bias": NO_EOS}
        with local_http.stream("POST", f"{limits.base_url}/v1/chat/completions", json=request, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    started.set()

    reader = threading.Thread(target=long_stream)
    reader.start()
    assert started.wait(60)
    refused = chat(limits, "queued")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
    reader.join(120)
    assert chat(limits, "queued").status_code == 200


def test_504_on_timeout_and_the_generation_stops(limits: ServerProcess) -> None:
    # slowpoke's script waits 600 s after its first piece unless cancelled:
    # a 504 can only come from request_timeout, and the next request is only
    # served (one request at a time) if the timeout cancelled the generation.
    response = local_http.post(
        f"{limits.base_url}/v1/chat/completions",
        json={"model": "slowpoke", "messages": LONG, "max_tokens": 900, "logit_bias": NO_EOS},
        timeout=60,
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert chat(limits, "slowpoke", max_tokens=1).status_code == 200  # the model was freed
    # Streaming: the timeout ends the stream with an error event.
    request = {"model": "slowpoke", "messages": LONG, "max_tokens": 900, "stream": True, "logit_bias": NO_EOS}
    with local_http.stream("POST", f"{limits.base_url}/v1/chat/completions", json=request, timeout=60) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "timeout"


def test_replicas_serve_in_parallel(limits: ServerProcess) -> None:
    health = limits.health()["models"]["twins"]
    assert len(health["pids"]) == 2 and len(set(health["pids"])) == 2
    firsts: list[float] = []
    ends: list[float] = []

    def stream() -> None:
        request = {"model": "twins", "messages": LONG, "max_tokens": 120, "stream": True, "logit_bias": NO_EOS}
        seen = False
        with local_http.stream("POST", f"{limits.base_url}/v1/chat/completions", json=request, timeout=120) as response:
            for line in response.iter_lines():
                if not seen and line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                    seen = True
                    firsts.append(time.monotonic())
        ends.append(time.monotonic())

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # Both streams produced text before either finished: they ran side by side.
    assert len(firsts) == 2 and max(firsts) < min(ends)
    assert limits.health()["models"]["twins"]["inflight"] == 0


@pytest.fixture(scope="module")
def admin(server_factory: Any) -> ServerProcess:
    config = (
        f'[[auth.keys]]\nname = "ops"\nkey = "{ADMIN}"\nadmin = true\n\n'
        f'[[auth.keys]]\nname = "app"\nkey = "{USER}"\n\n' + chat_model_toml("managed", load="lazy")
    )
    server: ServerProcess = server_factory(config, health_key=ADMIN)
    return server


def test_admin_routes(admin: ServerProcess) -> None:
    url = admin.base_url

    def post(path: str, key: str | None) -> httpx.Response:
        return local_http.post(url + path, headers={"authorization": f"Bearer {key}"} if key else {}, timeout=120)

    assert post("/v1/models/managed/load", None).status_code == 401
    denied = post("/v1/models/managed/load", USER)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"
    loaded = post("/v1/models/managed/load", ADMIN)
    assert loaded.status_code == 200 and loaded.json()["status"] == "loaded"
    assert post("/v1/models/managed/unload", USER).status_code == 403
    unloaded = post("/v1/models/managed/unload", ADMIN)
    assert unloaded.status_code == 200 and unloaded.json()["status"] == "unloaded"
    assert post("/v1/models/nope/load", ADMIN).status_code == 404
    assert post("/admin/reload", None).status_code == 401
    assert post("/admin/reload", USER).status_code == 403
    reloaded = post("/admin/reload", ADMIN)
    assert reloaded.status_code == 200 and reloaded.json()["reloaded"] is False  # the file did not change


def test_ready_and_metrics(admin: ServerProcess) -> None:
    ready = local_http.get(f"{admin.base_url}/ready", headers={"authorization": f"Bearer {ADMIN}"})
    assert ready.status_code == 200 and ready.json() == {"ready": True, "waiting_for": []}
    # Anonymous: the status, not what it waits for.
    anonymous = local_http.get(f"{admin.base_url}/ready")
    assert anonymous.status_code == 200 and anonymous.json() == {"ready": True}
    before_requests = metric(admin, "modelyard_requests_total", route="/v1/chat/completions", model="managed", status="200")
    before_tokens = metric(admin, "modelyard_generated_tokens_total", model="managed")
    assert chat(admin, "managed", ADMIN).status_code == 200
    assert metric(admin, "modelyard_requests_total", route="/v1/chat/completions", model="managed", status="200") == before_requests + 1
    assert metric(admin, "modelyard_generated_tokens_total", model="managed") == before_tokens + 2
    assert metric(admin, "modelyard_models_loaded") == 1
    assert metric(admin, "modelyard_model_memory_bytes", model="managed") > 10_000_000
    assert metric(admin, "modelyard_time_to_first_token_seconds_count", model="managed") >= 1
    assert metric(admin, "modelyard_request_duration_seconds_count", route="/v1/chat/completions") >= 1
    text = local_http.get(f"{admin.base_url}/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
    assert "modelyard_requests_total" in text and ADMIN not in text and USER not in text


def test_graceful_shutdown_finishes_an_inflight_stream() -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(chat_model_toml("smol"))
        server = ServerProcess(["-c", str(path)]).start()
        server.wait_loaded()
        events: list[str] = []
        first = threading.Event()

        def stream() -> None:
            request = {"model": "smol", "messages": LONG, "max_tokens": 120, "stream": True, "logit_bias": NO_EOS}
            with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        first.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(60)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        reader.join(120)
        assert server.proc.wait(60) == 0
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) > 100
        server.stop()
