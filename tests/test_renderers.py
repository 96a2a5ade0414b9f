"""Every text surface's rendering of the model's typed events, without a
model: scripted event sequences (plain text, reasoning then text, a tool
call, several tool calls, a stop sequence, a length cut-off, n > 1 for chat,
a failure midway) go through each surface's renderer, and the exact wire
frames and whole answers are checked, against OpenAI's published schemas
(tests/data/openai-schemas.json) and the Anthropic SDK's types where they apply."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pydantic
import pytest
from modelyard.adapters.base import (
    CompletionRequest,
    Finished,
    PromptTokens,
    Sampling,
    TextDelta,
    TokenLogprob,
    TopLogprob,
)
from modelyard.router.anthropic_render import MessageRenderer
from modelyard.router.chat import ChatRenderer
from modelyard.router.completions import CompletionRenderer
from modelyard.router.errors import APIError
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    PromptSize,
    ReasoningDelta,
    TokenLogprobs,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.router.generation import ChoiceBuilder, choices, model_output
from modelyard.router.response_runs import ResponseRun
from modelyard.router.streaming import DONE, sse
from modelyard.router.surface import Frame, Renderer, collect, pump
from modelyard.schemas import responses as rs

from tests.conftest import openai_validator

CHAT_CHUNK = openai_validator("CreateChatCompletionStreamResponse")
CHAT_COMPLETION = openai_validator("CreateChatCompletionResponse")
COMPLETION = openai_validator("CreateCompletionResponse")
RESPONSE = openai_validator("Response")
RESPONSE_EVENT = openai_validator("ResponseStreamEvent")
@functools.cache
def anthropic_event() -> pydantic.TypeAdapter[Any]:
    """The anthropic SDK's stream event type, imported when first needed: the
    SDK takes 2.7 s of CPU to import, and under xdist only the worker that runs
    the modules needing it should (tests/conftest.py groups them)."""
    import anthropic

    return pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)

PLAIN = [ContentDelta("Hello"), ContentDelta(" world"), Finish(7, 2, "stop")]
REASONING = [ReasoningDelta("Think"), ReasoningDelta("ing."), ContentDelta("Paris."), Finish(7, 4, "stop")]
TOOL_CALL = [
    ToolCallOpened(0, "call_a1", "get_weather"),
    ToolArgumentsDelta(0, '{"city": "Paris"}'),
    Finish(9, 12, "stop", tool_calls=1),
]
TWO_TOOL_CALLS = [
    ContentDelta("\n"),
    ToolCallOpened(0, "call_a1", "get_weather"),
    ToolArgumentsDelta(0, '{"city": "Paris"}'),
    ToolCallOpened(1, "call_b2", "get_time"),
    ToolArgumentsDelta(1, "{}"),
    Finish(9, 20, "stop", tool_calls=2),
]
STOP_SEQUENCE = [ContentDelta("one, two"), Finish(5, 3, "stop", "three")]
LENGTH = [ContentDelta("a long"), Finish(5, 2, "length")]


def valid(validator: Any, value: Any) -> Any:
    error = jsonschema.exceptions.best_match(validator.iter_errors(json.loads(json.dumps(value))))
    assert error is None, f"{error.message} in {value}"
    return value


def frames(renderer: Renderer, events: list[Event]) -> list[Frame]:
    out = renderer.opening()
    for event in events:
        out += renderer.render(event)
    return out + renderer.closing()


def answer(renderer: Renderer, events: list[Event]) -> dict[str, Any]:
    renderer.opening()
    for event in events:
        renderer.render(event)
    return renderer.result()


# --- chat completions -------------------------------------------------------


def chat(n: int = 1, include_usage: bool = False) -> ChatRenderer:
    return ChatRenderer("chatcmpl-1", 100, "m", n, include_usage)


def chat_deltas(out: list[Frame]) -> list[tuple[int, dict[str, Any], str | None]]:
    """Each chunk as (choice index, delta, finish_reason), after checking it against OpenAI's schema."""
    assert out[-1] == Frame("[DONE]")
    chunks = [valid(CHAT_CHUNK, f.data) for f in out[:-1]]
    assert all(f.event is None for f in out)
    assert all(c["id"] == "chatcmpl-1" and c["created"] == 100 and c["model"] == "m" for c in chunks)
    return [
        (c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
        for c in chunks
        if c["choices"]
    ]


def test_chat_plain_text() -> None:
    out = frames(chat(), PLAIN)
    assert chat_deltas(out) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Hello"}, None),
        (0, {"content": " world"}, None),
        (0, {}, "stop"),
    ]
    assert out[0].data == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 100,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
    }
    body = valid(CHAT_COMPLETION, answer(chat(), PLAIN))
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 100,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}},
    }


