"""Long prompts on the streaming surfaces, on the scripted backend: a stream
sends its headers and first event as soon as the model accepts the prompt
(`{"evaluate": seconds}` in a script stands for a long prompt evaluation),
then the surface's keep-alive while the prompt is evaluated; a client that
leaves meanwhile cancels the evaluation; cached prompt tokens reach usage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
import pytest

from tests.conftest import local_http, script, scripted_model_toml
from tests.conftest import scripted_user as user

if TYPE_CHECKING:  # the SDK is imported by the claude fixture, on the xdist worker that runs it (2.7 s of CPU)
    import anthropic

CONFIG = '[server]\nstream_keepalive = "50ms"\n' + scripted_model_toml("fake")
EVALUATE = {"evaluate": 0.5, "cached": 2}  # about 10 keep-alive intervals
COMMENT = ": keep-alive"


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG)




def stream_lines(server: Any, path: str, body: dict[str, Any]) -> list[str]:
    """The stream's non-blank lines, keep-alive comments included, in order."""
    with local_http.stream("POST", f"{server.base_url}{path}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        return [line for line in response.iter_lines() if line]


def data_of(line: str) -> Any:
    payload = line.removeprefix("data: ")
    return payload if payload == "[DONE]" else json.loads(payload)


def split_at_keepalives(lines: list[str], keepalive: str) -> tuple[list[str], int, list[str]]:
    """The lines before the first keep-alive, how many keep-alives follow in a row, and the rest."""
    first = lines.index(keepalive)
    end = first
    while end < len(lines) and lines[end] == keepalive:
        end += 1
    return lines[:first], end - first, lines[end:]


def test_chat_stream_sends_the_role_chunk_then_keepalives_then_tokens(server: Any) -> None:
    lines = stream_lines(server, "/v1/chat/completions", {"model": "fake", "messages": user(EVALUATE, "Hi", "!")})
    before, keepalives, after = split_at_keepalives(lines, COMMENT)
    assert [data_of(line)["choices"][0]["delta"] for line in before] == [{"role": "assistant", "content": ""}]
    assert keepalives >= 3
    assert [data_of(line)["choices"][0]["delta"].get("content") for line in after[:2]] == ["Hi", "!"]
    assert after[-1] == "data: [DONE]" and COMMENT not in after


def test_chat_usage_reports_the_cached_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="fake", messages=user({"evaluate": 0, "cached": 3}, "Hi"))  # type: ignore[arg-type]
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 3


def test_completions_stream_keeps_alive_while_the_prompt_is_evaluated(server: Any) -> None:
    body = {"model": "fake", "prompt": script(EVALUATE, "Hi"), "stream_options": {"include_usage": True}}
    lines = stream_lines(server, "/v1/completions", body)
    before, keepalives, after = split_at_keepalives(lines, COMMENT)
    assert before == [] and keepalives >= 3
    assert data_of(after[0])["choices"][0]["text"] == "Hi"
    assert data_of(after[-2])["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}


def test_messages_stream_sends_message_start_with_the_prompt_size_then_pings(server: Any) -> None:
    messages = user(EVALUATE, "Hi")
    lines = stream_lines(server, "/v1/messages", {"model": "fake", "max_tokens": 20, "messages": messages})
    ping = 'data: {"type":"ping"}'
    events = [line for line in lines if not line.startswith("event: ")]  # data lines; each names its type
    before, pings, after = split_at_keepalives(events, ping)
    assert [data_of(line)["type"] for line in before] == ["message_start"]
    prompt_tokens = len(messages[0]["content"].split())  # what the scripted backend counts
    assert data_of(before[0])["message"]["usage"] == {
        "input_tokens": prompt_tokens - 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2,
        "output_tokens": 0,
    }
    assert pings >= 3  # the one after message_start, then one per keep-alive interval
    assert [data_of(line)["type"] for line in after] == [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert data_of(after[-2])["usage"]["cache_read_input_tokens"] == 2
    assert lines.count("event: ping") == pings  # each ping is a named event, as Anthropic sends it


def test_responses_stream_sends_created_and_in_progress_then_keepalives(server: Any) -> None:
    lines = stream_lines(server, "/v1/responses", {"model": "fake", "input": script(EVALUATE, "Hi"), "store": False})
    data = [line for line in lines if not line.startswith("event: ")]
    before, keepalives, after = split_at_keepalives(data, COMMENT)
    assert [data_of(line)["type"] for line in before] == ["response.created", "response.in_progress"]
    assert keepalives >= 3
    assert data_of(after[0])["type"] == "response.output_item.added"
    completed = data_of(after[-1])
    assert completed["type"] == "response.completed"
    assert completed["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 2


def test_background_responses_stream_keeps_alive_too(server: Any) -> None:
    body = {"model": "fake", "input": script(EVALUATE, "Hi"), "background": True, "store": True}
    data = [line for line in stream_lines(server, "/v1/responses", body) if not line.startswith("event: ")]
    before, keepalives, after = split_at_keepalives(data, COMMENT)
    assert [data_of(line)["type"] for line in before][:2] == ["response.created", "response.queued"]
    assert keepalives >= 3 and data_of(after[-1])["type"] == "response.completed"


def test_the_sdks_read_streams_with_keepalives(client: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    chunks = client.chat.completions.create(model="fake", messages=user(EVALUATE, "A", "B"), stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "AB"
    with client.responses.stream(model="fake", input=script(EVALUATE, "C", "D"), store=False) as stream:
        assert stream.get_final_response().output_text == "CD"
    with claude.messages.stream(model="fake", max_tokens=20, messages=user(EVALUATE, "E", "F")) as messages:  # type: ignore[arg-type]
        final = messages.get_final_message()
    assert final.content[0].text == "EF" and final.usage.cache_read_input_tokens == 2  # type: ignore[union-attr]


def test_an_error_before_the_prompt_is_accepted_keeps_its_status(server: Any) -> None:
    for path, body in [
        ("/v1/chat/completions", {"model": "fake", "messages": user({"invalid": "no such thing"})}),
        ("/v1/messages", {"model": "fake", "max_tokens": 5, "messages": user({"invalid": "no such thing"})}),
        ("/v1/responses", {"model": "fake", "input": script({"invalid": "no such thing"}), "store": False}),
    ]:
        response = local_http.post(f"{server.base_url}{path}", json={**body, "stream": True}, timeout=60)
        assert response.status_code == 400, (path, response.text)


def test_leaving_during_prompt_evaluation_cancels_it(server: Any) -> None:
    before = server.health()["models"]["fake"]
    body = {"model": "fake", "max_tokens": 5, "messages": user({"evaluate": 60}, "never"), "stream": True}
    with local_http.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: message_start"
        server.wait_for(lambda h: h["models"]["fake"]["inflight"] == 1, 10, "the request to be evaluating")
    # The client left 60 s before the evaluation would end: the worker stops and takes the next request.
    server.wait_for(lambda h: h["models"]["fake"]["inflight"] == 0, 10, "the cancelled evaluation to stop")
    quick = local_http.post(
        f"{server.base_url}/v1/messages",
        json={"model": "fake", "max_tokens": 5, "messages": user("ok")},
        timeout=10,
    )
    assert quick.status_code == 200 and quick.json()["content"][0]["text"] == "ok"
    after = server.health()["models"]["fake"]
    assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"]
