"""Bounds before work ([limits]) and input hygiene: schemas, grammars and
prompts that would exhaust or crash a worker, and text it cannot encode, are
refused with a 400 by the router, quickly, and the worker keeps serving.

The first part tests router/limits.py as pure functions; the second sends
each probe of issue 19 through a server with scripted (model-free) models,
since the router must refuse them before any model work; the last part runs
schemas and grammars at the limits on a real server with SmolLM2."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from modelyard.router.errors import APIError
from modelyard.router.limits import check_grammar, check_schema, check_schemas, lone_surrogate_in
from modelyard.router.sampling import logit_bias
from modelyard.schemas.config import LimitsConfig

from tests.conftest import chat_model_toml, scripted_model_toml

DEFAULTS = LimitsConfig()
SCHEMA = "response_format.json_schema.schema"


def refusal(call: Any, *args: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value


def nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def nested_parens(levels: int) -> str:
    return "root ::= " + "(" * levels + '"x"' + ")" * levels + "\n"


# --- pure functions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "keyword, key",
    [("maxLength", "max_repeat"), ("minLength", "max_repeat"), ("maxItems", "max_repeat"), ("minItems", "max_repeat")],
)
def test_repetition_bounds_name_the_keyword_path_limit_and_key(keyword: str, key: str) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", keyword: DEFAULTS.max_repeat + 1}}}
    error = refusal(check_schema, schema, SCHEMA, DEFAULTS)
    assert error.param == f"{SCHEMA}.properties.name.{keyword}"
    assert f"{DEFAULTS.max_repeat:,}" in error.message or str(DEFAULTS.max_repeat) in error.message
    assert key in error.message and error.code == "limit_exceeded"


def test_repetition_at_the_limit_passes() -> None:
    check_schema({"type": "string", "maxLength": DEFAULTS.max_repeat}, SCHEMA, DEFAULTS)
    check_schema({"type": "array", "items": {"type": "integer"}, "maxItems": DEFAULTS.max_repeat}, SCHEMA, DEFAULTS)


def test_a_billion_is_refused_without_work() -> None:
    # Work counted, not timed: the refusal makes a handful of Python calls,
    # where expanding a billion repetitions would make millions.
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        error = refusal(check_schema, {"type": "string", "maxLength": 1_000_000_000}, SCHEMA, DEFAULTS)
    finally:
        sys.setprofile(None)
    assert "max_repeat" in error.message
    assert calls < 1000, calls


def test_depth() -> None:
    error = refusal(check_schema, nested_schema(300), SCHEMA, DEFAULTS)
    assert error.param is not None and error.param.startswith(SCHEMA + ".properties.a")
    assert "max_schema_depth" in error.message
    check_schema(nested_schema(DEFAULTS.max_schema_depth // 2 - 1), SCHEMA, DEFAULTS)


def test_enum_count_and_size() -> None:
    error = refusal(check_schema, {"enum": list(range(DEFAULTS.max_enum_values + 1))}, SCHEMA, DEFAULTS)
    assert error.param == f"{SCHEMA}.enum" and "max_enum_values" in error.message
    check_schema({"enum": [f"value-{i}" for i in range(DEFAULTS.max_enum_values)]}, SCHEMA, DEFAULTS)
    huge = "x" * DEFAULTS.max_grammar_bytes
    error = refusal(check_schema, {"const": huge}, SCHEMA, DEFAULTS)
    assert error.param == f"{SCHEMA}.const" and "max_grammar_bytes" in error.message


def test_properties_per_object() -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(DEFAULTS.max_object_properties + 1)}}
    error = refusal(check_schema, wide, SCHEMA, DEFAULTS)
    assert error.param == f"{SCHEMA}.properties" and "max_object_properties" in error.message
    del wide["properties"]["p0"]
    check_schema(wide, SCHEMA, DEFAULTS)


def test_node_count_spans_all_tools() -> None:
    per_tool = DEFAULTS.max_schema_nodes // 2 + 1
    width = DEFAULTS.max_object_properties
    # objects of `width` properties, nested in one object per tool: per_tool subschemas each
    tool = {"type": "object", "properties": {
        f"o{j}": {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(width - 1)}}
        for j in range(per_tool // width + 1)
    }}  # fmt: skip
    check_schemas([(tool, "tools[0].function.parameters")], DEFAULTS)
    error = refusal(check_schemas, [(tool, "tools[0].function.parameters"), (tool, "tools[1].function.parameters")], DEFAULTS)
    assert error.param is not None and error.param.startswith("tools[1].function.parameters")
    assert "max_schema_nodes" in error.message


@pytest.mark.parametrize(
    "schema, param, words",
    [
        ({"properties": [1]}, f"{SCHEMA}.properties", "properties must be an object"),
        ({"properties": {"a": 1}}, f"{SCHEMA}.properties.a", "must be an object"),
        ({"anyOf": {"type": "string"}}, f"{SCHEMA}.anyOf", "must be an array"),
        ({"type": "string", "maxLength": "10"}, f"{SCHEMA}.maxLength", "non-negative integer"),
        ({"type": "string", "maxLength": -1}, f"{SCHEMA}.maxLength", "non-negative integer"),
        ({"required": "a"}, f"{SCHEMA}.required", "array of property names"),
        ({"enum": "abc"}, f"{SCHEMA}.enum", "enum must be an array"),
        ({"type": 3}, f"{SCHEMA}.type", "type name"),
        ({"type": "string", "pattern": 7}, f"{SCHEMA}.pattern", "must be a string"),
        ({"items": [{"type": "string"}, 5]}, f"{SCHEMA}.items[1]", "must be an object"),
    ],
)
def test_structure(schema: dict[str, Any], param: str, words: str) -> None:
    error = refusal(check_schema, schema, SCHEMA, DEFAULTS)
    assert error.param == param and words in error.message and error.code == "invalid_schema"


def test_pattern_repetition() -> None:
    error = refusal(check_schema, {"type": "string", "pattern": "^a{1,1000000}$"}, SCHEMA, DEFAULTS)
    assert error.param == f"{SCHEMA}.pattern" and "max_repeat" in error.message
    check_schema({"type": "string", "pattern": r"^[a-z]{2,8}\{x\}$"}, SCHEMA, DEFAULTS)


def test_grammar_depth_ignores_literals_and_classes() -> None:
    error = refusal(check_grammar, nested_parens(200_000), DEFAULTS)
    assert error.param == "grammar" and "max_grammar_bytes" in error.message  # 400 KB: over the size first
    error = refusal(check_grammar, nested_parens(DEFAULTS.max_grammar_depth + 1), DEFAULTS)
    assert "max_grammar_depth" in error.message
    check_grammar(nested_parens(DEFAULTS.max_grammar_depth), DEFAULTS)
    parens = "(" * 10_000
    check_grammar(f'root ::= "{parens}" [(] [\\]({parens}] # {parens}\n', DEFAULTS)


def test_grammar_size_rules_and_repetition() -> None:
    many = "root ::= " + " | ".join(f'"w{i}"' for i in range(200_000)) + "\n"
    assert len(many) > 1_500_000
    assert "max_grammar_bytes" in refusal(check_grammar, many, DEFAULTS).message
    rules = "".join(f'r{i} ::= "x"\n' for i in range(DEFAULTS.max_grammar_rules)) + "root ::= r0\n"
    assert "max_grammar_rules" in refusal(check_grammar, rules, DEFAULTS).message
    assert "max_repeat" in refusal(check_grammar, 'root ::= "x"{0,1000000}', DEFAULTS).message
    assert "max_repeat" in refusal(check_grammar, 'root ::= "x"{' + "9" * 5000 + "}", DEFAULTS).message
    check_grammar(f'root ::= "x"{{0,{DEFAULTS.max_repeat}}} [a-z]{{3}}\n', DEFAULTS)


@pytest.mark.parametrize("key", ["--1", "²", "9" * 5000, "-1", "1.5", "", " 1", "١"])
def test_logit_bias_keys_that_are_not_token_ids(key: str) -> None:
    error = refusal(logit_bias, {key: 1.0})
    assert error.param == "logit_bias" and len(error.message) < 200


def test_logit_bias_token_ids() -> None:
    assert logit_bias({"0": 1.0, "50256": -100}) == {0: 1.0, 50256: -100}


def test_lone_surrogates_are_found_with_their_path() -> None:
    assert lone_surrogate_in({"messages": [{"content": "ok"}, {"content": "a\ud800b"}]}) == "messages[1].content"
    assert lone_surrogate_in({"schema": {"properties": {"\udfff": {}}}}) == "schema.properties"
    assert lone_surrogate_in({"text": "paired \U0001f600 is fine", "n": 3}) is None


# --- through the server --------------------------------------------------------------


BODY_LIMIT = 8 * 1024 * 1024
PROBE_CONFIG = (
    f'[server]\nbody_limit = {BODY_LIMIT}\n\n'
    + scripted_model_toml("smol")
    + scripted_model_toml("voice", "speech", load="lazy")
    + scripted_model_toml("minilm", "embeddings", load="lazy")
)
CONFIG = chat_model_toml("smol")
RAISED = "[limits]\nmax_enum_values = 1500\nmax_object_properties = 400\n\n" + chat_model_toml("smol")
HELLO = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def probe_server(server_factory: Any) -> Any:
    return server_factory(PROBE_CONFIG)


@pytest.fixture(scope="module")
def probe_client(probe_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=probe_server.base_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c


def chat_pid(server: Any) -> int:
    model = server.health()["models"]["smol"]
    assert model["status"] == "loaded", model
    pid: int = model["pid"]
    return pid


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "probe", "schema": schema}}


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "smol", "messages": HELLO, "max_tokens": 8, "temperature": 0, **extra}


def string_schema(**bounds: int) -> dict[str, Any]:
    return {"type": "string", **bounds}


def array_schema(**bounds: int) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer"}, **bounds}


@functools.cache  # three probes send 100,000: built once (the probes are built as this module is collected)
def many_messages(count: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(count)]


def tool(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "probe", "parameters": parameters}}


PROBES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    # name: (path, body, param the 400 names, the config key it names)
    "maxLength 10^9": ("/v1/chat/completions", chat_body(response_format=response_format(string_schema(maxLength=10**9))), f"{SCHEMA}.maxLength", "max_repeat"),
    "maxItems 10^8": ("/v1/chat/completions", chat_body(response_format=response_format(array_schema(maxItems=10**8))), f"{SCHEMA}.maxItems", "max_repeat"),
    "maxLength 50000": ("/v1/chat/completions", chat_body(response_format=response_format(string_schema(maxLength=50_000))), f"{SCHEMA}.maxLength", "max_repeat"),
    "maxItems 100000": ("/v1/chat/completions", chat_body(response_format=response_format(array_schema(maxItems=100_000))), f"{SCHEMA}.maxItems", "max_repeat"),
    "minItems 100000": ("/v1/chat/completions", chat_body(response_format=response_format(array_schema(minItems=100_000))), f"{SCHEMA}.minItems", "max_repeat"),
    "grammar 200k nested parens": ("/v1/chat/completions", chat_body(grammar=nested_parens(200_000)), "grammar", "max_grammar_bytes"),
    "grammar 10k nested parens (under the size limit)": ("/v1/completions", {"model": "smol", "prompt": "x", "max_tokens": 4, "grammar": "root::=" + "(" * 10_000 + '"x"' + ")" * 10_000}, "grammar", "max_grammar_depth"),
    "grammar 200k alternatives (1.6 MB)": ("/v1/chat/completions", chat_body(grammar="root ::= " + " | ".join(f'"w{i}"' for i in range(200_000))), "grammar", "max_grammar_bytes"),
    "grammar {0,1000000}": ("/v1/completions", {"model": "smol", "prompt": "x", "max_tokens": 4, "grammar": 'root ::= "x"{0,1000000}'}, "grammar", "max_repeat"),
    "enum 100000 values": ("/v1/chat/completions", chat_body(response_format=response_format({"enum": [f"v{i}" for i in range(100_000)]})), f"{SCHEMA}.enum", "max_enum_values"),
    "100000 messages (3.4 MB)": ("/v1/chat/completions", {"model": "smol", "messages": many_messages(100_000), "max_tokens": 1}, "messages", "max_messages"),
    "json_schema 300 levels deep": ("/v1/chat/completions", chat_body(response_format=response_format(nested_schema(300))), f"{SCHEMA}.properties.a", "max_schema_depth"),
    "properties: [1]": ("/v1/chat/completions", chat_body(response_format=response_format({"type": "object", "properties": [1]})), f"{SCHEMA}.properties", "properties must be an object"),
    "tool parameters maxLength 10^9, tool_choice required": ("/v1/chat/completions", chat_body(tools=[tool({"type": "object", "properties": {"q": string_schema(maxLength=10**9)}})], tool_choice="required"), "tools[0].function.parameters.properties.q.maxLength", "max_repeat"),
    "tool parameters enum 100000, tool_choice required": ("/v1/chat/completions", chat_body(tools=[tool({"type": "object", "properties": {"q": {"enum": list(range(100_000))}}})], tool_choice="required"), "tools[0].function.parameters.properties.q.enum", "max_enum_values"),
    "Responses text.format maxItems 10^8": ("/v1/responses", {"model": "smol", "input": "hi", "max_output_tokens": 8, "store": False, "text": {"format": {"type": "json_schema", "name": "probe", "schema": array_schema(maxItems=10**8)}}}, "text.format.schema.maxItems", "max_repeat"),
    "Responses tool parameters maxLength 10^9": ("/v1/responses", {"model": "smol", "input": "hi", "store": False, "tools": [{"type": "function", "name": "probe", "parameters": {"type": "object", "properties": {"q": string_schema(maxLength=10**9)}}}], "tool_choice": "required"}, "tools[0].parameters.properties.q.maxLength", "max_repeat"),
    "Responses 100000 input items": ("/v1/responses", {"model": "smol", "input": many_messages(100_000), "store": False}, "input", "max_messages"),
    "Messages strict tool input_schema maxLength 10^9": ("/v1/messages", {"model": "smol", "max_tokens": 8, "messages": HELLO, "tools": [{"name": "probe", "strict": True, "input_schema": {"type": "object", "properties": {"q": string_schema(maxLength=10**9)}}}], "tool_choice": {"type": "any"}}, "tools.0.input_schema.properties.q.maxLength", "max_repeat"),
    "Messages 100000 messages": ("/v1/messages", {"model": "smol", "max_tokens": 8, "messages": many_messages(100_000)}, "messages", "max_messages"),
    "prompt of 2M characters": ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": "word " * 400_000}], "max_tokens": 1}, "messages", "max_prompt_chars"),
    "logit_bias '--1'": ("/v1/chat/completions", chat_body(logit_bias={"--1": 1}), "logit_bias", "token ids"),
    "logit_bias '²'": ("/v1/completions", {"model": "smol", "prompt": "x", "max_tokens": 1, "logit_bias": {"²": 1}}, "logit_bias", "token ids"),
    "logit_bias 5000 digits": ("/v1/chat/completions", chat_body(logit_bias={"9" * 5000: 1}), "logit_bias", "token ids"),
    "lone surrogate in chat content": ("/v1/chat/completions", chat_body(messages=[{"role": "user", "content": "a\ud800b"}]), "messages[0].content", "surrogate"),
    "lone surrogate in completions prompt": ("/v1/completions", {"model": "smol", "prompt": "\ud800", "max_tokens": 1}, "prompt", "surrogate"),
    "lone surrogate in Messages content": ("/v1/messages", {"model": "smol", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "text", "text": "\udc00"}]}]}, "messages[0].content[0].text", "surrogate"),
    "lone surrogate in Responses input": ("/v1/responses", {"model": "smol", "input": "\ud800", "store": False}, "input", "surrogate"),
    "lone surrogate in embeddings input": ("/v1/embeddings", {"model": "minilm", "input": ["fine", "\ud800"]}, "input[1]", "surrogate"),
    "lone surrogate in a schema's property name": ("/v1/chat/completions", chat_body(response_format=response_format({"type": "object", "properties": {"\ud800": {"type": "string"}}})), f"{SCHEMA}.properties", "surrogate"),
    "NUL in speech input": ("/v1/audio/speech", {"model": "voice", "input": "hello\u0000world"}, "input", "NUL"),
}


def generated_tokens(client: httpx.Client) -> float:
    """modelyard_generated_tokens for smol: it grows only when its worker generates."""
    text = client.get("/metrics").text
    found = re.search(r'^modelyard_generated_tokens_total\{model="smol"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def post_raw(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps keeps lone surrogates as \\ud800 escapes, as a client would send them.
    return client.post(path, content=json.dumps(body).encode("ascii"), headers={"content-type": "application/json"})


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_is_refused_before_model_work_and_the_worker_lives(name: str, probe_server: Any, probe_client: httpx.Client) -> None:
    # "Quickly" is structural here (no wall clock on a shared machine): the
    # router refuses the probe before any model work, so no model generates,
    # the lazy models stay unloaded and the chat worker is the same process.
    path, body, param, words = PROBES[name]
    server, client = probe_server, probe_client
    pid = chat_pid(server)
    tokens = generated_tokens(client)
    response = post_raw(client, path, body)
    assert response.status_code == 400, response.text[:2000]
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error", error
    if path == "/v1/messages":  # Anthropic's shape has no param: the message names the path
        assert response.json()["type"] == "error" and param in error["message"], error
    else:
        assert (error["param"] or "").startswith(param), error
    assert words in error["message"], error
    assert chat_pid(server) == pid  # the same worker: it never saw the request
    assert generated_tokens(client) == tokens
    models = server.health()["models"]
    assert models["voice"]["status"] == "unloaded" and models["minilm"]["status"] == "unloaded", models


def test_the_worker_serves_after_the_probes(probe_server: Any, probe_client: httpx.Client) -> None:
    server, client = probe_server, probe_client
    pid = chat_pid(server)
    tokens = generated_tokens(client)
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert generated_tokens(client) > tokens  # the counter the probes were checked against does move
    assert chat_pid(server) == pid
    assert not any("worker_crashed" in line or "Traceback" in line for line in server.lines), server.log()


def structured(client: httpx.Client, schema: dict[str, Any], max_tokens: int = 40) -> Any:
    response = client.post(
        "/v1/chat/completions",
        json=chat_body(
            messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format=response_format(schema),
            max_tokens=max_tokens,
        ),
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]


@pytest.mark.real_model
def test_schemas_just_under_the_default_limits_work(server: Any, client: httpx.Client) -> None:
    import jsonschema  # a pinned test dependency
    enum = [f"choice-{i}" for i in range(DEFAULTS.max_enum_values)]
    schema = {
        "type": "object",
        "properties": {
            "pick": {"enum": enum},
            "note": {"type": "string", "maxLength": DEFAULTS.max_repeat},
            "tags": {"type": "array", "items": {"type": "integer"}, "maxItems": DEFAULTS.max_repeat},
        },
        "required": ["pick"],
    }
    pid = chat_pid(server)
    choice = structured(client, schema, max_tokens=60)
    if choice["finish_reason"] == "stop":
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)
    else:  # cut off by max_tokens: still a prefix of the pick
        assert choice["message"]["content"].startswith('{')
    deep = nested_schema(DEFAULTS.max_schema_depth // 2 - 1)
    choice = structured(client, deep, max_tokens=200)
    assert choice["message"]["content"].startswith('{ "a"') or choice["message"]["content"].startswith('{"a"')
    assert chat_pid(server) == pid


@pytest.mark.real_model
def test_grammar_at_the_default_limits_works(server: Any, client: httpx.Client) -> None:
    depth = DEFAULTS.max_grammar_depth
    grammar = "root ::= " + "(" * depth + '"yes"' + ")" * depth + "\n"
    response = client.post("/v1/chat/completions", json=chat_body(grammar=grammar))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "yes"


@pytest.mark.real_model
def test_raising_a_limit_in_the_config_lets_a_bigger_schema_through(server_factory: Any, client: httpx.Client) -> None:
    enum = [f"item-{i}" for i in range(DEFAULTS.max_enum_values + 500)]
    refused = client.post("/v1/chat/completions", json=chat_body(response_format=response_format({"enum": enum})))
    assert refused.status_code == 400 and "max_enum_values" in refused.json()["error"]["message"]
    raised = server_factory(RAISED)
    with httpx.Client(base_url=raised.base_url, timeout=120) as other:
        response = other.post("/v1/chat/completions", json=chat_body(response_format=response_format({"enum": enum}), max_tokens=20))
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        if choice["finish_reason"] == "stop":
            assert json.loads(choice["message"]["content"]) in enum
        wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(300)}, "required": ["p7"]}
        assert client.post("/v1/chat/completions", json=chat_body(response_format=response_format(wide))).status_code == 400
        response = other.post("/v1/chat/completions", json=chat_body(response_format=response_format(wide), max_tokens=30))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"].startswith("{")
