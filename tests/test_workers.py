"""Worker processes: a killed worker fails only its own requests cleanly and
is restarted by the next request; a model that cannot load fails alone; a
client that goes away stops its generation; `serve -m` serves one model.

Load failures and `serve -m` run on the real llama-cpp backend; killed
workers and disconnects are the router's and the worker protocol's business,
tested on scripted (model-free) models whose scripts make each outcome exact."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from modelyard.adapters.base import ModelLoadError
from modelyard.adapters.catalog import Backend

from tests.conftest import ServerProcess, chat_model_toml, local_http, script, scripted_model_toml, smollm2_path

LONG = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
NO_EOS = {"2": -100}  # SmolLM2's <|im_end|> banned: long requests run to max_tokens
HELLO = [{"role": "user", "content": "Say hi."}]
# A "long" request on a scripted model: 1000 pieces, 10 ms apart.
STORY = 'script = [' + ", ".join(['" wave"'] * 1000) + ']\ntoken_delay = 0.01\n'
# One piece, then a wait only a cancellation ends: whoever asks next is
# served (one request at a time) only if the abandoned generation was stopped.
STUCK = [{"role": "user", "content": script("Once", {"sleep": 600})}]


@pytest.fixture(scope="module")
def broken_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 64)  # a header, then nothing a loader can use
    return path


@pytest.fixture(scope="module")
def server(server_factory: Any, broken_gguf: Path) -> ServerProcess:
    config = (
        chat_model_toml("bystander")
        + f'[[models]]\nid = "broken"\nmodality = "chat"\nbackend = "llama-cpp"\nsource = "{broken_gguf}"\n'
        + '[[models]]\nid = "from-hub"\nmodality = "chat"\nbackend = "llama-cpp"\nload = "lazy"\n'
        + 'source = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf"\n'
    )
    server: ServerProcess = server_factory(config)
    return server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def scripted(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(
        scripted_model_toml("victim", options=STORY) + scripted_model_toml("bystander", options=STORY)
    )
    return server


@pytest.fixture(scope="module")
def scripted_client(scripted: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{scripted.base_url}/v1", api_key="x", max_retries=0, timeout=120) as client:
        yield client


@pytest.mark.real_model
def test_model_that_cannot_load_fails_alone(server: ServerProcess, client: openai.OpenAI) -> None:
    health = server.health()
    assert health["models"]["broken"]["status"] == "failed"
    assert "broken.gguf" in health["models"]["broken"]["error"]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="broken", messages=HELLO, max_tokens=2)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_load_failed"
    assert "Traceback" not in body["message"]
    assert client.chat.completions.create(model="bystander", messages=HELLO, max_tokens=2).model == "bystander"


@pytest.mark.real_model
def test_hub_source_without_a_hub_fails_clearly(server: ServerProcess, client: openai.OpenAI) -> None:
    # This machine has no route to a model hub: the load must fail with a
    # message that says so (not hang), and only for this model.
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="from-hub", messages=HELLO, max_tokens=2)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_load_failed"
    assert "Hugging Face hub" in body["message"]
    assert server.health()["models"]["from-hub"]["status"] == "failed"
    assert client.chat.completions.create(model="bystander", messages=HELLO, max_tokens=2).model == "bystander"


def test_killed_worker_fails_its_stream_cleanly_and_restarts(scripted: ServerProcess, scripted_client: openai.OpenAI) -> None:
    server, client = scripted, scripted_client
    health = server.health()
    pid, bystander_pid = health["models"]["victim"]["pid"], health["models"]["bystander"]["pid"]
    events: list[str] = []
    got_some = threading.Event()

    def stream() -> None:
        request = {"model": "victim", "messages": LONG, "max_tokens": 500, "stream": True, "logit_bias": NO_EOS}
        with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) > 3:
                        got_some.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert got_some.wait(60)
    os.kill(pid, signal.SIGKILL)
    reader.join(60)
    assert not reader.is_alive()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error["error"]["code"] == "worker_crashed"
    assert "SIGKILL" in error["error"]["message"]
    # The other model's worker is untouched.
    assert server.health()["models"]["bystander"]["pid"] == bystander_pid
    assert client.chat.completions.create(model="bystander", messages=HELLO, max_tokens=2).model == "bystander"
    # The next request to the victim restarts its worker.
    assert client.chat.completions.create(model="victim", messages=HELLO, max_tokens=2).model == "victim"
    health = server.health()
    assert health["models"]["victim"]["status"] == "loaded"
    assert health["models"]["victim"]["pid"] not in (None, pid)


def test_killed_worker_fails_a_plain_request_with_500(scripted: ServerProcess, scripted_client: openai.OpenAI) -> None:
    server, client = scripted, scripted_client
    pid = server.health()["models"]["victim"]["pid"]
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            client.chat.completions.create(model="victim", messages=LONG, max_tokens=600, logit_bias=NO_EOS)
        except openai.APIStatusError as exc:
            outcome["status"], outcome["body"] = exc.status_code, exc.body

    caller = threading.Thread(target=call)
    caller.start()
    server.wait_for(lambda h: h["models"]["victim"]["inflight"] == 1, 30, "the request to start")
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    caller.join(60)
    assert outcome["status"] == 500
    assert outcome["body"]["code"] == "worker_crashed"
    assert client.chat.completions.create(model="victim", messages=HELLO, max_tokens=2).model == "victim"


def test_disconnect_stops_the_generation(scripted: ServerProcess, scripted_client: openai.OpenAI) -> None:
    server, client = scripted, scripted_client
    request = {"model": "victim", "messages": STUCK, "max_tokens": 900, "stream": True}
    with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as response:
        lines = response.iter_lines()
        seen = 0
        for line in lines:
            seen += line.startswith("data: ") and '"content":"Once"' in line
            if seen:
                break
    # The abandoned generation waits 600 s unless cancelled: this request is
    # served (within the client's timeout) only because it was.
    short = client.chat.completions.create(model="victim", messages=[{"role": "user", "content": script("ok")}])
    assert short.choices[0].message.content == "ok"
    assert server.health()["models"]["victim"]["inflight"] == 0


STUCK_TEXT = script("Once", {"sleep": 600})
NON_STREAMING_STUCK = {
    "/v1/chat/completions": {"messages": STUCK, "max_tokens": 900},
    "/v1/completions": {"prompt": STUCK_TEXT, "max_tokens": 900},
    "/v1/messages": {"messages": STUCK, "max_tokens": 900},
    "/v1/responses": {"input": STUCK_TEXT, "max_output_tokens": 900},
}


@pytest.mark.parametrize("path", list(NON_STREAMING_STUCK))
def test_non_streaming_disconnect_stops_the_generation(
    scripted: ServerProcess, scripted_client: openai.OpenAI, path: str
) -> None:
    server, client = scripted, scripted_client
    logged = len(server.log())
    body = json.dumps({"model": "victim", **NON_STREAMING_STUCK[path]}).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        server.wait_for(lambda h: h["models"]["victim"]["inflight"] == 1, 30, "the request to start")
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # no answer: the generation waits, and the client leaves
    # As above: served only if the abandoned generation was stopped.
    short = client.chat.completions.create(model="victim", messages=[{"role": "user", "content": script("ok")}])
    assert short.choices[0].message.content == "ok"
    # The client that left gets a quiet 499 (errors.install): no error, no traceback in the log.
    after = server.log()[logged:]
    assert "Traceback" not in after and "ERROR" not in after, after


@pytest.mark.real_model
def test_serve_one_model_file_as_default(tmp_path: Path) -> None:
    server = ServerProcess(["-m", str(smollm2_path())]).start()
    try:
        server.wait_loaded()
        models = local_http.get(f"{server.base_url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["default"]
        response = local_http.post(
            f"{server.base_url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=60
        )
        assert response.status_code == 200 and response.json()["model"] == "default"
    finally:
        assert server.stop() == 0


def test_missing_backend_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelyard.adapters import worker
    from modelyard.schemas import worker as proto

    fake = Backend("fancy", {"chat": "modelyard.adapters.llama_cpp:LlamaCppChat"}, "fancy", ("no_such_module_xyz",))
    monkeypatch.setattr(worker, "backends", lambda: {"fancy": fake})
    with pytest.raises(ModelLoadError, match=r"pip install 'modelyard\[fancy\]'"):
        worker.load_adapter(proto.Load("m", "fancy", "chat", "x", "/nonexistent"))
