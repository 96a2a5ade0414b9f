"""The sandbox that runs model-written code and shell commands (issue 16, the
agentic runtime's foundation; docs/agent.md has the threat model).

Three layers, each working without the others:
1. bubblewrap (`bwrap`): new user, pid, net, ipc, uts and cgroup namespaces;
   a filesystem of /usr read-only (and the few entries of /etc it needs,
   ETC_READ_ONLY), a fresh /proc, /dev and /tmp and the run's working folder
   at /sandbox -- nothing else of the host;
2. rlimits set in the child before exec (CPU, address space, processes, open
   files, file size, no core dumps); when the server runs as root the child
   also drops to nobody (65534), since the kernel does not count processes
   against RLIMIT_NPROC for root;
3. a wall-clock timeout; on it, or on cancellation, the whole process group is
   killed (and under bubblewrap, with its pid namespace, every process in it).

The child is an asyncio subprocess: nothing here blocks the event loop but the
one-off bwrap probe of `Sandbox.__init__` (build it at startup, in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import platform
import resource
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelyard.router import seccomp
from modelyard.schemas.config import SandboxConfig

log = logging.getLogger("modelyard.sandbox")

BWRAP = "/usr/bin/bwrap"
PYTHON = "/usr/bin/python3"
SHELL = "/bin/sh"
INSIDE = "/sandbox"  # where the working folder is seen under bubblewrap
NOBODY = 65534
MAX_CODE_BYTES = 100 * 1024  # one argv string may not be longer than 128 KiB (MAX_ARG_STRLEN)
# The few files of /etc that /usr needs, none secret: Debian's alternatives (symlinks into /usr, by which numpy finds
# libblas.so.3), fontconfig's settings and matplotlib's defaults (Debian moves them to /etc).
ETC_READ_ONLY = ("/etc/alternatives", "/etc/fonts", "/etc/matplotlibrc")
DRAIN_GRACE = 1.0  # seconds to wait for the pipes once the process group is dead


class SandboxUnavailable(RuntimeError):
    """`mode = "on"` and bubblewrap cannot run."""


@dataclass(frozen=True)
class RunResult:
    stdout: bytes
    stderr: bytes
    exit_code: int | None  # the process's exit status; negative: the signal that ended it (None: never started)
    timed_out: bool
    killed_reason: str | None  # "timeout", "cpu_limit", "file_size_limit", "signal SIGKILL" ..., or None
    duration: float
    truncated: bool  # stdout or stderr went over max_output_bytes


class Sandbox:
    def __init__(self, config: SandboxConfig, *, bwrap: str = BWRAP) -> None:
        self.config = config
        self.bwrap = bwrap
        self.isolation = "rlimits-only"
        self.seccomp = False  # whether bubblewrap loads router/seccomp.py's filter before the code runs
        self._filter = seccomp.program() if config.seccomp else None
        self._drop_to = NOBODY if os.geteuid() == 0 else None
        if config.mode == "off":
            return
        problem = self._probe()
        if problem is None:
            self.isolation = "bubblewrap"
            if self._filter is not None:
                refused = self._probe(with_filter=True)
                self.seccomp = refused is None
                if refused is not None:
                    log.warning("sandbox without its seccomp filter: bwrap could not load it (%s)", refused)
            elif config.seccomp:
                log.warning("sandbox without a seccomp filter: router/seccomp.py has one for x86-64 only, this is %s",
                            platform.machine())
        elif config.mode == "on":
            raise SandboxUnavailable(
                f"[agent.sandbox] mode = \"on\" but bubblewrap does not work ({problem}); install the Debian package "
                "`bubblewrap` (and allow user namespaces), or set mode = \"auto\" or \"off\""
            )
        else:
            log.warning(
                "SANDBOX WITHOUT ISOLATION: bubblewrap does not work (%s); model-written code runs with rlimits and a "
                "clean environment only -- it can read every file and reach every host the server user can", problem
            )

    def _probe(self, with_filter: bool = False) -> str | None:
        if not os.access(self.bwrap, os.X_OK):
            return f"{self.bwrap} not found or not executable"
        fds = [self._filter_fd()] if with_filter else []
        argv = [self.bwrap, *self._bwrap_args(None), *(["--seccomp", str(fds[0])] if fds else []), "/bin/true"]
        try:
            # Without RLIMIT_NPROC: the probe asks whether bwrap works, not how many processes nobody has now.
            done = subprocess.run(argv, capture_output=True, timeout=10, env=self._env(INSIDE), pass_fds=fds,
                                  preexec_fn=functools.partial(self._child_setup, None, False), **self._ids())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{self.bwrap}: {exc}"
        finally:
            for fd in fds:
                os.close(fd)
        if done.returncode != 0:
            return f"{self.bwrap} /bin/true exited {done.returncode}: {done.stderr.decode(errors='replace').strip()[:300]}"
        return None

    # --- building the command ----------------------------------------------------

    def _bwrap_args(self, workdir_fd: int | None) -> list[str]:
        args = ["--unshare-all"]
        if self.config.network:
            args.append("--share-net")
        args += ["--die-with-parent", "--new-session", "--uid", str(NOBODY), "--gid", str(NOBODY),
                 "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # Debian's merged-/usr symlinks, as they are
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), f"/{name}"]
            elif path.is_dir():
                args += ["--ro-bind", str(path), f"/{name}"]
        for path in ETC_READ_ONLY:
            args += ["--ro-bind-try", path, path]
        # /tmp's pages count against no rlimit: its size is capped at the memory one process may map.
        args += ["--proc", "/proc", "--dev", "/dev", "--size", str(int(self.config.memory)), "--tmpfs", "/tmp"]
        if workdir_fd is not None:
            # By fd, not by path: the folder's parents need not be open to the user bwrap runs as.
            args += ["--bind-fd", str(workdir_fd), INSIDE, "--chdir", INSIDE]
        args.append("--clearenv")
        for key, value in self._env(INSIDE).items():
            args += ["--setenv", key, value]
        return args

    @staticmethod
    def _env(home: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def _ids(self, uid: int | None = None) -> dict[str, object]:
        if self._drop_to is None:
            return {}
        who = self._drop_to if uid is None else uid
        return {"user": who, "group": who, "extra_groups": []}

    def _child_setup(self, cpu_budget: int | None = None, count_processes: bool = True) -> None:
        """Runs in the forked child before exec (after subprocess has changed its ids)."""
        c = self.config
        # CPU: SIGXCPU at the soft limit (a clear reason), SIGKILL at the hard one (a second later if it is ignored).
        hard = c.cpu_seconds + 1 if cpu_budget is None else max(cpu_budget, c.cpu_seconds + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (c.cpu_seconds, hard))
        limits = [
            (resource.RLIMIT_AS, int(c.memory)),
            (resource.RLIMIT_NPROC, c.max_processes),
            (resource.RLIMIT_NOFILE, c.max_open_files),
            (resource.RLIMIT_FSIZE, int(c.max_file_bytes)),
            (resource.RLIMIT_CORE, 0),
        ]
        for which, value in limits:
            if which != resource.RLIMIT_NPROC or count_processes:
                resource.setrlimit(which, (value, value))

    # --- running ---------------------------------------------------------------

    async def run_python(self, code: str, workdir: Path, *, timeout: float | None = None,
                         stdin: bytes | None = None, uid: int | None = None) -> RunResult:
        """Run Python source with the system interpreter (/usr/bin/python3) in the working folder."""
        if len(code.encode()) > MAX_CODE_BYTES:
            raise ValueError(f"code is over {MAX_CODE_BYTES} bytes; write it to a file in the working folder")
        return await self.run([PYTHON, "-c", code], workdir=workdir, timeout=timeout, stdin=stdin, uid=uid)

    async def run_shell(self, command: str, workdir: Path, *, timeout: float | None = None,
                        stdin: bytes | None = None, uid: int | None = None) -> RunResult:
        """Run a /bin/sh -c command line in the working folder."""
        return await self.run([SHELL, "-c", command], workdir=workdir, timeout=timeout, stdin=stdin, uid=uid)

    async def run(self, argv: Sequence[str], *, workdir: Path, timeout: float | None = None,
                  stdin: bytes | None = None, uid: int | None = None) -> RunResult:
        """Run argv in the sandbox to its end (or its timeout); see `start` for the working folder and `uid`."""
        timeout = self.config.timeout if timeout is None else timeout
        started = time.monotonic()
        child = await self.start(argv, workdir, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                 uid=uid)
        proc = child.process
        cap = int(self.config.max_output_bytes)
        readers = [asyncio.ensure_future(_read_capped(stream, cap)) for stream in (proc.stdout, proc.stderr)]
        feeder = asyncio.ensure_future(_feed(proc.stdin, stdin)) if stdin is not None else None
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                timed_out = True
                child.kill()
                await proc.wait()
            child.kill()  # what the run left in the background goes with it
            done, pending = await asyncio.wait(readers, timeout=DRAIN_GRACE)
            for task in pending:  # a process that left the group still holds a pipe
                task.cancel()
        except BaseException:  # cancelled (or anything else): nothing of the run outlives it
            for task in readers:
                task.cancel()
            await child.reap()
            raise
        finally:
            if feeder is not None:
                feeder.cancel()
        (out, out_cut), (err, err_cut) = [
            task.result() if task.done() and not task.cancelled() else (b"", True) for task in readers
        ]
        code = proc.returncode
        return RunResult(
            stdout=out, stderr=err, exit_code=code, timed_out=timed_out,
            killed_reason="timeout" if timed_out else self.signal_reason(code),
            duration=time.monotonic() - started, truncated=out_cut or err_cut,
        )

    async def start(self, argv: Sequence[str], workdir: Path, *, stdin: int = subprocess.DEVNULL,
                    cpu_budget: int | None = None, uid: int | None = None) -> Started:
        """Start argv in the sandbox and return at once: a process of its own group, stdout and stderr pipes,
        `stdin` as given (an fd, DEVNULL or PIPE). The caller ends it (`Started.kill` / `reap`).

        `uid`: with the server as root, the host user (and group) to run as instead of nobody. The kernel counts
        RLIMIT_NPROC per host user across all its user namespaces, so runs as one user share `max_processes`:
        a caller that keeps processes alive (a session) gives each its own user (router/agent_sessions.py).
        Ignored when the server is not root (it cannot change user).

        `cpu_budget`: the hard RLIMIT_CPU, seconds of CPU over the process's whole life; the soft limit stays
        `cpu_seconds`, and a long-lived process (router/interpreter.py) raises it call by call up to the budget.

        The working folder is the process's current directory (and /sandbox under bubblewrap). With the server as
        root, the folder is handed to nobody (or `uid`: chown) so the code can write in it, and the folders above it
        must be searchable by others (bwrap, run as that user, opens it by its path).
        """
        workdir = Path(workdir).resolve()
        if not workdir.is_dir():
            raise FileNotFoundError(f"sandbox working folder {workdir} does not exist")
        if self._drop_to is not None:
            closed = [str(p) for p in workdir.parents if not os.stat(p).st_mode & 0o001]
            if closed:
                raise PermissionError(f"the sandbox runs as nobody: {closed[0]}, above its working folder {workdir}, "
                                      "must be searchable by others (chmod o+x)")
            who = self._drop_to if uid is None else uid
            os.chown(workdir, who, who)
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds = [fd]
        try:
            if self.isolation == "bubblewrap":
                command = [self.bwrap, *self._bwrap_args(fd)]
                if self.seccomp:
                    fds.append(self._filter_fd())
                    command += ["--seccomp", str(fds[-1])]
                command += list(argv)
                env = self._env(INSIDE)
            else:
                command, env = list(argv), self._env(str(workdir))
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,
                pass_fds=tuple(fds),
                preexec_fn=functools.partial(self._child_setup, cpu_budget),
                **self._ids(uid),
            )
        finally:
            for each in fds:
                os.close(each)  # the child has its own copies (bwrap reads them at startup)
        return Started(proc, self)

    def _filter_fd(self) -> int:
        """A memory file holding the seccomp program, at its start, for bwrap's --seccomp."""
        assert self._filter is not None
        fd = os.memfd_create("modelyard-seccomp", os.MFD_CLOEXEC)
        os.write(fd, self._filter)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def signal_reason(self, code: int | None) -> str | None:
        """What ended a process that exited with `code`: "cpu_limit", "file_size_limit", "signal NAME" or None."""
        if code is None:
            return None
        if code < 0:
            number = -code
        elif self.isolation == "bubblewrap" and code > 128:
            number = code - 128  # bwrap exits 128 + n when its child died of signal n
        else:
            return None
        if number == signal.SIGXCPU:
            return "cpu_limit"
        if number == signal.SIGXFSZ:
            return "file_size_limit"
        try:
            return f"signal {signal.Signals(number).name}"
        except ValueError:
            return None


