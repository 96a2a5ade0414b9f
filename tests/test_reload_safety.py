"""Reload safety through a real server process with scripted (model-free)
models: a config file caught while it is being written (cut off, or half
written with a pause) is never applied, and above all never turns
authentication off; removing every key needs the file to say so."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, local_http, scripted_model_toml
from tests.test_reload import SMOL_A, generation, wait_generation, write_atomically

ADMIN = "reload-admin-key-1"
USER = "reload-user-key-22"
KEYS = f"""[[auth.keys]]
name = "ops"
key = "{ADMIN}"
admin = true

[[auth.keys]]
name = "app"
key = "{USER}"
models = ["smol*"]

"""
# A short settle period where a test is not about settling (each reload
# otherwise waits 0.5 s of quiet); the half-written file's test keeps the default.
SHORT_SETTLE = '[server]\nbody_limit = "1MiB"\nreload_settle = "0.1s"\n\n'
KEYED = SHORT_SETTLE + KEYS + SMOL_A
CUTS = {
    "empty": "",
    "whitespace and comments": "\n  \n# nothing yet\n",
    "before the keys": KEYED[: KEYED.index("[[auth.keys]]")],
    "inside a key table": KEYED[: KEYED.index('key = "' + USER) + 9],
    "inside a key table, on a line end": KEYED[: KEYED.index('key = "' + USER)],
    "inside the models table": KEYED[: KEYED.index('backend = "scripted"')],
}
# The default settle period (0.5 s), which the half-written file's pause (1.2 s) outlasts.
SETTLING = '[server]\nbody_limit = "1MiB"\n\n' + KEYS + SMOL_A


@pytest.fixture(scope="module")
def keyed(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(KEYED, health_key=ADMIN)
    return server


@pytest.fixture(scope="module")
def settling(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(SETTLING, health_key=ADMIN)
    return server


def models_status(server: ServerProcess, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return local_http.get(f"{server.base_url}/v1/models", headers=headers).status_code


def assert_keys_apply(server: ServerProcess) -> None:
    assert models_status(server, None) == 401
    assert models_status(server, USER) == 200
    assert local_http.get(f"{server.base_url}/health").json() == {"status": "ok"}


def wait_refused(server: ServerProcess, since: float | None, what: str) -> dict[str, Any]:
    return server.wait_for(
        lambda h: h["config"]["last_reload"]["ok"] is False and (h["config"]["last_reload"]["at"] or 0) > (since or 0),
        30,
        f"the {what} file to be refused",
    )


@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
def test_a_truncated_file_is_refused(keyed: ServerProcess, cut: str) -> None:
    assert keyed.config_path is not None
    before = keyed.health()
    pid = before["models"]["smol-a"]["pid"]
    keyed.config_path.write_text(CUTS[cut])  # saved in place, as a crashed editor or a full disk leaves it
    health = wait_refused(keyed, before["config"]["last_reload"]["at"], cut)
    error = health["config"]["last_reload"]["error"]
    expected = {
        "empty": "is empty",
        "whitespace and comments": "is empty",
        "before the keys": "turn authentication off",
    }.get(cut, str(keyed.config_path))
    assert expected in error, error
    assert health["status"] == "degraded" and health["config"]["generation"] == before["config"]["generation"]
    assert health["models"]["smol-a"]["pid"] == pid
    assert_keys_apply(keyed)
    # Put back: nothing to apply, nothing wrong.
    keyed.config_path.write_text(KEYED)
    keyed.wait_for(lambda h: h["config"]["last_reload"]["ok"] is True, 30, "the file to be whole again")
    assert_keys_apply(keyed)


def write_in_two_steps(path: Path, first: str, rest: str, pause: float) -> None:
    with open(path, "w") as file:
        file.write(first)
        file.flush()
        os.fsync(file.fileno())
        time.sleep(pause)
        file.write(rest)


@pytest.mark.parametrize("cut_at", ["[[auth.keys]]", "[[models]]"])
def test_a_half_written_file_is_not_applied(settling: ServerProcess, cut_at: str) -> None:
    """Written in two steps with a pause longer than the settle period: the
    first half (no keys; or keys but no models) must never be applied."""
    assert settling.config_path is not None
    before = settling.health()
    assert before["config"]["last_reload"]["ok"] is True
    pid = before["models"]["smol-a"]["pid"]
    # A model the file in force does not have, so that the whole file is a change to apply.
    whole = SETTLING + scripted_model_toml(f"smol-{len(cut_at)}", load="lazy")
    assert f"smol-{len(cut_at)}" not in before["models"]
    split = whole.index(cut_at)
    writer = threading.Thread(target=write_in_two_steps, args=(settling.config_path, whole[:split], whole[split:], 1.2))
    writer.start()
    try:
        time.sleep(0.9)  # the first half has been there for longer than reload_settle
        assert_keys_apply(settling)
    finally:
        writer.join()
    health = wait_generation(settling, before["config"]["generation"] + 1)
    assert health["config"]["generation"] == before["config"]["generation"] + 1, "a half-written file was applied"
    assert f"smol-{len(cut_at)}" in health["models"]
    assert health["models"]["smol-a"]["pid"] == pid, "smol-a was removed by a half-written file"
    assert_keys_apply(settling)


def test_removing_every_key_needs_the_file_to_say_so(keyed: ServerProcess) -> None:
    assert keyed.config_path is not None
    number = generation(keyed)
    write_atomically(keyed.config_path, "[auth]\nkeys = []\n\n" + SHORT_SETTLE + SMOL_A)
    wait_generation(keyed, number + 1)
    assert models_status(keyed, None) == 200
    assert any("authentication is now OFF" in line for line in keyed.lines), keyed.log()
    write_atomically(keyed.config_path, KEYED)
    wait_generation(keyed, number + 2)
    assert_keys_apply(keyed)