def test_chat_reasoning_then_text() -> None:
    assert chat_deltas(frames(chat(), REASONING))[1:] == [
        (0, {"reasoning_content": "Think"}, None),
        (0, {"reasoning_content": "ing."}, None),
        (0, {"content": "Paris."}, None),
        (0, {}, "stop"),
    ]
    message = valid(CHAT_COMPLETION, answer(chat(), REASONING))["choices"][0]["message"]
    assert message["content"] == "Paris." and message["reasoning_content"] == "Thinking."
    assert "tool_calls" not in message


def test_chat_tool_call() -> None:
    assert chat_deltas(frames(chat(), TOOL_CALL))[1:] == [
        (
            0,
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        (0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]}, None),
        (0, {}, "tool_calls"),
    ]
    choice = valid(CHAT_COMPLETION, answer(chat(), TOOL_CALL))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]


def test_chat_several_tool_calls_drop_the_blank_text() -> None:
    deltas = chat_deltas(frames(chat(), TWO_TOOL_CALLS))
    assert [d["tool_calls"][0]["index"] for _, d, _ in deltas if "tool_calls" in d] == [0, 0, 1, 1]
    assert deltas[1] == (0, {"content": "\n"}, None)  # streamed as it came
    message = valid(CHAT_COMPLETION, answer(chat(), TWO_TOOL_CALLS))["choices"][0]["message"]
    assert message["content"] is None  # only whitespace beside the calls
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    assert message["tool_calls"][1]["function"]["arguments"] == "{}"


def test_chat_stop_sequence_and_length() -> None:
    assert chat_deltas(frames(chat(), STOP_SEQUENCE))[-1] == (0, {}, "stop")
    assert chat_deltas(frames(chat(), LENGTH))[-1] == (0, {}, "length")
    assert valid(CHAT_COMPLETION, answer(chat(), LENGTH))["choices"][0]["finish_reason"] == "length"


def test_chat_n_choices_in_turn_with_usage() -> None:
    events = [
        ContentDelta("A", choice=0),
        Finish(5, 1, "stop", cached_tokens=4, choice=0),
        ContentDelta("B", choice=1),
        Finish(5, 2, "length", cached_tokens=5, choice=1),
    ]
    out = frames(chat(n=2, include_usage=True), events)
    assert chat_deltas(out) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "A"}, None),
        (0, {}, "stop"),
        (1, {"role": "assistant", "content": ""}, None),
        (1, {"content": "B"}, None),
        (1, {}, "length"),
    ]
    assert all(f.data["usage"] is None for f in out[:-2])
    assert out[-2].data["choices"] == [] and out[-2].data["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 4},  # as the first choice found the cache
    }
    body = valid(CHAT_COMPLETION, answer(chat(n=2), events))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8, "prompt_tokens_details": {"cached_tokens": 4}}


LOGPROB = TokenLogprob("Hi", -0.5, [72, 105], [TopLogprob("Hi", -0.5, [72, 105]), TopLogprob("Ho", -1.5, [72, 111])])