@dataclass(frozen=True)
class Started:
    """A process running in the sandbox (`Sandbox.start`), the leader of its own process group."""

    process: asyncio.subprocess.Process
    sandbox: Sandbox

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the whole group (under bubblewrap: every process of the run's pid namespace)."""
        kill_group(self.process.pid)

    async def reap(self) -> None:
        """Kill it and wait (a bounded time) for its end, so its pipes close; safe to call again."""
        self.kill()
        with contextlib.suppress(asyncio.TimeoutError):  # a cancellation cuts this short, and goes on up
            await asyncio.wait_for(asyncio.shield(self.process.wait()), DRAIN_GRACE)

    def reason(self) -> str | None:
        """Why it ended, once it has: see `Sandbox.signal_reason`."""
        return self.sandbox.signal_reason(self.process.returncode)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, bool]:
    kept = bytearray()
    truncated = False
    if stream is None:
        return b"", False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if len(chunk) > room:
            truncated = True
            chunk = chunk[:max(room, 0)]
        kept += chunk
    return bytes(kept), truncated


async def _feed(writer: asyncio.StreamWriter | None, data: bytes) -> None:
    if writer is None:
        return
    try:
        writer.write(data)
        await writer.drain()
        writer.close()
    except (BrokenPipeError, ConnectionResetError):
        pass
