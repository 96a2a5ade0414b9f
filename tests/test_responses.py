"""The Responses API on a real SmolLM2 server: plain, streamed (the SDK's
stream helper and the raw events against OpenAI's schema), conversations
through previous_response_id, structured output, forced function calls,
background runs with polling and cancel, per-key ownership, and stored
responses surviving a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import chat_model_toml, openai_validator

pytestmark = pytest.mark.real_model

ALICE = "alice-secret-key"
BOB = "bob-secret-key-2"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
RESPONSE = openai_validator("Response")
EVENT = openai_validator("ResponseStreamEvent")


def config(storage: Path) -> str:
    keys = "".join(f'[[auth.keys]]\nname = "{name}"\nkey = "{key}"\nmetrics = true\n' for name, key in (("alice", ALICE), ("bob", BOB)))
    return f'[storage]\npath = "{storage}"\n\n{keys}\n{chat_model_toml("smol")}'


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage") / "responses.sqlite3"


@pytest.fixture(scope="module")
def server(server_factory: Any, storage: Path) -> Any:
    return server_factory(config(storage), health_key=ALICE)


# Every client made here, closed when the module ends (an unclosed client's
# sockets warn when collected, during some later test).
OPEN_CLIENTS: list[openai.OpenAI] = []


def client_for(server: Any, key: str = ALICE) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=120)
    OPEN_CLIENTS.append(client)
    return client


@pytest.fixture(scope="module", autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture(scope="module")
def client(server: Any) -> openai.OpenAI:
    return client_for(server)


def checked(raw: Any) -> Any:
    """Validate a raw SDK response against OpenAI's Response schema, then parse it."""
    body = json.loads(raw.text)
    error = jsonschema.exceptions.best_match(RESPONSE.iter_errors(body))
    assert error is None, f"{error.message} at {list(error.absolute_path)}\n{body}"
    return raw.parse()


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    return checked(client.responses.with_raw_response.create(model="smol", **kwargs))


def retrieve(client: openai.OpenAI, response_id: str) -> Any:
    return checked(client.responses.with_raw_response.retrieve(response_id))