def test_chat_logprobs_ride_on_the_next_chunk() -> None:
    events = [TokenLogprobs((LOGPROB,)), ContentDelta("Hi"), Finish(3, 1, "stop")]
    out = frames(chat(), events)
    chunks = [valid(CHAT_CHUNK, f.data) for f in out[:-1]]
    wire = {
        "token": "Hi",
        "logprob": -0.5,
        "bytes": [72, 105],
        "top_logprobs": [
            {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
            {"token": "Ho", "logprob": -1.5, "bytes": [72, 111]},
        ],
    }
    assert [c["choices"][0]["logprobs"] for c in chunks] == [None, {"content": [wire], "refusal": None}, None]
    assert valid(CHAT_COMPLETION, answer(chat(), events))["choices"][0]["logprobs"]["content"] == [wire]


def test_chat_failure_is_an_error_chunk_then_done() -> None:
    error = APIError(500, "boom", code="backend_error")
    assert chat().failure(error) == [
        Frame({"error": {"message": "boom", "type": "server_error", "param": None, "code": "backend_error"}}),
        Frame("[DONE]"),
    ]


# --- legacy completions -----------------------------------------------------


def completion(
    n: int = 1, logprobs: int | None = None, echo: str | None = None, include_usage: bool = False
) -> CompletionRenderer:
    prompt = echo or "Say"
    requests = [
        CompletionRequest(prompt=prompt, sampling=Sampling(logprobs=logprobs), echo=echo is not None) for _ in range(n)
    ]
    return CompletionRenderer("cmpl-1", 100, "m", requests, include_usage)


def test_completion_plain_text_stop_and_length() -> None:
    out = frames(completion(), PLAIN)
    assert out[-1] == Frame("[DONE]")
    assert [f.data["choices"][0] for f in out[:-1]] == [
        {"text": "Hello", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": " world", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"},
    ]
    body = valid(COMPLETION, answer(completion(), PLAIN))
    assert body["choices"] == [{"text": "Hello world", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert valid(COMPLETION, answer(completion(), LENGTH))["choices"][0]["finish_reason"] == "length"
    assert answer(completion(), STOP_SEQUENCE)["choices"][0]["finish_reason"] == "stop"


def test_completion_n_choices_count_one_prompt_once() -> None:
    events = [
        ContentDelta("A", choice=0),
        Finish(5, 1, "stop", choice=0),
        ContentDelta("B", choice=1),
        Finish(5, 2, "stop", choice=1),
    ]
    out = frames(completion(n=2, include_usage=True), events)
    assert out[-2].data == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 100,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8, "prompt_tokens_details": {"cached_tokens": 0}},
    }
    body = valid(COMPLETION, answer(completion(n=2), events))
    assert [c["text"] for c in body["choices"]] == ["A", "B"]
    assert body["usage"]["prompt_tokens"] == 5


def test_completion_logprobs_with_text_offsets() -> None:
    second = TokenLogprob("!", -0.1, [33])
    events = [
        TokenLogprobs((LOGPROB,)),
        ContentDelta("Hi"),
        TokenLogprobs((second,)),
        ContentDelta("!"),
        Finish(3, 2, "stop"),
    ]
    out = frames(completion(logprobs=1), events)
    assert [f.data["choices"][0]["logprobs"] for f in out[:2]] == [
        {"tokens": ["Hi"], "token_logprobs": [-0.5], "top_logprobs": [{"Hi": -0.5, "Ho": -1.5}], "text_offset": [0]},
        {"tokens": ["!"], "token_logprobs": [-0.1], "top_logprobs": [{"!": -0.1}], "text_offset": [2]},
    ]
    body = valid(COMPLETION, answer(completion(logprobs=1, echo="Say "), events))
    assert body["choices"][0]["logprobs"]["text_offset"] == [4, 6]  # after the echoed prompt


# --- Anthropic Messages -----------------------------------------------------


def message() -> MessageRenderer:
    return MessageRenderer("msg_1", "m")


def anthropic_frames(events: list[Event]) -> list[dict[str, Any]]:
    out = frames(message(), events)
    for frame in out:
        assert frame.event == frame.data["type"]
        if frame.event == "ping":  # not among the SDK's message events
            assert frame.data == {"type": "ping"}
        else:
            anthropic_event().validate_python(frame.data)
    assert [f.event for f in out[:2]] == ["message_start", "ping"]
    return [f.data for f in out if f.data["type"] != "ping"]


def valid_message(events: list[Event]) -> dict[str, Any]:
    body = answer(message(), events)
    import anthropic

    anthropic.types.Message.model_validate(body)
    return body


def test_anthropic_plain_text() -> None:
    out = anthropic_frames(PLAIN)
    assert (
        out[0]["type"] == "message_start" and out[0]["message"]["id"] == "msg_1" and out[0]["message"]["content"] == []
    )
    assert out[1:] == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " world"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    body = valid_message(PLAIN)
    assert body["content"] == [{"type": "text", "text": "Hello world"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"]["input_tokens"] == 7 and body["usage"]["output_tokens"] == 2


def test_anthropic_reasoning_then_text() -> None:
    out = anthropic_frames(REASONING)[1:]
    assert out[:3] == [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Think"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "ing."}},
    ]
    # The thinking block closes with its signature, as Anthropic's streams do.
    assert out[3]["delta"]["type"] == "signature_delta" and out[3]["delta"]["signature"]
    assert out[4] == {"type": "content_block_stop", "index": 0}
    assert out[5] == {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}
    assert [c["type"] for c in valid_message(REASONING)["content"]] == ["thinking", "text"]
    assert valid_message(REASONING)["content"][0]["thinking"] == "Thinking."


def test_anthropic_tool_calls() -> None:
    out = anthropic_frames(TWO_TOOL_CALLS)[1:]
    assert [(f["type"], f.get("index")) for f in out] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert out[3]["content_block"] == {"type": "tool_use", "id": "toolu_a1", "name": "get_weather", "input": {}}
    assert out[4]["delta"] == {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
    assert out[-2]["delta"]["stop_reason"] == "tool_use"
    body = valid_message(TWO_TOOL_CALLS)
    assert [c["type"] for c in body["content"]] == ["tool_use", "tool_use"]  # blank text dropped
    assert body["content"][0]["input"] == {"city": "Paris"} and body["content"][1]["input"] == {}


def test_anthropic_empty_arguments_send_no_delta() -> None:
    out = anthropic_frames(
        [ToolCallOpened(0, "call_x", "now"), ToolArgumentsDelta(0, ""), Finish(1, 1, "stop", tool_calls=1)]
    )
    assert [f["type"] for f in out[1:]] == [
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_stop_sequence_length_and_empty_answer() -> None:
    assert anthropic_frames(STOP_SEQUENCE)[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "three"}
    assert valid_message(STOP_SEQUENCE)["stop_sequence"] == "three"
    assert anthropic_frames(LENGTH)[-2]["delta"]["stop_reason"] == "max_tokens"
    assert valid_message(LENGTH)["stop_reason"] == "max_tokens"
    empty = anthropic_frames([Finish(3, 0, "stop")])[1:]
    assert empty[:2] == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_stop", "index": 0},
    ]


def test_anthropic_failure_is_an_error_event() -> None:
    frame = message().failure(APIError(429, "busy"))[0]
    assert frame == Frame({"type": "error", "error": {"type": "rate_limit_error", "message": "busy"}}, "error")
    assert (
        sse(frame.data, frame.event)
        == 'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"busy"}}\n\n'
    )


# --- Responses --------------------------------------------------------------


def response_run() -> ResponseRun:
    return ResponseRun(
        rs.ResponseObject(id="resp_1", created_at=0, status="in_progress", model="m"), [], parse_tools=True
    )


def response_events(events: list[Event]) -> list[dict[str, Any]]:
    out = frames(response_run(), events)
    for frame in out:
        assert frame.event == frame.data["type"]
        valid(RESPONSE_EVENT, frame.data)
    assert [f.data["sequence_number"] for f in out] == list(range(len(out)))
    return [f.data for f in out]


def test_responses_plain_text() -> None:
    kinds = [e["type"] for e in response_events(PLAIN)]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    body = valid(RESPONSE, answer(response_run(), PLAIN))
    assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == "Hello world"
    assert body["usage"]["total_tokens"] == 9


def test_responses_reasoning_and_tool_calls() -> None:
    body = valid(RESPONSE, answer(response_run(), REASONING))
    assert [item["type"] for item in body["output"]] == ["reasoning", "message"]
    events = response_events(TWO_TOOL_CALLS)
    assert [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"] == [
        '{"city": "Paris"}',
        "{}",
    ]
    body = valid(RESPONSE, answer(response_run(), TWO_TOOL_CALLS))
    assert [(i["type"], i["name"], i["call_id"]) for i in body["output"]] == [
        ("function_call", "get_weather", "call_a1"),
        ("function_call", "get_time", "call_b2"),
    ]  # the blank text before the calls opened no message


def test_responses_length_is_incomplete() -> None:
    assert response_events(LENGTH)[-1]["type"] == "response.incomplete"
    body = valid(RESPONSE, answer(response_run(), LENGTH))
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_failure_is_response_failed() -> None:
    run = response_run()
    run.opening()
    run.render(ContentDelta("half"))
    out = run.failure(APIError(500, "boom"))
    assert [f.event for f in out][-1] == "response.failed"
    assert out[-1].data["response"]["error"] == {"code": "server_error", "message": "boom"}


# --- from the adapter's deltas to events, and the pump ----------------------


def test_choice_builder_parses_reasoning_tool_calls_and_logprobs() -> None:
    builder = ChoiceBuilder(1, ["<think>", "</think>"], parse_tools=True)
    events: list[Event] = []
    for piece in ["<thi", "nk>hm</think>\n\nOk", "<tool_call>\n", '{"name": "f", "arguments": {"a": 1}}\n</tool_call>']:
        events += builder.feed(TextDelta(piece, [LOGPROB] if piece == "<thi" else None))
    events += builder.finish(Finished("stop", 4, 9, None))
    opened = next(e for e in events if isinstance(e, ToolCallOpened))
    assert events == [
        TokenLogprobs((LOGPROB,), choice=1),
        ReasoningDelta("hm", choice=1),
        ContentDelta("Ok", choice=1),
        ToolCallOpened(0, opened.id, "f", choice=1),
        ToolArgumentsDelta(0, '{"a": 1}', choice=1),
        Finish(4, 9, "stop", None, 1, choice=1),
    ]
    assert events[-1].finish_reason == "tool_calls"


async def scripted(items: list[Any], fail: Exception | None = None) -> AsyncIterator[Any]:
    for item in items:
        yield item
    if fail is not None:
        raise fail


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_an_answer_without_finished_is_an_error() -> None:
    async def drain() -> None:
        async for _ in model_output(scripted([TextDelta("hi")]), ChoiceBuilder(0, [], False)):
            pass

    with pytest.raises(APIError, match="stopped without finishing"):
        run(drain())


def test_choices_run_in_turn_at_width_one() -> None:
    started: list[str] = []

    def call(prompt: str) -> AsyncIterator[Any]:
        started.append(prompt)
        return scripted([TextDelta(prompt), Finished("stop", 1, 1)])

    async def drain() -> list[Event]:
        return [e async for e in choices(call, ["a", "b"], [ChoiceBuilder(i, [], False) for i in range(2)], width=1)]

    events = run(drain())
    assert [(type(e).__name__, e.choice) for e in events] == [
        ("ContentDelta", 0),
        ("Finish", 0),
        ("ContentDelta", 1),
        ("Finish", 1),
    ]
    assert started == ["a", "b"]


def test_pump_frames_a_stream_and_ends_a_failure_with_the_surface_error(caplog: pytest.LogCaptureFixture) -> None:
    async def stream(items: list[Event], fail: Exception | None = None) -> list[str]:
        events = scripted(items[1:], fail)
        return [frame async for frame in pump(chat(), items[0], events, "req-1")]

    ok = run(stream(PLAIN))
    assert ok == [sse(f.data, f.event) for f in frames(chat(), PLAIN)]
    assert ok[-1] == DONE and ok[1].startswith('data: {"id":"chatcmpl-1","object":"chat.completion.chunk"')
    with caplog.at_level(logging.ERROR, "modelyard"):
        failed = run(stream(PLAIN[:1], RuntimeError("worker crashed")))
    assert failed[-1] == DONE
    error = json.loads(failed[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "req-1" in error["message"] and "worker crashed" not in error["message"]
    assert any("req-1" in r.getMessage() for r in caplog.records), "an unexpected failure is logged with its request id"
    caplog.clear()
    with caplog.at_level(logging.ERROR, "modelyard"):
        expected = run(stream(PLAIN[:1], APIError(504, "too slow")))
    assert json.loads(expected[-2].removeprefix("data: "))["error"]["message"] == "too slow"
    assert not caplog.records, "an APIError is the client's answer, not a server fault"


def test_pump_runs_after_only_when_the_answer_ended() -> None:
    ran: list[str] = []

    async def after() -> None:
        ran.append("after")

    async def partly() -> None:
        frames_ = pump(chat(), PLAIN[0], scripted(PLAIN[1:]), None, after)
        await anext(frames_)
        await frames_.aclose()  # the client went away

    run(partly())
    assert ran == []

    async def fully() -> None:
        async for _ in pump(chat(), PLAIN[0], scripted(PLAIN[1:]), None, after):
            pass

    run(fully())
    assert ran == ["after"]


def test_collect_gives_the_whole_answer() -> None:
    body = run(collect(chat(), PLAIN[0], scripted(PLAIN[1:])))
    assert body["choices"][0]["message"]["content"] == "Hello world"


# --- the model's first event (Prompt) and keep-alives ------------------------


def test_prompt_event_opens_each_stream_before_any_token() -> None:
    prompt = PromptSize(12, 8)
    assert chat_deltas(chat().render(prompt) + [Frame("[DONE]")]) == [(0, {"role": "assistant", "content": ""}, None)]
    assert completion().render(prompt) == []
    opened = message().render(prompt)
    assert [f.event for f in opened] == ["message_start", "ping"]
    anthropic_event().validate_python(opened[0].data)
    # Anthropic counts cache reads apart from input_tokens.
    assert opened[0].data["message"]["usage"] == {
        "input_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 8,
        "output_tokens": 0,
    }
    run_ = response_run()
    assert [f.event for f in run_.opening()] == ["response.created", "response.in_progress"]
    assert run_.render(prompt) == []


def test_cached_tokens_reach_each_usage() -> None:
    events: list[Event] = [PromptSize(7, 5), ContentDelta("Hi"), Finish(7, 1, "stop", cached_tokens=5)]
    assert answer(chat(), events)["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}
    assert answer(completion(), events)["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}
    usage = valid_message(events)["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (2, 5)
    assert anthropic_frames(events)[-2]["usage"]["cache_read_input_tokens"] == 5
    body = valid(RESPONSE, answer(response_run(), events))
    assert body["usage"]["input_tokens"] == 7 and body["usage"]["input_tokens_details"]["cached_tokens"] == 5


def test_choice_builder_turns_prompt_accepted_into_the_prompt_event() -> None:
    builder = ChoiceBuilder(1, [], parse_tools=False)
    assert builder.accept(PromptTokens(9, 3)) == [PromptSize(9, 3, choice=1)]
    assert builder.finish(Finished("stop", 9, 0, cached_tokens=3))[-1] == Finish(9, 0, "stop", cached_tokens=3, choice=1)


async def slow(items: list[Any], pause: float) -> AsyncIterator[Any]:
    for item in items:
        await asyncio.sleep(pause)
        yield item


@pytest.mark.parametrize(
    ("renderer", "keepalive"),
    [(chat, ": keep-alive\n\n"), (message, 'event: ping\ndata: {"type":"ping"}\n\n'), (response_run, ": keep-alive\n\n")],
)
def test_pump_sends_the_surface_keepalive_while_the_model_is_quiet(renderer: Any, keepalive: str) -> None:
    async def stream() -> list[str]:
        events = slow(PLAIN, 0.25)  # each event a few keep-alive intervals after the last
        return [frame async for frame in pump(renderer(), PromptSize(7), events, None, keepalive=0.05)]

    out = run(stream())
    assert out.count(keepalive) >= 3 * len(PLAIN) // 2
    answer_frames = [f for f in out if f != keepalive]
    expected = [f for f in frames(renderer(), [PromptSize(7), *PLAIN]) if f.text() != keepalive]
    # The same answer in between (event names; Responses' item ids are random).
    assert [f.split("\n")[0][:40] for f in answer_frames] == [f.text().split("\n")[0][:40] for f in expected]


def test_pump_sends_no_keepalive_when_the_model_is_not_quiet() -> None:
    async def stream() -> list[str]:
        return [frame async for frame in pump(chat(), PromptSize(7), scripted(PLAIN), None, keepalive=5.0)]

    assert ": keep-alive\n\n" not in run(stream())


def test_closing_the_pump_while_it_waits_closes_the_model_stream() -> None:
    closed: list[str] = []

    async def model() -> AsyncIterator[Event]:
        try:
            await asyncio.sleep(30)  # a prompt that takes long
            yield ContentDelta("never")
        finally:
            closed.append("model")

    async def leave() -> list[str]:
        stream = pump(chat(), PromptSize(7), model(), None, keepalive=0.01)
        got = [await anext(stream), await anext(stream)]  # the role chunk, then a keep-alive
        await stream.aclose()  # the client went away
        return got

    got = run(leave())
    assert got[1] == ": keep-alive\n\n" and closed == ["model"]
