"""The sandbox of model-written code (router/sandbox.py): every case really runs
a child under bubblewrap (or, where named, rlimits only) and checks what it
could and could not do."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelyard.router.sandbox import Sandbox, SandboxUnavailable
from modelyard.schemas.config import SandboxConfig
from tests.conftest import processes_running

HAVE_BWRAP = os.access("/usr/bin/bwrap", os.X_OK)


def make(mode: str = "on", **overrides: object) -> Sandbox:
    config = SandboxConfig(mode=mode, **overrides)
    if mode == "on" and not HAVE_BWRAP:
        pytest.skip("bubblewrap (/usr/bin/bwrap) is not installed: apt-get install bubblewrap")
    return Sandbox(config)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return make("on", cpu_seconds=2, max_file_bytes="1MiB", memory="256MiB")


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder nobody may pass through (pytest's tmp_path is not: run as root, the sandbox runs as nobody)."""
    path = Path(tempfile.mkdtemp(prefix="modelyard-sandbox-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(base: Path) -> Path:
    path = base / "work"
    path.mkdir()
    return path


def run(coro):  # noqa: ANN001, ANN201 - no pytest-asyncio in the venv
    return asyncio.run(coro)


def test_python_prints_and_writes_a_csv_seen_on_the_host(sandbox: Sandbox, workdir: Path) -> None:
    assert sandbox.isolation == "bubblewrap"
    code = "import csv, os\nprint('cwd', os.getcwd())\ncsv.writer(open('out.csv', 'w', newline='')).writerows([['a', 'b'], [1, 2]])"
    result = run(sandbox.run_python(code, workdir, timeout=10))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == b"cwd /sandbox\n"
    assert (workdir / "out.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    assert not result.timed_out and result.killed_reason is None and not result.truncated


def test_shell_and_stdin(sandbox: Sandbox, workdir: Path) -> None:
    result = run(sandbox.run_shell("tr a-z A-Z; echo err >&2; exit 3", workdir, stdin=b"hello\n", timeout=10))
    assert (result.stdout, result.stderr, result.exit_code) == (b"HELLO\n", b"err\n", 3)


def test_output_is_capped(workdir: Path) -> None:
    small = make("on", max_output_bytes=1000)
    result = run(small.run_python("import sys\nsys.stdout.write('x' * 100000)", workdir, timeout=10))
    assert result.exit_code == 0 and result.truncated and result.stdout == b"x" * 1000


def test_infinite_loop_is_killed_by_the_timeout_with_its_group(sandbox: Sandbox, workdir: Path) -> None:
    # sleeps, so the CPU limit cannot be what stops it; a background child must go too
    code = "import subprocess, time\np = subprocess.Popen(['sleep', '987'])\nprint(p.pid, flush=True)\nwhile True: time.sleep(1)"
    before = _sleepers()
    started = time.monotonic()
    result = run(sandbox.run_python(code, workdir, timeout=1.5))
    assert result.timed_out and result.killed_reason == "timeout"
    assert 1.4 < time.monotonic() - started < 5
    assert result.stdout.strip().isdigit()  # the background sleep did start
    assert _no_new_sleepers(before)


def test_cpu_bound_loop_is_stopped_by_rlimit_cpu(sandbox: Sandbox, workdir: Path) -> None:
    result = run(sandbox.run_python("while True: pass", workdir, timeout=20))
    assert not result.timed_out
    assert result.killed_reason == "cpu_limit", result
    assert result.duration < 6


def test_fork_bomb_is_contained(workdir: Path) -> None:
    bomb = make("on", max_processes=32, cpu_seconds=5)
    code = (
        "import os, time\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n"
        "        n += 1\nexcept OSError as e:\n    print('stopped', n, e.errno, flush=True)\nelse:\n    print('not stopped', n, flush=True)\n"
        "time.sleep(30)"
    )
    result = run(bomb.run_python(code, workdir, timeout=4))
    assert result.stdout.startswith(b"stopped "), result
    assert int(result.stdout.split()[1]) < 32
    assert result.timed_out  # and its children were killed with it: this process can still fork
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


def test_unbounded_allocation_fails(sandbox: Sandbox, workdir: Path) -> None:
    result = run(sandbox.run_python("x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))", workdir, timeout=10))
    assert result.exit_code != 0 and not result.timed_out
    assert b"MemoryError" in result.stderr or result.killed_reason is not None


def test_huge_file_is_stopped_by_rlimit_fsize(sandbox: Sandbox, workdir: Path) -> None:
    result = run(sandbox.run_python("open('big', 'wb').write(b'x' * (8 * 1024 * 1024))", workdir, timeout=10))
    assert result.exit_code != 0
    assert b"File too large" in result.stderr or result.killed_reason == "file_size_limit"
    assert (workdir / "big").stat().st_size <= 1024 * 1024


def test_host_files_are_not_visible(sandbox: Sandbox, base: Path, workdir: Path) -> None:
    secret = base / "config.toml"  # beside the working folder, readable by everyone on the host
    secret.write_text("[auth]\nkey = 'sk-secret'\n")
    secret.chmod(0o644)
    here = Path(__file__).resolve()
    for path in ("/etc/shadow", "/root/.bashrc", str(secret), str(here)):
        result = run(sandbox.run_python(f"print(open({path!r}).read())", workdir, timeout=10))
        assert result.exit_code != 0 and b"sk-secret" not in result.stdout, (path, result)
        assert b"No such file or directory" in result.stderr or b"Permission denied" in result.stderr
    result = run(sandbox.run_shell("ls /", workdir, timeout=10))
    assert set(result.stdout.split()) <= {b"bin", b"dev", b"etc", b"lib", b"lib32", b"lib64", b"libx32", b"proc",
                                          b"sandbox", b"sbin", b"tmp", b"usr"}, result.stdout
    result = run(sandbox.run_shell("ls /etc", workdir, timeout=10))  # only the few entries /usr needs
    assert set(result.stdout.split()) <= {b"alternatives", b"fonts", b"matplotlibrc"}, result.stdout


def test_no_network(sandbox: Sandbox, workdir: Path) -> None:
    code = (
        "import socket\nfor host in ('127.0.0.1', '1.1.1.1'):\n    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n        s.connect((host, 80)); print('connected', host)\n    except OSError as e:\n        print('refused', host, e.errno)\n"
    )
    result = run(sandbox.run_python(code, workdir, timeout=10))
    assert result.exit_code == 0, result.stderr
    assert b"connected" not in result.stdout and result.stdout.count(b"refused") == 2


def test_environment_is_not_inherited(sandbox: Sandbox, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_FAKE_SECRET", "sk-leak")
    result = run(sandbox.run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('MODELYARD_FAKE_SECRET'))",
                                    workdir, timeout=10))
    assert b"sk-leak" not in result.stdout
    assert set(eval(result.stdout.splitlines()[0])) <= {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PWD"}


@pytest.mark.parametrize("mode", ["on", "off"])
def test_cancellation_kills_the_child(mode: str, workdir: Path) -> None:
    box = make(mode)
    pidfile = workdir / "pid"

    async def scenario() -> None:
        task = asyncio.ensure_future(box.run_shell("echo $$ > pid; exec sleep 987", workdir, timeout=60))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if pidfile.exists() and pidfile.read_text().strip():
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # a pid inside a pid namespace means nothing here: the sleep is found by its command line
    before = _sleepers()
    run(scenario())
    assert pidfile.read_text().strip().isdigit()  # it had started
    assert _no_new_sleepers(before)


def _no_new_sleepers(before: set[int], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while _sleepers() - before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sleepers() -> set[int]:
    return processes_running("sleep", "987")


def test_mode_on_without_bwrap_refuses() -> None:
    with pytest.raises(SandboxUnavailable, match="/nonexistent/bwrap"):
        Sandbox(SandboxConfig(mode="on"), bwrap="/nonexistent/bwrap")


def test_mode_auto_without_bwrap_warns_and_runs_with_rlimits(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelyard.sandbox"):
        box = Sandbox(SandboxConfig(mode="auto", max_file_bytes="1MiB"), bwrap="/nonexistent/bwrap")
    assert box.isolation == "rlimits-only"
    assert any("WITHOUT ISOLATION" in record.getMessage() for record in caplog.records)
    result = run(box.run_python("open('big', 'wb').write(b'x' * (4 * 1024 * 1024))", workdir, timeout=10))
    assert b"File too large" in result.stderr
    result = run(box.run_python("import os\nprint(os.getcwd())", workdir, timeout=10))
    assert result.stdout.decode().strip() == str(workdir.resolve())


def test_config_values() -> None:
    from modelyard.schemas.config import Config
    from pydantic import ValidationError

    config = Config.model_validate({"agent": {"sandbox": {"timeout": "1m", "memory": "1GiB", "mode": "off"}}})
    assert (config.agent.sandbox.timeout, int(config.agent.sandbox.memory)) == (60.0, 1024**3)
    assert Config().agent.sandbox.mode == "auto" and Config().agent.sandbox.network is False
    for bad in ({"mode": "maybe"}, {"memory": 0}, {"timeout": 0}, {"max_processes": 0}, {"nope": 1}):
        with pytest.raises(ValidationError):
            SandboxConfig.model_validate(bad)


def test_code_too_long_for_argv_is_refused(sandbox: Sandbox, workdir: Path) -> None:
    with pytest.raises(ValueError, match="write it to a file"):
        run(sandbox.run_python("#" * 200_000, workdir))


SYSCALLS = r'''
import ctypes, errno, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, *args):
    ctypes.set_errno(0)
    result = getattr(libc, name)(*args)
    print(name, result, errno.errorcode.get(ctypes.get_errno(), 0))
attempt("unshare", 0x10000000)  # CLONE_NEWUSER
attempt("mount", b"none", b"/tmp", b"tmpfs", 0, None)
attempt("ptrace", 0, 0, 0, 0)  # PTRACE_TRACEME
attempt("syscall", 321, 0, 0, 0)  # bpf
worker = threading.Thread(target=lambda: print("thread ran"))
worker.start(); worker.join()
print(subprocess.run(["echo", "child ran"], capture_output=True, text=True).stdout.strip())
'''


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="router/seccomp.py's filter is for x86-64")
def test_seccomp_denies_namespaces_mounts_ptrace_and_bpf(sandbox: Sandbox, workdir: Path) -> None:
    assert sandbox.seccomp
    result = run(sandbox.run_python(SYSCALLS, workdir, timeout=10))
    lines = result.stdout.decode().splitlines()
    assert lines[:4] == ["unshare -1 EPERM", "mount -1 EPERM", "ptrace -1 EPERM", "syscall -1 EPERM"], result
    assert lines[4:] == ["thread ran", "child ran"]  # clone3 falls back to clone: threads and children still work
    shell = run(sandbox.run_shell("unshare -U true; echo $?", workdir, timeout=10))
    assert shell.stdout == b"1\n" and b"Operation not permitted" in shell.stderr


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="router/seccomp.py's filter is for x86-64")
def test_without_seccomp_the_same_calls_reach_the_kernel(workdir: Path) -> None:
    plain = make("on", seccomp=False)
    assert not plain.seccomp
    unshare = SYSCALLS.split('attempt("mount"')[0]
    result = run(plain.run_python(unshare, workdir, timeout=10))
    # Inside bubblewrap's own user namespace a new one is allowed without the filter: what the filter takes away.
    assert result.stdout == b"unshare 0 0\n", result


def test_tmp_is_capped_at_the_memory_limit(sandbox: Sandbox, workdir: Path) -> None:
    # 256 MiB (the fixture's memory) in files of under 1 MiB (its max_file_bytes): a tmpfs page counts against
    # no rlimit, so the size cap is what bounds it.
    fill = "i=0; while [ $i -lt 300 ]; do head -c 1000000 /dev/zero > /tmp/f$i || break; i=$((i+1)); done; echo $i; du -sm /tmp"
    result = run(sandbox.run_shell(fill, workdir, timeout=30))
    written, size = result.stdout.decode().split()[:2]
    assert int(written) < 300 and int(size) <= 257 and b"No space left" in result.stderr, result