def wait_while_running(client: openai.OpenAI, response_id: str, until: Any = None, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = retrieve(client, response_id)
        if (until(response) if until else response.status not in ("queued", "in_progress")) or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_plain_response(client: openai.OpenAI) -> None:
    response = create(
        client,
        instructions="Answer briefly.",
        input="What is the capital of France?",
        max_output_tokens=24,
        metadata={"topic": "geography"},
        temperature=0,
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.model == "smol"
    assert response.instructions == "Answer briefly." and response.metadata == {"topic": "geography"}
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert response.output_text.strip()
    usage = response.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"
    again = retrieve(client, response.id)
    assert again.output_text == response.output_text and again.status == response.status


def test_sdk_stream(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    kinds: list[str] = []
    with client.responses.stream(
        model="smol", input="What is the capital of France?", instructions="Answer in a few words.", max_output_tokens=200, temperature=0
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()  # needs response.completed
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(deltas) == final.output_text and final.output_text.strip() and final.status == "completed"
    assert retrieve(client, final.id).output_text == final.output_text


def test_raw_stream_events_follow_the_spec(server: Any) -> None:
    # Greedy, so the model cannot end its answer before the 8-token cut-off this test is about.
    body = {
        "model": "smol",
        "input": "Count from one to twenty in words.",
        "stream": True,
        "max_output_tokens": 8,
        "temperature": 0,
    }
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{server.base_url}/v1/responses", json=body, headers={"Authorization": f"Bearer {ALICE}"}, timeout=120
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                assert event["type"] == kind
                error = jsonschema.exceptions.best_match(EVENT.iter_errors(event))
                assert error is None, f"{event['type']}: {error.message}"
                events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"} and final["usage"]["output_tokens"] == 8
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == events[-4]["text"] == final["output"][0]["content"][0]["text"]
    assert final["output"][0]["status"] == "incomplete"


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = create(client, input="My name is Ada. Say hello.", max_output_tokens=16, temperature=0)
    second = create(client, input="What is my name?", previous_response_id=first.id, max_output_tokens=16, temperature=0)
    assert second.previous_response_id == first.id
    # The first exchange is in the prompt.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    items = client.responses.input_items.list(second.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [("message", "user"), ("message", "assistant"), ("message", "user")]
    assert items.data[0].content[0].text == "My name is Ada. Say hello."
    assert items.data[1].id == first.output[0].id and items.data[1].content[0].text == first.output_text
    assert items.first_id == items.data[0].id and items.last_id == items.data[-1].id and not items.has_more
    newest = client.responses.input_items.list(second.id, limit=1)  # default order: newest first
    assert [i.id for i in newest.data] == [items.data[2].id] and newest.has_more
    rest = client.responses.input_items.list(second.id, limit=5, after=newest.last_id)
    assert [i.id for i in rest.data] == [items.data[1].id, items.data[0].id] and not rest.has_more


def test_json_schema_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "name": "person", "schema": schema, "strict": True}
    response = create(client, input="Invent a person.", text={"format": fmt}, max_output_tokens=60, temperature=0)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema" and response.text.format.name == "person"


def test_forced_function_call_and_its_output(client: openai.OpenAI) -> None:
    response = create(
        client,
        input="What is the weather like in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=60,
    )
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["function_call"]
    call = response.output[0]
    assert call.id.startswith("fc_") and call.call_id.startswith("call_") and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert response.tools[0].name == "get_weather" and response.tool_choice == "required"
    follow_up = create(
        client,
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'}],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=24,
    )
    assert follow_up.output[0].type == "message"
    kinds = [item.type for item in client.responses.input_items.list(follow_up.id, order="asc").data]
    assert kinds == ["message", "function_call", "function_call_output"]


def test_background_poll_and_cancel(server: Any, client: openai.OpenAI) -> None:
    short = create(client, input="Name three colours.", background=True, max_output_tokens=24)
    assert short.status == "queued" and short.background
    done = wait_while_running(client, short.id)
    assert done.status in ("completed", "incomplete") and done.output_text.strip()

    long = create(client, input="Write a very long story about dragons.", background=True, max_output_tokens=900)
    running = wait_while_running(client, long.id, until=lambda r: r.status != "queued" and r.output_text)
    assert running.status == "in_progress" and running.output_text
    before = server.health()["models"]["smol"]
    cancelled = checked(client.responses.with_raw_response.cancel(long.id))
    assert cancelled.status == "cancelled" and cancelled.usage is None
    assert retrieve(client, long.id).status == "cancelled"
    # The model is free again: the worker stopped the cancelled run itself (one
    # that does not within cancel_grace is killed and replaced: a new pid and
    # one more restart), and a fresh request is served.
    server.wait_for(
        lambda h: h["models"]["smol"]["inflight"] == 0 and h["models"]["smol"]["stopping"] == 0,
        60,
        "the cancelled run to stop",
    )
    after = create(client, input="Say hi.", max_output_tokens=4)
    assert after.status in ("completed", "incomplete")
    model = server.health()["models"]["smol"]
    assert model["pid"] == before["pid"] and model["restarts"] == before["restarts"]


def test_rejected_requests(server: Any, client: openai.OpenAI) -> None:
    cases = [
        ({"input": "hi", "background": True, "store": False}, "background"),
        ({"input": "hi", "frobnicate": 1}, "frobnicate"),
        ({"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}, "input[0].content[0]"),
    ]
    for body, param in cases:
        response = httpx.post(f"{server.base_url}/v1/responses", json=body, headers={"Authorization": f"Bearer {ALICE}"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    unstored = create(client, input="hi", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_another_key_gets_404(server: Any, client: openai.OpenAI) -> None:
    mine = create(client, input="hi", max_output_tokens=2)
    bob = client_for(server, BOB)
    calls = [
        lambda: bob.responses.retrieve(mine.id),
        lambda: bob.responses.cancel(mine.id),
        lambda: bob.responses.delete(mine.id),
        lambda: bob.responses.input_items.list(mine.id),
        lambda: bob.responses.create(model="smol", input="hi", previous_response_id=mine.id, max_output_tokens=2),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    client.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(mine.id)


def test_stored_responses_survive_a_restart(server_factory: Any, server: Any, client: openai.OpenAI, storage: Path) -> None:
    # Runs last: it stops the module's server.
    kept = create(client, input="Say hello.", max_output_tokens=8)
    running = create(client, input="Write a very long story about the sea.", background=True, max_output_tokens=900)
    wait_while_running(client, running.id, until=lambda r: r.status == "in_progress")
    server.stop()
    restarted = server_factory(config(storage), health_key=ALICE)
    new_client = client_for(restarted)
    again = retrieve(new_client, kept.id)
    assert again.output_text == kept.output_text and again.usage == kept.usage
    assert [i.type for i in new_client.responses.input_items.list(kept.id).data] == ["message"]
    interrupted = retrieve(new_client, running.id)
    assert interrupted.status == "failed" and interrupted.error.code == "server_error"
    with pytest.raises(openai.NotFoundError):
        client_for(restarted, BOB).responses.retrieve(kept.id)
