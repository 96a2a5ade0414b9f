"""`backend = "openai"`: a model served by upstream OpenAI-compatible
servers. Two real modelyard servers (scripted backend) are the upstreams of
a third, the front; requests go through the front with the official SDK.
Balancing, a killed and restarted upstream, a wrong upstream key, a hanging
upstream and one that is not there are each checked through the real stack."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from modelyard.router.config import ConfigError, validate

from tests.conftest import ServerProcess, free_port, local_http, script, scripted_model_toml


def upstream_config() -> str:
    # Two workers each: two streams at once per upstream.
    return (
        scripted_model_toml("upstream-chat", extra="replicas = 2\n")
        + scripted_model_toml("upstream-embed", "embeddings")
        + scripted_model_toml("upstream-voice", "speech")
        + scripted_model_toml("upstream-pic", "image")
        + scripted_model_toml("upstream-ears", "transcription")
        + scripted_model_toml("upstream-echo-ears", "transcription", options="echo = true")
    )


def openai_model_toml(model_id: str, modality: str, upstreams: list[str], **options: Any) -> str:
    lines = [f"upstreams = {json.dumps(upstreams)}", "health_interval = 0.3"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    return f'[[models]]\nid = "{model_id}"\nmodality = "{modality}"\nbackend = "openai"\n[models.options]\n' + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def upstreams(server_factory: Any) -> list[ServerProcess]:
    return [server_factory(upstream_config()) for _ in range(2)]


@pytest.fixture(scope="module")
def keyed_upstream(server_factory: Any) -> ServerProcess:
    config = '[[auth.keys]]\nname = "front"\nkey = "right-key"\nadmin = true\n' + scripted_model_toml("upstream-chat")
    return server_factory(config, health_key="right-key")


@pytest.fixture(scope="module")
def spare_upstream(server_factory: Any) -> ServerProcess:
    return server_factory(scripted_model_toml("upstream-chat"))


@pytest.fixture(scope="module")
def server(
    server_factory: Any, upstreams: list[ServerProcess], keyed_upstream: ServerProcess, spare_upstream: ServerProcess
) -> ServerProcess:
    urls = [f"{u.base_url}/v1" for u in upstreams]
    config = (
        openai_model_toml("qwen", "chat", urls, model="upstream-chat")
        # The spare is listed first: of two idle upstreams, the first is asked. No check comes in the test's time.
        + openai_model_toml("retrying", "chat", [f"{spare_upstream.base_url}/v1", urls[1]], model="upstream-chat").replace(
            "health_interval = 0.3", "health_interval = 600"
        )
        + openai_model_toml("embed", "embeddings", urls, model="upstream-embed")
        + openai_model_toml("voice", "speech", urls, model="upstream-voice")
        + openai_model_toml("pic", "image", urls, model="upstream-pic")
        + openai_model_toml("ears", "transcription", urls, model="upstream-ears")
        + openai_model_toml("echo-ears", "transcription", urls, model="upstream-echo-ears")
        # Only the first upstream: what it stored is read back from it.
        + openai_model_toml("native", "chat", urls[:1], model="upstream-chat", native_apis=["responses", "messages"])
        + openai_model_toml("native-capped", "chat", urls[:1], model="upstream-chat", native_apis=["messages"]).replace(
            "backend =", "max_output_tokens = 2\nbackend ="
        )
        + openai_model_toml("impatient", "chat", urls[:1], model="upstream-chat", read_timeout="1s")
        + openai_model_toml("keyed", "chat", [f"{keyed_upstream.base_url}/v1"], model="upstream-chat", api_key_env="KEYED_UPSTREAM_KEY")
        + openai_model_toml("nowhere", "chat", [f"http://127.0.0.1:{free_port()}/v1"], connect_timeout="1s")
    )
    front: ServerProcess = server_factory(config, env={"KEYED_UPSTREAM_KEY": "wrong-key"})
    return front


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60) as c:
        yield c


def chat_requests_served(upstream: ServerProcess, route: str = "/v1/chat/completions") -> float:
    """The requests to `route` an upstream has answered, from its /metrics."""
    text = local_http.get(f"{upstream.base_url}/metrics", timeout=10).text
    pattern = re.compile(r'^modelyard_requests_total\{[^}]*route="' + re.escape(route) + r'"[^}]*\} (\S+)$', re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def upstream_states(server: ServerProcess, model: str = "qwen") -> list[dict[str, Any]]:
    states: list[dict[str, Any]] = server.health()["models"][model]["upstreams"]
    return states


def test_chat_through_the_front(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": script("Hi", " there", ".")}])
    assert reply.choices[0].message.content == "Hi there."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "qwen"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_streamed_chat_through_the_front(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": script("One", " two", " three")}], stream=True
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert "".join(pieces) == "One two three"
    assert len(pieces) >= 2  # chunk by chunk, not one buffered answer


def test_tool_calls_and_reasoning_come_back_in_the_front_shape(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    events = [{"reasoning": "Let me look."}, {"tool_call": {"name": "lookup", "arguments": {"q": "tides"}}}]
    reply = client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": script(*events)}], tools=tools  # type: ignore[arg-type]
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and message.tool_calls[0].function.name == "lookup"
    assert json.loads(message.tool_calls[0].function.arguments) == {"q": "tides"}
    assert getattr(message, "reasoning_content", None) == "Let me look."


def test_responses_and_messages_reach_the_upstream_as_chat(client: openai.OpenAI, server: ServerProcess) -> None:
    response = client.responses.create(model="qwen", input=script("From", " Responses."))
    assert response.output_text == "From Responses."
    import anthropic

    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as claude:
        message = claude.messages.create(
            model="qwen", max_tokens=50, messages=[{"role": "user", "content": script({"reasoning": "Hm."}, "From Messages.")}]
        )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == "From Messages."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"


def test_responses_go_to_an_upstream_that_serves_them_as_they_are(
    client: openai.OpenAI, upstreams: list[ServerProcess]
) -> None:
    chats, responses = chat_requests_served(upstreams[0]), chat_requests_served(upstreams[0], "/v1/responses")
    first = client.responses.create(model="native", input=script("Stored", " upstream."), instructions="Be brief.")
    assert first.output_text == "Stored upstream."
    assert first.model == "native"  # the upstream's name for it is upstream-chat
    assert chat_requests_served(upstreams[0], "/v1/responses") == responses + 1
    assert chat_requests_served(upstreams[0]) == chats  # not translated into a chat completion
    # The upstream keeps it: previous_response_id, reading back and deleting reach the upstream through the front.
    second = client.responses.create(model="native", input=script("Chained."), previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == "Chained."
    read = client.responses.retrieve(first.id)
    assert read.id == first.id and read.output_text == "Stored upstream." and read.model == "native"
    items = client.responses.input_items.list(second.id)
    assert any(getattr(item, "type", None) == "message" for item in items.data)
    assert client.responses.delete(second.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)  # forgotten by the front, gone upstream
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_never_made")
    # Deleted on the upstream behind the front's back: the upstream's 404 comes through as a 404.
    assert local_http.delete(f"{upstreams[0].base_url}/v1/responses/{first.id}", timeout=10).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    # Who may continue a response is the front's to say: one it did not forward is not found.
    direct = local_http.post(f"{upstreams[0].base_url}/v1/responses", timeout=30,
                             json={"model": "upstream-chat", "input": script("Made upstream.")}).json()
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="native", input=script("Hi"), previous_response_id=direct["id"])
    assert unknown.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_a_streamed_response_passes_through_event_by_event(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="native", input=script("One", " two", " three"), stream=True))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "One two three" and len(deltas) >= 2
    assert events[0].type == "response.created" and events[0].response.model == "native"
    assert events[-1].type == "response.completed" and events[-1].response.model == "native"
    assert [event.sequence_number for event in events] == list(range(len(events)))


def test_messages_go_to_an_upstream_that_serves_them_as_they_are(server: ServerProcess, upstreams: list[ServerProcess]) -> None:
    import anthropic

    chats, messages = chat_requests_served(upstreams[0]), chat_requests_served(upstreams[0], "/v1/messages")
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as claude:
        message = claude.messages.create(
            model="native", max_tokens=50, messages=[{"role": "user", "content": script({"reasoning": "Hm."}, "Native.")}]
        )
        with claude.messages.stream(
            model="native", max_tokens=50, messages=[{"role": "user", "content": script("Streamed", " natively.")}]
        ) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude.messages.create(model="native", max_tokens=0, messages=[{"role": "user", "content": "Hi"}])
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Native." and message.model == "native"  # type: ignore[union-attr]
    assert "".join(pieces) == "Streamed natively." and len(pieces) >= 2
    assert final.model == "native" and final.usage.input_tokens > 0  # the upstream's own message_start counts
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    # The front's max_output_tokens caps what the client asked for.
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as claude:
        capped = claude.messages.create(
            model="native-capped", max_tokens=50, messages=[{"role": "user", "content": script("One", " two", " three")}]
        )
    assert capped.stop_reason == "max_tokens" and capped.content[0].text == "One two"  # type: ignore[union-attr]
    assert chat_requests_served(upstreams[0], "/v1/messages") >= messages + 2
    assert chat_requests_served(upstreams[0]) == chats


def test_streamed_completions_through_the_front(client: openai.OpenAI) -> None:
    stream = client.completions.create(model="qwen", prompt=script("Once", " upon", " a time"), stream=True)
    pieces = [chunk.choices[0].text for chunk in stream if chunk.choices and chunk.choices[0].text]
    assert "".join(pieces) == "Once upon a time"
    assert len(pieces) >= 2


def test_a_request_that_fails_before_its_first_byte_is_retried_on_another(
    client: openai.OpenAI, server: ServerProcess, spare_upstream: ServerProcess
) -> None:
    assert [s["state"] for s in upstream_states(server, "retrying")] == ["up", "up"]
    assert spare_upstream.proc is not None
    spare_upstream.proc.send_signal(signal.SIGKILL)
    spare_upstream.proc.wait(10)
    reply = client.chat.completions.create(model="retrying", messages=[{"role": "user", "content": script("retried")}])
    assert reply.choices[0].message.content == "retried"
    spare, other = upstream_states(server, "retrying")
    assert (spare["state"], spare["failures"], spare["requests"]) == ("down", 1, 1)
    assert (other["state"], other["requests"]) == ("up", 1)


def test_embeddings_through_the_front(client: openai.OpenAI, upstreams: list[ServerProcess]) -> None:
    through = client.embeddings.create(model="embed", input=["a tide table", "the moon"])
    with openai.OpenAI(base_url=f"{upstreams[0].base_url}/v1", api_key="x", max_retries=0) as direct_client:
        direct = direct_client.embeddings.create(model="upstream-embed", input=["a tide table", "the moon"])
    assert [d.embedding for d in through.data] == [d.embedding for d in direct.data]
    assert through.model == "embed"
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens


def test_speech_through_the_front(client: openai.OpenAI, upstreams: list[ServerProcess]) -> None:
    through = client.audio.speech.create(model="voice", voice="bob", input="The tide is out.", response_format="wav")
    with openai.OpenAI(base_url=f"{upstreams[1].base_url}/v1", api_key="x", max_retries=0) as direct_client:
        direct = direct_client.audio.speech.create(model="upstream-voice", voice="bob", input="The tide is out.", response_format="wav")
    assert through.content[:4] == b"RIFF"
    assert through.content == direct.content


def test_images_through_the_front(client: openai.OpenAI, upstreams: list[ServerProcess]) -> None:
    through = client.images.generate(model="pic", prompt="a lighthouse", n=2, response_format="b64_json")
    with openai.OpenAI(base_url=f"{upstreams[1].base_url}/v1", api_key="x", max_retries=0) as direct_client:
        direct = direct_client.images.generate(model="upstream-pic", prompt="a lighthouse", n=2, response_format="b64_json")
    assert len(through.data or []) == 2
    assert [i.b64_json for i in through.data or []] == [i.b64_json for i in direct.data or []]


def silent_wav(seconds: float, rate: int = 8000, level: float = 0.0) -> bytes:
    import io

    import numpy as np
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, np.full(int(seconds * rate), level, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_transcriptions_through_the_front(client: openai.OpenAI, upstreams: list[ServerProcess]) -> None:
    served = sum(chat_requests_served(u, "/v1/audio/transcriptions") for u in upstreams)
    audio = ("speech.wav", silent_wav(2.5))
    assert client.audio.transcriptions.create(model="ears", file=audio).text == "second 1. second 2. second 3."
    verbose = client.audio.transcriptions.create(
        model="ears", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert [s.text for s in verbose.segments or []] == [" second 1.", " second 2.", " second 3."]
    assert [w.word for w in verbose.words or []] == ["second", "1.", "second", "2.", "second", "3."]
    assert verbose.language == "english" and abs(verbose.duration - 2.5) < 0.01
    srt = client.audio.transcriptions.create(model="ears", file=audio, response_format="srt")
    assert "00:00:02,000 --> 00:00:02,500\nsecond 3." in str(srt)
    streamed = client.audio.transcriptions.create(model="ears", file=audio, stream=True)
    events = list(streamed)
    assert [e.type for e in events][-1] == "transcript.text.done" and events[-1].text == "second 1. second 2. second 3."
    assert sum(chat_requests_served(u, "/v1/audio/transcriptions") for u in upstreams) == served + 4
    # What the front decoded reaches the upstream as it was: the same samples, the fields, and a translation's task.
    echoed = client.audio.transcriptions.create(
        model="echo-ears", file=("speech.wav", silent_wav(1.0, rate=16000, level=0.25)), language="fr", prompt="Bonjour",
    )
    sent = json.loads(echoed.text)
    assert sent["samples"] == 16000 and sent["peak"] == 0.25 and sent["task"] == "transcribe"
    assert (sent["language"], sent["prompt"]) == ("fr", "Bonjour")
    translated = json.loads(client.audio.translations.create(model="echo-ears", file=audio).text)
    assert translated["task"] == "translate" and translated["language"] is None


def test_an_upstream_that_serves_only_json_transcribes_plain_requests(client: openai.OpenAI, upstreams: list[ServerProcess]) -> None:
    # Asked only for text, the front asks the upstream for plain json (what gpt-4o-transcribe serves): one segment.
    from modelyard.adapters.base import TranscriptionRequest
    from modelyard.router.upstream_wire import transcription_events, transcription_fields

    plain = transcription_fields("m", TranscriptionRequest(samples=b"", language="en", timestamps=False))
    assert plain["response_format"] == "json" and "timestamp_granularities[]" not in plain
    timed = transcription_fields("m", TranscriptionRequest(samples=b"", timestamps=False, word_timestamps=True))
    assert timed["response_format"] == "verbose_json" and timed["timestamp_granularities[]"] == ["segment", "word"]
    info, segment = transcription_events({"text": " Hello there."}, TranscriptionRequest(samples=b""), 2.5)
    assert segment.text == " Hello there." and (segment.start, segment.end) == (0.0, 2.5)
    text = client.audio.transcriptions.create(model="ears", file=("speech.wav", silent_wav(2.5)), response_format="text")
    assert str(text).strip() == "second 1. second 2. second 3."
    with pytest.raises(Exception, match="not in OpenAI's shape"):
        transcription_events({"segments": [{"start": "soon"}]}, TranscriptionRequest(samples=b""), 1.0)


def test_concurrent_requests_spread_over_both_upstreams(client: openai.OpenAI, upstreams: list[ServerProcess]) -> None:
    before = [chat_requests_served(u) for u in upstreams]

    def ask(_: int) -> str | None:
        reply = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": script("ok", {"sleep": 0.3})}])
        return reply.choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert answers == ["ok"] * 20
    served = [chat_requests_served(u) - b for u, b in zip(upstreams, before, strict=True)]
    assert sum(served) == 20
    assert min(served) >= 4, f"least in-flight balancing should use both upstreams: {served}"


def test_a_wrong_upstream_key_is_a_clean_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="keyed", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_error"
    assert "401" in body["message"]


def test_no_upstream_up_is_a_503(client: openai.OpenAI, server: ServerProcess) -> None:
    assert upstream_states(server, "nowhere")[0]["state"] == "down"
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="nowhere", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "upstream_unavailable"


def test_a_hanging_upstream_times_out_without_blocking_others(client: openai.OpenAI) -> None:
    outcome: dict[str, Any] = {}

    def hang() -> None:
        try:
            client.chat.completions.create(model="impatient", messages=[{"role": "user", "content": script({"sleep": 30}, "late")}])
        except openai.APIStatusError as exc:
            outcome["status"] = exc.status_code
            outcome["body"] = exc.body

    hanging = threading.Thread(target=hang)
    hanging.start()
    # Meanwhile the front and the same upstream answer others.
    for _ in range(3):
        reply = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": script("still here")}])
        assert reply.choices[0].message.content == "still here"
    hanging.join(30)
    assert outcome.get("status") == 504, outcome
    assert outcome["body"]["code"] == "upstream_timeout"


def stream_outcome(server: ServerProcess, streaming: threading.Semaphore) -> str:
    """Stream a slow answer through the front, releasing `streaming` once its
    first text came: "ok", or "error" if it ended with an error event."""
    body = {"model": "qwen", "stream": True, "messages": [{"role": "user", "content": script("start", {"sleep": 4}, " end")}]}
    data: list[str] = []
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data.append(line[6:])
                if '"start"' in line:
                    streaming.release()
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    if any("error" in c for c in chunks):
        return "error"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == "start end"
    return "ok"


def restart(upstream: ServerProcess) -> ServerProcess:
    """The same server again, on the same port."""
    again = ServerProcess(upstream.args, {})
    again.port, again.base_url = upstream.port, upstream.base_url
    return again.start()


def test_a_killed_upstream_costs_only_its_requests_and_comes_back(server: ServerProcess, upstreams: list[ServerProcess]) -> None:
    victim = upstreams[0]
    streaming = threading.Semaphore(0)
    with ThreadPoolExecutor(4) as pool:
        # Four streams, two on each upstream (least in flight), all past their first text.
        streams = [pool.submit(stream_outcome, server, streaming) for _ in range(4)]
        for _ in range(4):
            assert streaming.acquire(timeout=30)
        states = upstream_states(server)
        assert [s["inflight"] for s in states] == [2, 2]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        outcomes = [s.result(60) for s in streams]
    assert sorted(outcomes) == ["error", "error", "ok", "ok"], server.log()
    server.wait_for(lambda h: h["models"]["qwen"]["upstreams"][0]["state"] == "down", 10, "the killed upstream to be down")
    # New requests all go to the one left.
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60) as client:
        for _ in range(4):
            assert client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": script("ok")}]).choices[0].message.content == "ok"
        again = restart(victim)
        try:
            server.wait_for(lambda h: h["models"]["qwen"]["upstreams"][0]["state"] == "up", 30, "the upstream to come back")
            before = chat_requests_served(again)
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda _: client.chat.completions.create(
                    model="qwen", messages=[{"role": "user", "content": script("ok", {"sleep": 0.3})}]), range(6)))
            assert chat_requests_served(again) - before > 0
        finally:
            again.stop()


def config_problem(toml: str) -> str:
    import tomllib
    from pathlib import Path

    try:
        validate(tomllib.loads(toml), "config.toml", Path("."), toml)
    except ConfigError as exc:
        return str(exc)
    return ""


def test_config_needs_upstreams_and_no_source() -> None:
    head = '[[models]]\nid = "q"\nmodality = "chat"\nbackend = "openai"\n'
    assert config_problem(head + '[models.options]\nupstreams = ["http://10.0.0.5:8000/v1"]\n') == ""
    assert "models[0].options.upstreams: Field required" in config_problem(head)
    assert "takes no source" in config_problem(head + 'source = "x.gguf"\n[models.options]\nupstreams = ["http://h/v1"]\n')
    assert "not an http:// or https:// URL" in config_problem(head + '[models.options]\nupstreams = ["10.0.0.5:8000"]\n')
    assert "options.api_key_env" in config_problem(head + '[models.options]\nupstreams = ["http://h/v1"]\napi_key_env = "sk-123"\n')
    assert "leave replicas at 1" in config_problem(head + 'replicas = 2\n[models.options]\nupstreams = ["http://h/v1"]\n')
    assert "options.native_apis[1]: Input should be 'responses' or 'messages'" in config_problem(head + '[models.options]\nupstreams = ["http://h/v1"]\nnative_apis = ["responses", "chat"]\n')
    local = '[[models]]\nid = "q"\nmodality = "chat"\nbackend = "llama-cpp"\n'
    assert "models[0].source: required key is missing" in config_problem(local)


def test_a_reload_that_removes_the_model_stops_its_health_checks(server: ServerProcess, keyed_upstream: ServerProcess) -> None:
    """Runs last: it changes the front's config."""
    assert server.config_path is not None

    def checks_seen() -> int:
        return len([line for line in list(keyed_upstream.lines) if "GET /v1/models" in line])

    before = server.health()["config"]["generation"]
    seen = checks_seen()
    keyed_upstream.wait_for_lines(lambda line: "GET /v1/models" in line and checks_seen() > seen + 1)  # checks run
    text = server.config_path.read_text()
    start = text.index('[[models]]\nid = "keyed"')
    end = text.index("[[models]]", start + 1)
    server.config_path.write_text(text[:start] + text[end:])
    health = server.wait_for(lambda h: h["config"]["generation"] > before, 60, "the reload")
    assert "keyed" not in health["models"]
    # The retired entry stopped its checker: once a check in flight at the
    # reload has been logged, no more come, over many health_intervals (0.3s).
    stopped = checks_seen()
    assert keyed_upstream.wait_for_lines(lambda line: checks_seen() > stopped + 1, timeout=3) == []


def test_a_streamed_message_ends_with_the_upstreams_token_counts(server: ServerProcess) -> None:
    import anthropic

    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as claude:
        with claude.messages.stream(
            model="qwen", max_tokens=50, messages=[{"role": "user", "content": script("Counted", " reply.")}]
        ) as stream:
            final = stream.get_final_message()
    assert final.content[0].text == "Counted reply."  # type: ignore[union-attr]
    # message_start cannot know the prompt's count (a chat stream sends it last); the final usage does.
    assert final.usage.input_tokens > 0 and final.usage.output_tokens == 2

