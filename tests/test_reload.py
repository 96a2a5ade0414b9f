"""Hot reload through a real server process with scripted (model-free) models: add, remove and change models, reject a
broken file while the old config keeps serving, keep unchanged workers, and
let a stream that runs across a reload finish. (A file caught while being
written: tests/test_reload_safety.py.)"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ServerProcess, local_http, run_cli, scripted_model_toml

HELLO = [{"role": "user", "content": "Say hi."}]
# smol-a tells a 200-piece story, 20 ms a piece: a stream that runs across a reload.
STORY = 'script = [' + ", ".join(['" wave"'] * 200) + ']\ntoken_delay = 0.02\n'
SMOL_A = scripted_model_toml("smol-a", options=STORY)
# A short settle period where a test is not about settling: each reload
# otherwise waits 0.5 s of quiet (the keyed tests below keep the default).
BASE = '[server]\nreload_settle = "0.1s"\n\n' + SMOL_A


def write_atomically(path: Path, text: str) -> None:
    """Save the way many editors do: write a new file, rename it over the old."""
    tmp = path.with_name(path.name + ".tmp-save")
    tmp.write_text(text)
    os.replace(tmp, path)


def generation(server: ServerProcess) -> int:
    number: int = server.health()["config"]["generation"]
    return number


def wait_generation(server: ServerProcess, number: int) -> dict[str, Any]:
    return server.wait_for(lambda h: h["config"]["generation"] >= number, 60, f"config generation {number}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; its parent reaps it soon.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"worker {pid} still running"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(BASE)
    return server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as client:
        yield client


def test_add_a_model_keeps_the_unchanged_worker(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.config_path is not None
    before = server.health()
    pid_a = before["models"]["smol-a"]["pid"]
    write_atomically(server.config_path, BASE + scripted_model_toml("smol-b"))
    after = wait_generation(server, before["config"]["generation"] + 1)
    # The new model was loaded before the new config took requests.
    assert after["models"]["smol-b"]["status"] == "loaded"
    assert after["models"]["smol-a"]["pid"] == pid_a
    assert after["config"]["last_reload"]["ok"] is True
    assert client.chat.completions.create(model="smol-b", messages=HELLO, max_tokens=3).model == "smol-b"


def test_remove_a_model_ends_its_worker(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.config_path is not None
    server.config_path.write_text(BASE + scripted_model_toml("smol-b"))  # a plain in-place save
    health = server.wait_for(lambda h: "smol-b" in h["models"] and h["models"]["smol-b"]["status"] == "loaded")
    pid_b = health["models"]["smol-b"]["pid"]
    server.config_path.write_text(BASE)
    wait_generation(server, health["config"]["generation"] + 1)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="smol-b", messages=HELLO, max_tokens=3)
    wait_dead(pid_b)


def test_broken_file_keeps_the_old_config_serving(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.config_path is not None
    number = generation(server)
    write_atomically(server.config_path, BASE + "[[models]\nid = 'oops'\n")
    health = server.wait_for(lambda h: h["config"]["last_reload"]["ok"] is False, 30, "the reload to fail")
    error = health["config"]["last_reload"]["error"]
    assert str(server.config_path) in error and "TOML syntax error" in error
    assert health["status"] == "degraded"
    assert health["config"]["generation"] == number
    assert client.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=3).model == "smol-a"
    # A file that parses but is invalid: the error names the key and its line.
    write_atomically(server.config_path, BASE + scripted_model_toml("smol-c").replace('"scripted"', '"scriptedd"'))
    health = server.wait_for(
        lambda h: "models[1].backend" in (h["config"]["last_reload"]["error"] or ""), 30, "the second failure"
    )
    assert f"{server.config_path}:" in health["config"]["last_reload"]["error"]
    assert "smol-c" not in health["models"]
    # Fixed: the new config serves.
    write_atomically(server.config_path, BASE + scripted_model_toml("smol-c"))
    health = wait_generation(server, number + 1)
    assert health["config"]["last_reload"]["ok"] is True and health["status"] == "ok"
    assert client.chat.completions.create(model="smol-c", messages=HELLO, max_tokens=3).model == "smol-c"
    server.config_path.write_text(BASE)
    wait_generation(server, number + 2)


def test_stream_across_a_reload_completes(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.config_path is not None
    health = server.health()
    number, old_pid = health["config"]["generation"], health["models"]["smol-a"]["pid"]
    request = {
        "model": "smol-a",
        "messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "max_tokens": 150,
        "logit_bias": {"2": -100},  # no end of turn: the stream runs its full length
        "stream": True,
        "seed": 1,
    }
    first_chunk = threading.Event()
    events: list[str] = []

    def stream() -> None:
        with local_http.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(60)
    # Change smol-a's definition: a new worker takes over, the old one drains.
    write_atomically(server.config_path, BASE.replace("token_delay = 0.02", "token_delay = 0.021"))
    health = wait_generation(server, number + 1)
    new_pid = health["models"]["smol-a"]["pid"]
    assert new_pid != old_pid
    assert pid_alive(old_pid) or not reader.is_alive()
    reader.join(120)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) > 100
    wait_dead(old_pid)
    assert client.chat.completions.create(model="smol-a", messages=HELLO, max_tokens=3).model == "smol-a"


def test_keys_apply_from_the_next_request(server: ServerProcess) -> None:
    assert server.config_path is not None
    number = generation(server)
    keyed = '[[auth.keys]]\nname = "ops"\nkey = "reload-test-key-1"\nadmin = true\n\n' + BASE
    server.health_key = "reload-test-key-1"
    try:
        write_atomically(server.config_path, keyed)
        wait_generation(server, number + 1)
        assert local_http.get(f"{server.base_url}/v1/models").status_code == 401
        ok = local_http.get(f"{server.base_url}/v1/models", headers={"authorization": "Bearer reload-test-key-1"})
        assert ok.status_code == 200
        # Removing every key needs the file to say so.
        write_atomically(server.config_path, "[auth]\nkeys = []\n\n" + BASE)
        wait_generation(server, number + 2)
    finally:
        server.health_key = None
    assert local_http.get(f"{server.base_url}/v1/models").status_code == 200


def test_an_empty_config_does_not_start(tmp_path: Path) -> None:
    empty = tmp_path / "config.toml"
    empty.write_text("# to be written\n")
    done = run_cli("serve", "-c", str(empty), "--port", "1")
    assert done.returncode == 1
    assert f"the config file {empty} is empty" in done.stderr


def test_sighup_reloads_without_watching(server_factory: Any) -> None:
    server: ServerProcess = server_factory(BASE, args=["--no-watch"])
    assert server.config_path is not None and server.proc is not None
    server.config_path.write_text(BASE + scripted_model_toml("smol-d", load="lazy"))
    time.sleep(1.5)
    assert generation(server) == 1, "with --no-watch, a save alone must not reload"
    server.proc.send_signal(signal.SIGHUP)
    health = wait_generation(server, 2)
    assert "smol-d" in health["models"]


def test_config_reached_through_a_symlink(server_factory: Any, tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "modelyard.toml"
    first = '[server]\nreload_settle = "0.1s"\n\n' + scripted_model_toml("smol-s", load="lazy")
    target.write_text(first)
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    server = ServerProcess(["-c", str(link)]).start()
    try:
        server.wait_loaded()
        write_atomically(target, first + scripted_model_toml("smol-t", load="lazy"))
        health = wait_generation(server, 2)
        assert set(health["models"]) == {"smol-s", "smol-t"}
    finally:
        server.stop()
