"""Sessions of the agentic runtime (router/agent_sessions.py, router/interpreter.py,
router/sessions.py): every case really runs the sandbox (bubblewrap) and the
app in-process (create_app with its lifespan, httpx over ASGI, the openai SDK
for the Containers routes). The tool loop is not built yet, so sessions are
opened and run through the store, the way the loop will.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from modelyard.router.agent_sessions import SessionStore
from modelyard.router.config import load_config
from modelyard.router.errors import APIError
from modelyard.router.server import create_app
from modelyard.schemas.config import AgentConfig
from tests.conftest import processes_running

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/bwrap", os.X_OK),
                                reason="bubblewrap (/usr/bin/bwrap) is not installed: apt-get install bubblewrap")
KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-0123456789"}


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder nobody may pass through (run as root, the sandbox runs as nobody)."""
    path = Path(tempfile.mkdtemp(prefix="modelyard-sessions-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(base: Path, *, keys: bool = False, agent: str = "", sandbox: dict[str, Any] | None = None) -> Path:
    auth = "".join(f'[[auth.keys]]\nname = "{name}"\nkey = "{key}"\n' for name, key in KEYS.items()) if keys else ""
    limits = {"mode": "on", "cpu_seconds": 2, "timeout": 4, "memory": "256MiB", "max_processes": 32, **(sandbox or {})}
    text = (
        f'[server]\nhost = "127.0.0.1"\n{auth}[storage]\npath = "{base}/responses.sqlite3"\n'
        f'[agent]\ntools = ["code_interpreter", "shell"]\n{agent}\n'
        "[agent.sandbox]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in limits.items())
        + "# secret: sk-config-secret\n"
    )
    path = base / "config.toml"
    path.write_text(text)
    path.chmod(0o644)  # readable by every user of the host: the sandbox must still not see it
    return path


@contextlib.asynccontextmanager
async def served(base: Path, **config: Any) -> AsyncIterator[tuple[SessionStore, httpx.AsyncClient]]:
    app = create_app(load_config(write_config(base, **config)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://yard") as client:
            store = app.state.yard.agent.sessions
            assert store.sandbox is not None and store.sandbox.isolation == "bubblewrap"
            yield store, client


def run(coro: Any) -> Any:  # no pytest-asyncio in the venv
    return asyncio.run(coro)


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_state_output_and_traceback(base: Path) -> None:
    async def scenario() -> None:
        async with served(base) as (store, _):
            session = await store.open("", "work")
            assert (await store.run_code(session, "x = 6 * 7")).error is None
            printed = await store.run_code(session, "print(x)\nx + 1")
            assert (printed.stdout, printed.stderr, printed.error, printed.exit_code) == ("42\n43\n", "", None, 0)
            failed = await store.run_code(session, "def f(n):\n    return n / 0\n\nf(x)")
            assert failed.error == "ZeroDivisionError: division by zero" and failed.exit_code == 1
            assert 'File "<cell 3>", line 4, in <module>' in failed.stderr and "return n / 0" in failed.stderr
            shell_out = await store.run_code(session, "import os, sys\nos.system('echo from-sh; echo sh-err >&2')\n"
                                             "print('to-err', file=sys.stderr)")
            assert shell_out.stdout == "from-sh\n" and shell_out.stderr == "sh-err\nto-err\n"  # fd-level output too
            assert (await store.run_code(session, "print(x)")).stdout == "42\n"  # the exception kept the state
            assert (await store.run_code(session, "input()")).error == "EOFError: EOF when reading a line"
            syntax = await store.run_code(session, "def broken(:")
            assert syntax.error.startswith("SyntaxError") and "<cell" in syntax.stderr
            await store.release(session)

    run(scenario())


def test_a_csv_becomes_a_file_served_by_files_and_containers(base: Path) -> None:
    async def scenario() -> None:
        async with served(base) as (store, client):
            session = await store.open("", store.new_id())
            code = ("import csv\nwith open('out.csv', 'w', newline='') as f:\n"
                    "    csv.writer(f).writerows([['a', 'b'], [1, 2]])")
            outcome = await store.run_code(session, code)
            assert outcome.error is None and [f.filename for f in outcome.files] == ["out.csv"]
            file_id = outcome.files[0].file_id
            expected = b"a,b\r\n1,2\r\n"
            assert outcome.files[0].bytes == len(expected) and outcome.session_id == session.id
            response = await client.get(f"/v1/files/{file_id}/content")
            assert response.status_code == 200 and response.content == expected
            assert (await client.get(f"/v1/files/{file_id}")).json()["purpose"] == "assistants_output"
            again = await store.run_code(session, "open('out.csv').read()")
            assert again.files == ()  # unchanged: not put in the store again

            response = await client.get(f"/v1/containers/{session.id}/files/{file_id}/content")
            assert response.status_code == 200 and response.content == expected
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"] == "sandbox"

            sdk = openai.AsyncOpenAI(base_url="http://yard/v1", api_key="unused", http_client=client)
            container = await sdk.containers.retrieve(session.id)
            assert (container.id, container.object, container.status) == (session.id, "container", "running")
            listed = [f async for f in sdk.containers.files.list(session.id)]
            assert [(f.id, f.object, f.path, f.bytes, f.source, f.container_id) for f in listed] == [
                (file_id, "container.file", "/sandbox/out.csv", len(expected), "assistant", session.id)]
            one = await sdk.containers.files.retrieve(file_id, container_id=session.id)
            assert one.path == "/sandbox/out.csv"
            content = await sdk.containers.files.content.retrieve(file_id, container_id=session.id)
            assert content.read() == expected

            about = (await client.get(f"/v1/sessions/{session.id}")).json()
            assert about["object"] == "session" and about["files"] == [file_id] and about["messages"] == 0
            assert about["expires_at"] > about["last_active_at"] >= about["created_at"]
            missing = await client.get(f"/v1/containers/{session.id}/files/file-nope/content")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"
            await sdk.containers.delete(session.id)
            assert (await client.get(f"/v1/containers/{session.id}")).status_code == 404
            assert (await client.get(f"/v1/files/{file_id}/content")).content == expected  # the file stays

    run(scenario())


def test_timeout_kills_the_interpreter_and_the_next_call_starts_afresh(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, sandbox={"timeout": 1.5}) as (store, _):
            session = await store.open("", "loop")
            await store.run_code(session, "x = 1")
            assert session.interpreter is not None
            pid = session.interpreter.pid
            assert pid is not None
            looped = await store.run_code(session,
                                          "import time\nprint('started', flush=True)\nwhile True: time.sleep(1)")
            assert looped.timed_out and looped.error == "timeout" and looped.stdout == "started\n"
            assert gone(pid)
            after = await store.run_code(session, "print(x)")
            assert after.error == "NameError: name 'x' is not defined"
            assert after.state_lost is not None and "timeout" in after.state_lost
            assert "fresh Python interpreter" in after.for_model(1000)
            assert (await store.run_code(session, "print('ok')")).state_lost is None

    run(scenario())


def test_cpu_limit_fails_the_call_and_keeps_the_state(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, sandbox={"timeout": 20}) as (store, _):
            session = await store.open("", "cpu")
            await store.run_code(session, "x = 'kept'")
            spun = await store.run_code(session, "while True: pass")
            assert spun.error == "cpu_limit" and not spun.timed_out and "CPULimitExceeded" in spun.stderr
            after = await store.run_code(session, "print(x)")
            assert after.stdout == "kept\n" and after.state_lost is None

    run(scenario())


def test_crashes_are_reported_and_the_next_call_works(base: Path) -> None:
    async def scenario() -> None:
        async with served(base) as (store, _):
            session = await store.open("", "crash")
            await store.run_code(session, "y = 5")
            exited = await store.run_code(session, "print('bye', flush=True)\nimport os\nos._exit(3)")
            assert exited.exit_code == 3 and "exited with status 3" in (exited.error or "") and exited.stdout == "bye\n"
            after = await store.run_code(session, "y")
            assert after.error == "NameError: name 'y' is not defined" and after.state_lost is not None
            segv = await store.run_code(session, "import ctypes\nctypes.string_at(0)")
            assert "SIGSEGV" in (segv.error or "") and "Segmentation fault" in segv.stderr
            assert (await store.run_code(session, "print(2 + 2)")).stdout == "4\n"
            forked = await store.run_code(session, "import os, time\nif os.fork() == 0:\n    time.sleep(0.2)\n"
                                          "else:\n    os.wait()\nprint('done')")
            assert forked.error is None and "done" in forked.stdout  # the child ran the rest of the cell too
            for n in range(3):  # ... but did not answer as the driver: each call gets its own reply
                assert (await store.run_code(session, f"print({n})")).stdout == f"{n}\n"

    run(scenario())


def test_a_fork_bomb_is_contained(base: Path) -> None:
    code = (
        "import os\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n"
        "            os.execv('/bin/sleep', ['sleep', '987'])\n        n += 1\n"
        "except OSError as e:\n    print('stopped', n, e.errno)\nelse:\n    print('not stopped', n)"
    )

    async def scenario() -> None:
        async with served(base) as (store, _):
            session = await store.open("", "bomb")
            outcome = await store.run_code(session, code)
            assert outcome.stdout.startswith("stopped "), outcome
            assert int(outcome.stdout.split()[1]) < 32
            assert len(sleepers()) >= 1  # the children live on with the interpreter ...
            if os.geteuid() == 0:  # each session is a host user of its own: the others are not starved
                bystander = await store.open("", "bystander")
                assert (await store.run_shell(bystander, ["echo fine"])).results[0].stdout == "fine\n"
            assert await store.delete("", "bomb")
            assert no_sleepers()  # ... and go with it

    run(scenario())


def sleepers() -> set[int]:
    return processes_running("sleep", "987")


def no_sleepers(within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while sleepers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_huge_allocation_fails_and_the_interpreter_lives(base: Path) -> None:
    async def scenario() -> None:
        async with served(base) as (store, _):
            session = await store.open("", "memory")
            await store.run_code(session, "z = 3")
            outcome = await store.run_code(session, "big = bytearray(1 << 30)")
            assert outcome.error == "MemoryError" and "MemoryError" in outcome.stderr
            assert (await store.run_code(session, "print(z)")).stdout == "3\n"

    run(scenario())


def test_host_secrets_and_network_are_out_of_reach(base: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = base / "config.toml"

    async def scenario() -> None:
        async with served(base) as (store, _):
            session = await store.open("", "secrets")
            for path in ("/etc/shadow", str(config), str(base / "responses.sqlite3")):
                read = await store.run_code(session, f"print(open({path!r}).read())")
                assert read.error is not None and read.error.startswith("FileNotFoundError"), (path, read)
            code = (f"import socket\nfor host, port in (('127.0.0.1', {port}), ('1.1.1.1', 80)):\n"
                    "    s = socket.socket(); s.settimeout(2)\n"
                    "    try:\n        s.connect((host, port)); print('connected')\n"
                    "    except OSError as e:\n        print('refused', e.errno)")
            connect = await store.run_code(session, code)
            assert connect.error is None and connect.stdout.count("refused") == 2, connect
            shell = await store.run_shell(session, ["cat /etc/shadow", f"cat {config}"])
            assert [r.exit_code for r in shell.results] == [1, 1]
            assert "sk-config-secret" not in shell.results[1].stdout

    try:
        run(scenario())
    finally:
        listener.close()


def test_shell_commands_exit_codes_files_and_timeout(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, sandbox={"timeout": 1.5}) as (store, _):
            session = await store.open("", "shell")
            outcome = await store.run_shell(session, ["echo hi", "echo oops >&2; exit 3", "echo $((1 + 1)) > two.txt"])
            assert [(r.stdout, r.stderr, r.exit_code) for r in outcome.results] == [
                ("hi\n", "", 0), ("", "oops\n", 3), ("", "", 0)]
            assert [f.filename for f in outcome.files] == ["two.txt"] and not outcome.failed
            seen = await store.run_code(session, "print(open('two.txt').read().strip())")  # one folder for both
            assert seen.stdout == "2\n"
            slow = await store.run_shell(session, ["sleep 987", "echo never"])
            assert len(slow.results) == 1 and slow.results[0].timed_out and slow.results[0].error == "timeout"
            assert slow.failed and no_sleepers()

    run(scenario())


def test_idle_sessions_expire(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, agent="session_idle = 0.5") as (store, client):
            session = await store.open("", "idle")
            await store.run_code(session, "x = 1")
            pid = session.interpreter.pid if session.interpreter else None
            assert pid is not None and session.workdir.is_dir()
            await store.release(session)
            deadline = time.monotonic() + 10
            while await store.get("", "idle") is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await store.get("", "idle") is None
            assert (await client.get("/v1/sessions/idle")).status_code == 404
            assert gone(pid) and not session.workdir.exists()
            fresh = await store.open("", "idle")  # the id is free again: a new, empty session
            assert (await store.run_code(fresh, "print(x)")).error == "NameError: name 'x' is not defined"

    run(scenario())


def test_another_owners_session_is_invisible(base: Path) -> None:
    alice = {"authorization": f"Bearer {KEYS['alice']}"}
    bob = {"authorization": f"Bearer {KEYS['bob']}"}

    async def scenario() -> None:
        async with served(base, keys=True) as (store, client):
            mine = await store.open("alice", "shared")
            await store.run_code(mine, "secret = 'alice'\nopen('notes.txt', 'w').write('alice')")
            theirs = await store.open("bob", "shared")  # the same id: another session
            assert theirs is not mine and theirs.workdir != mine.workdir
            peek = await store.run_code(theirs, "import os\nprint(os.listdir('.'))\nprint(secret)")
            assert peek.stdout == "[]\n" and peek.error == "NameError: name 'secret' is not defined"
            await store.open("alice", "only-alice")
            assert await store.get("bob", "only-alice") is None
            assert (await client.get("/v1/sessions/only-alice", headers=bob)).status_code == 404
            assert (await client.get("/v1/containers/only-alice/files", headers=bob)).status_code == 404
            assert (await client.delete("/v1/sessions/only-alice", headers=bob)).status_code == 404
            assert (await client.get("/v1/sessions/only-alice", headers=alice)).status_code == 200
            file_id = (await client.get("/v1/sessions/shared", headers=alice)).json()["files"][0]
            denied = await client.get(f"/v1/containers/shared/files/{file_id}/content", headers=bob)
            assert denied.status_code == 404  # bob's "shared" has no such file
            allowed = await client.get(f"/v1/containers/shared/files/{file_id}/content", headers=alice)
            assert allowed.content == b"alice"
            deleted = await client.delete("/v1/sessions/only-alice", headers=alice)
            assert deleted.json() == {"id": "only-alice", "object": "session.deleted", "deleted": True}

    run(scenario())


def test_delete_kills_the_interpreter_and_removes_the_folder(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, sandbox={"timeout": 30}) as (store, client):
            session = await store.open("", "doomed")
            await store.run_code(session, "open('data.txt', 'w').write('x')")
            assert session.interpreter is not None and session.interpreter.pid is not None
            pid = session.interpreter.pid
            assert (session.workdir / "data.txt").exists()
            busy = asyncio.ensure_future(store.run_code(session, "import time\nopen('started', 'w').close()\n"
                                                        "while True: time.sleep(1)"))
            await until(lambda: (session.workdir / "started").exists())
            response = await client.delete("/v1/sessions/doomed")
            assert response.status_code == 200 and response.json()["deleted"] is True
            stopped = await busy
            assert stopped.error is not None and "closed" in stopped.error
            assert gone(pid) and not session.workdir.exists()
            assert (await client.get("/v1/sessions/doomed")).status_code == 404
            assert (await client.delete("/v1/sessions/doomed")).status_code == 404

    run(scenario())


async def until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.05)


def test_cancellation_kills_the_run(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, sandbox={"timeout": 30}) as (store, _):
            session = await store.open("", "cancel")
            await store.run_code(session, "kept = 1")
            assert session.interpreter is not None
            pid = session.interpreter.pid
            assert pid is not None
            task = asyncio.ensure_future(store.run_code(
                session, "import subprocess\nsubprocess.Popen(['sleep', '987'])\nopen('started', 'w').close()\n"
                "import time\nwhile True: time.sleep(1)"))
            await until(lambda: (session.workdir / "started").exists())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert gone(pid) and no_sleepers()
            after = await store.run_code(session, "print('again')")
            assert after.stdout == "again\n" and after.state_lost is not None and "cancelled" in after.state_lost
            shell = asyncio.ensure_future(store.run_shell(session, ["touch started2; exec sleep 987"]))
            await until(lambda: (session.workdir / "started2").exists())
            shell.cancel()
            with pytest.raises(asyncio.CancelledError):
                await shell
            assert no_sleepers()

    run(scenario())


def test_session_ids_are_checked_and_ephemeral_sessions_go_at_release(base: Path) -> None:
    async def scenario() -> None:
        async with served(base) as (store, client):
            for bad in ("", ".", "..", "../x", "a/b", "x" * 129, "spaced id"):
                with pytest.raises(ValueError, match="session id"):
                    await store.open("", bad)
            assert store.new_id().startswith("cntr_")
            temporary = await store.open("", None)
            outcome = await store.run_code(temporary, "open('result.txt', 'w').write('done')")
            assert [f.filename for f in outcome.files] == ["result.txt"]
            assert await store.get("", temporary.id) is None  # not reachable by id
            await store.release(temporary)
            assert not temporary.workdir.exists()
            kept = await client.get(f"/v1/files/{outcome.files[0].file_id}/content")
            assert kept.content == b"done"

    run(scenario())


def test_many_live_interpreters_do_not_share_the_process_limit(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root server runs each session as a host user of its own")

    async def scenario() -> None:
        async with served(base, sandbox={"max_processes": 16}) as (store, _):
            sessions = [await store.open("", f"s{n}") for n in range(8)]  # 8 x 3 processes: over 16 as one user
            for n, session in enumerate(sessions):
                assert (await store.run_code(session, f"n = {n}")).error is None
            for n, session in enumerate(sessions):
                assert (await store.run_code(session, "print(n)")).stdout == f"{n}\n"
            uids = {s.uid for s in sessions}
            assert len(uids) == 8 and all(u is not None and u >= 2_000_000_000 for u in uids)

    run(scenario())


def test_max_sessions_closes_the_least_recently_used(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, agent="max_sessions = 2") as (store, _):
            for name in ("one", "two", "three"):
                session = await store.open("", name)
                await store.run_code(session, f"name = {name!r}")
                await store.release(session)
            assert await store.get("", "one") is None
            assert await store.get("", "two") is not None and await store.get("", "three") is not None

    run(scenario())


def test_a_key_with_many_sessions_closes_its_own_first(base: Path) -> None:
    async def scenario() -> None:
        async with served(base, agent="max_sessions = 3") as (store, _):
            alice = await store.open("alice", "kept")
            await store.release(alice)  # the oldest of all, and idle
            for name in ("b1", "b2", "b3"):  # bob's third goes over the bound
                await store.release(await store.open("bob", name))
            assert await store.get("alice", "kept") is not None
            assert await store.get("bob", "b1") is None
            assert await store.get("bob", "b2") is not None and await store.get("bob", "b3") is not None

    run(scenario())


def skill_zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_skills_are_unpacked_for_the_shell_and_symlinks_are_not_followed(base: Path) -> None:
    outside = base / "outside"
    outside.mkdir()
    secret = base / "secret.txt"
    secret.write_text("sk-host-secret")
    skill = skill_zip({"csv-helper/SKILL.md": "---\nname: csv-helper\ndescription: Reads CSV files.\n---\nUse csv.\n",
                       "csv-helper/scripts/run.sh": "echo helper ran\n"})

    async def scenario() -> None:
        async with served(base) as (store, client):
            session = await store.open("", "skills")
            # the code plants symlinks: skills/ pointing out of its folder, and an "output" pointing at a host file
            planted = await store.run_code(session, f"import os\nos.symlink({str(outside)!r}, 'skills')\n"
                                           f"os.symlink({str(secret)!r}, 'leak.txt')")
            assert planted.error is None and planted.files == ()  # a symlink is not an output file
            assert await store.add_skills(session, [skill]) == ["csv-helper"]
            assert list(outside.iterdir()) == []  # nothing was written through the symlink
            shell = await store.run_shell(session, ["cat skills/csv-helper/SKILL.md",
                                                    "sh skills/csv-helper/scripts/run.sh"])
            assert "name: csv-helper" in shell.results[0].stdout and shell.results[1].stdout == "helper ran\n"
            assert shell.files == ()  # skills/ is not output
            with pytest.raises(APIError, match="'..'"):
                await store.add_skills(session, [skill_zip({"SKILL.md": "x", "../evil.txt": "x"})])
            listed = (await client.get("/v1/sessions/skills")).json()["files"]
            assert listed == []

    run(scenario())


def test_a_matplotlib_plot_is_an_image_file(base: Path) -> None:
    if os.system("/usr/bin/python3 -c 'import matplotlib, numpy' 2>/dev/null") != 0:
        pytest.skip("the system Python has no matplotlib/numpy (apt-get install python3-matplotlib)")
    code = "import matplotlib.pyplot as plt\nimport numpy as np\nplt.plot(np.arange(10) ** 2)\nplt.savefig('plot.png')"

    async def scenario() -> None:
        async with served(base, sandbox={"timeout": 30, "cpu_seconds": 10, "memory": "1GiB"}) as (store, client):
            session = await store.open("", "plot")
            outcome = await store.run_code(session, code)
            assert outcome.error is None, outcome.stderr
            assert [(f.filename, f.content_type) for f in outcome.images] == [("plot.png", "image/png")]
            data = (await client.get(f"/v1/files/{outcome.images[0].file_id}/content")).content
            assert data.startswith(b"\x89PNG")
            shown = await store.run_code(session, "plt.figure()\nplt.bar([1, 2], [3, 4])\nplt.show()")
            assert shown.error is None, shown.stderr
            # show() shows every open figure, as a notebook would: the first call's (saved, not closed) too
            assert [f.filename for f in shown.images] == ["figure-1.png", "figure-2.png"]
            assert (await store.run_code(session, "plt.show()")).files == ()  # show() closed them

    run(scenario())


def test_without_a_sandbox_runs_say_code_is_not_enabled(base: Path) -> None:
    async def scenario() -> None:
        store = SessionStore(AgentConfig(), None, base / "sessions", lambda: None)
        await store.start()
        try:
            session = await store.open("", "none")
            outcome = await store.run_code(session, "print(1)")
            shell = await store.run_shell(session, ["echo 1"])
            assert outcome.error is not None and "not enabled" in outcome.error and outcome.stdout == ""
            assert shell.error is not None and "not enabled" in shell.error and shell.results == ()
        finally:
            await store.close()
        assert list((base / "sessions").iterdir()) == []  # close() removed this server's folder

    run(scenario())


def test_a_session_resumes_its_transcript_where_the_client_repeats_it() -> None:
    from modelyard.router.agent_sessions import Session

    session = Session("s", "", Path("/nonexistent"), 0.0, 0.0)
    question = {"role": "user", "content": "sum it"}
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "code_interpreter", "arguments": "{}"}}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "stdout:\n42"}
    answer = {"role": "assistant", "content": "It is 42."}
    assert session.resumed([question]) == [question]  # nothing kept yet
    session.remember([question], [question, call, result, answer])
    follow_up = {"role": "user", "content": "and doubled?"}
    assert session.resumed([question, answer, follow_up]) == [question, call, result, answer, follow_up]
    other = {"role": "user", "content": "something else"}
    assert session.resumed([other]) == [other]  # a changed conversation is taken as it is
    # A client that sends the exchange back itself (the Messages API's server tool blocks) is taken as it is.
    whole = [question, call, result, answer, follow_up]
    assert session.resumed(whole) == whole
    assert len(session.history) == 4


def test_chat_code_interpreter_end_to_end_keeps_the_session(server_factory: Any) -> None:
    """Through a real server: a scripted model calls code_interpreter in a chat completion with a session_id; the
    variable and the file it made are there for the next request and on the sessions and containers routes."""
    from tests.conftest import local_http, script, scripted_model_toml

    server = server_factory(
        '[storage]\npath = "responses.sqlite3"\n[agent]\ntools = ["code_interpreter", "shell"]\n'
        '[agent.sandbox]\nmode = "on"\ntimeout = 10\n'
        + scripted_model_toml("coder", options='after_tool_result = ["done"]')
    )
    url = server.base_url

    def turn(code: str) -> dict[str, Any]:
        call = {"tool_call": {"name": "code_interpreter", "arguments": {"code": code}}}
        body = {"model": "coder", "messages": [{"role": "user", "content": script(call)}],
                "tools": [{"type": "code_interpreter"}], "session_id": "e2e"}
        response = local_http.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    first = turn("total = 40 + 2\nopen('total.txt', 'w').write(str(total))")
    assert first["choices"][0]["message"]["content"] == "done"
    [record] = first["agentic_tool_calls"]
    assert record["name"] == "code_interpreter" and not record["failed"] and len(record["file_ids"]) == 1
    file_id = record["file_ids"][0]
    second = turn("print(total)")
    assert second["agentic_tool_calls"][0]["data"]["stdout"] == "42\n"  # the same interpreter, a request later

    about = local_http.get(f"{url}/v1/sessions/e2e", timeout=10).json()
    assert about["files"] == [file_id] and about["messages"] > 0
    listed = local_http.get(f"{url}/v1/containers/e2e/files", timeout=10).json()["data"]
    assert [(f["id"], f["path"]) for f in listed] == [(file_id, "/sandbox/total.txt")]
    assert local_http.get(f"{url}/v1/containers/e2e/files/{file_id}/content", timeout=10).content == b"42"
    assert local_http.delete(f"{url}/v1/sessions/e2e", timeout=10).json()["deleted"] is True
    assert local_http.get(f"{url}/v1/sessions/e2e", timeout=10).status_code == 404
