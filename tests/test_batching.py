"""Continuous batching on the real SmolLM2 through a real server: requests
decoded together in one llama.cpp context (options.slots) answer as they do
alone, each keeps its own sampling, grammar and stop handling, a cancelled
one frees its slot, a prompt that does not fit beside the running ones
waits for room, each slot keeps its own prompt cache, and a prompt that
lost its slot is read back from host memory."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerProcess, chat_model_toml

pytestmark = pytest.mark.real_model


def model_toml(model_id: str, options: str, n_ctx: int = 1024) -> str:
    """SmolLM2 as the other test modules configure it, with these options added."""
    return chat_model_toml(model_id).replace("n_ctx = 1024", f"n_ctx = {n_ctx}") + options + "\n"


# "batch": 8 slots, no prefix reuse, so that a request's text does not depend on what ran before it.
# "duo": the same with 2 slots, so that a third request queues.
# "pair": 2 slots sharing 1024 KV cells (kv_cache = "shared"), for the cases where room runs out.
# "cached": prefix reuse on (the default), 3 slots.
# "single": prefix reuse and the host-memory prompt cache on (the defaults), 1 slot.
CONFIG = (
    model_toml("batch", "slots = 8\nreuse_prefix = false", n_ctx=4096)
    + model_toml("duo", "slots = 2\nreuse_prefix = false")
    + model_toml("pair", "slots = 2\nkv_cache = \"shared\"\nreuse_prefix = false")
    + model_toml("cached", "slots = 3", n_ctx=2048)
    + model_toml("single", "slots = 1", n_ctx=2048)
)


@pytest.fixture(scope="module")
def server(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(CONFIG, env={"MODELYARD_WORKER_LOG": "INFO"})
    return server


def ask(client: openai.OpenAI, model: str, prompt: str, **sampling: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **sampling)


VARIED = [
    ("Name three fruits.", {"temperature": 0, "max_tokens": 40}),
    ("What is the capital of France?", {"temperature": 0, "max_tokens": 40, "logprobs": True, "top_logprobs": 2}),
    ("Write a haiku about rain.", {"temperature": 0, "max_tokens": 40, "stop": ["\n\n"]}),
    ("Count from one to ten.", {"temperature": 0, "max_tokens": 40, "frequency_penalty": 0.5}),
    ("Tell me a story about a cat.", {"temperature": 0.9, "seed": 11, "max_tokens": 40}),
    ("Describe the sea.", {"temperature": 0.7, "top_p": 0.9, "seed": 5, "max_tokens": 40}),
    ("Give me a recipe for soup.", {"temperature": 1.2, "seed": 3, "max_tokens": 40, "presence_penalty": 0.3}),
    ("Why is the sky blue?", {"temperature": 0.8, "seed": 99, "max_tokens": 40, "logit_bias": {"13": -100}}),
]


def answer_of(response: Any) -> tuple[str, str, int, list[float] | None]:
    choice = response.choices[0]
    logprobs = [t.logprob for t in choice.logprobs.content] if choice.logprobs and choice.logprobs.content else None
    return choice.message.content, choice.finish_reason, response.usage.completion_tokens, logprobs


def test_eight_requests_together_answer_as_each_does_alone(client: openai.OpenAI) -> None:
    alone = [answer_of(ask(client, "batch", prompt, **sampling)) for prompt, sampling in VARIED]
    with ThreadPoolExecutor(len(VARIED)) as pool:
        together = list(pool.map(lambda case: answer_of(ask(client, "batch", case[0], **case[1])), VARIED))
    for (prompt, _), one, batched in zip(VARIED, alone, together):
        assert batched[:3] == one[:3], prompt  # greedy text equal; seeded text reproduced; same finish and usage
        if one[3] is not None:
            assert batched[3] == pytest.approx(one[3], abs=1e-3)
    assert len({a[0] for a in alone}) == len(VARIED)  # different prompts, different answers


def test_a_tool_call_structured_output_and_plain_text_side_by_side(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }

    def tool_call() -> Any:
        return client.chat.completions.create(
            model="batch",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=tools,
            tool_choice="required",
            max_tokens=60,
            stream=True,
        )

    def structured() -> Any:
        return client.chat.completions.create(
            model="batch",
            messages=[{"role": "user", "content": "Invent a person."}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
            max_tokens=60,
            stream=True,
        )

    def plain() -> Any:
        return client.chat.completions.create(
            model="batch", messages=[{"role": "user", "content": "Say hello."}], max_tokens=30, stream=True
        )

    def collect(make: Any) -> tuple[str, dict[int, list[str]]]:
        content: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [name, arguments...]
        for chunk in make():
            for choice in chunk.choices:
                if choice.delta.content:
                    content.append(choice.delta.content)
                for call in choice.delta.tool_calls or []:
                    parts = calls.setdefault(call.index, [call.function.name or ""])
                    parts.append(call.function.arguments or "")
        return "".join(content), calls

    with ThreadPoolExecutor(3) as pool:
        (_, calls), (person, _), (hello, no_calls) = pool.map(collect, [tool_call, structured, plain])
    assert calls
    for name, *arguments in calls.values():
        assert name == "get_weather" and isinstance(json.loads("".join(arguments))["city"], str)
    parsed = json.loads(person)
    assert set(parsed) == {"name", "age"} and isinstance(parsed["age"], int)
    assert hello.strip() and not no_calls


def stream_lines(server: ServerProcess, body: dict[str, Any]) -> Iterator[str]:
    with (
        httpx.Client(timeout=300) as http,
        http.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200, response.read()
        yield from response.iter_lines()


def long_body(model: str, prompt: str, tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }


def timed_stream(server: ServerProcess, body: dict[str, Any], log: list[tuple[str, str]], name: str) -> str:
    """Stream `body`, noting ("first", name) and ("end", name) in `log` in the order they happen."""
    text = []
    for line in stream_lines(server, body):
        if line.startswith("data: {"):
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                if not text:
                    log.append(("first", name))
                text.append(delta)
    log.append(("end", name))
    return "".join(text)


def test_leaving_a_stream_frees_its_slot_for_the_next_request(server: ServerProcess) -> None:
    """'duo' runs two requests at once; a third waits. The first client
    leaves mid-way: the waiting request starts and ends while the second
    is still running, and the second's text is what it is alone."""
    second = long_body("duo", "Write a long story about a lighthouse.", 200)
    second_alone = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in stream_lines(server, second)
        if line.startswith("data: {")
    )
    order: list[tuple[str, str]] = []
    first_started = threading.Event()

    def leaving() -> None:
        for index, line in enumerate(stream_lines(server, long_body("duo", "Write a long story about a dragon.", 400))):
            if index == 5:
                first_started.set()
                break  # the client leaves mid-stream
        order.append(("left", "first"))

    with ThreadPoolExecutor(3) as pool:
        left = pool.submit(leaving)
        assert first_started.wait(120)
        running = pool.submit(timed_stream, server, second, order, "second")
        time.sleep(0.5)  # lets the second take the other slot before the third queues; the order below is what is checked
        third = pool.submit(timed_stream, server, long_body("duo", "Say hello.", 5), order, "third")
        left.result()
        assert third.result(timeout=300)
        assert running.result(timeout=300) == second_alone
    assert order.index(("end", "third")) < order.index(("end", "second"))


def test_a_prompt_that_does_not_fit_beside_the_running_one_waits(server: ServerProcess) -> None:
    """'pair' has 1024 KV cells for both slots: a 600-token prompt cannot be
    read in beside another one of 600 and waits until that one ends, then answers."""
    words = "apple " * 560  # about 590 tokens with the chat template
    big = long_body("pair", f"Repeat after me: {words}", 40)
    other = long_body("pair", f"Now say it again: {words}", 20)
    order: list[tuple[str, str]] = []
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(timed_stream, server, big, order, "big")
        while ("first", "big") not in order:
            if first.done():
                first.result()  # it failed: say why
            time.sleep(0.05)
        second = pool.submit(timed_stream, server, other, order, "other")
        assert first.result(timeout=300) and second.result(timeout=300)
    assert order.index(("end", "big")) < order.index(("first", "other"))


def test_two_requests_that_outgrow_the_cache_both_finish(server: ServerProcess) -> None:
    """Both fit when they start, but their answers together outgrow the 1024
    cells: the one admitted last is pushed out, read in again when there is
    room, and both end at their full length."""
    since = len(server.lines)
    # About 300 tokens each: both fit (600 of 1024 cells); with 300 tokens of answer each, they do not.
    bodies = [long_body("pair", "List these: " + "apple " * 280, 300), long_body("pair", "Sort these: " + "pear " * 280, 300)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda body: httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600), bodies))
    for response in results:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["completion_tokens"] == 300 and body["choices"][0]["finish_reason"] == "length"
    assert any("KV cache full" in line for line in server.lines[since:]), server.log()


def test_a_prompt_larger_than_the_whole_cache_is_refused(client: openai.OpenAI) -> None:
    words = " ".join(f"word{i}" for i in range(600))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "pair", words, max_tokens=5)
    message = caught.value.body["message"]  # type: ignore[index]
    assert re.search(r"the prompt takes \d+ tokens; this model's context holds 1024", message), message


def test_each_slot_keeps_its_own_prompt_cache(client: openai.OpenAI) -> None:
    """A follow-up finds its conversation's slot even after another
    conversation ran in between, and reports the cached tokens."""
    system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer in full sentences." for i in range(12))
    first = [{"role": "system", "content": system}, {"role": "user", "content": "List three fruits."}]
    turn1 = client.chat.completions.create(model="cached", messages=first, max_tokens=16, temperature=0)
    client.chat.completions.create(
        model="cached", messages=[{"role": "user", "content": "Something else entirely."}], max_tokens=8
    )
    second = [*first, {"role": "assistant", "content": turn1.choices[0].message.content}, {"role": "user", "content": "And vegetables?"}]
    turn2 = client.chat.completions.create(model="cached", messages=second, max_tokens=8, temperature=0)
    assert turn2.usage.prompt_tokens_details is not None
    cached = turn2.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and turn1.usage.prompt_tokens <= cached < turn2.usage.prompt_tokens


def test_a_conversation_whose_slot_was_taken_reads_its_prompt_back_from_memory(client: openai.OpenAI) -> None:
    """With one slot, another conversation in between takes the slot; the
    first conversation's cache was saved to host memory and is copied back
    for its next turn, which then evaluates only its new tail and answers as
    it would had it kept its slot."""
    system = "You are a patient tutor. " + " ".join(f"Step {i}: explain it simply." for i in range(15))
    first = [{"role": "system", "content": system}, {"role": "user", "content": "What is rain?"}]
    turn1 = client.chat.completions.create(model="single", messages=first, max_tokens=12, temperature=0)
    other = [{"role": "system", "content": "Reply briefly. " * 20}, {"role": "user", "content": "Name a bird."}]
    client.chat.completions.create(model="single", messages=other, max_tokens=12, temperature=0)
    second = [*first, {"role": "assistant", "content": turn1.choices[0].message.content}, {"role": "user", "content": "And snow?"}]
    turn2 = client.chat.completions.create(
        model="single", messages=second, max_tokens=12, temperature=0, logprobs=True
    )
    assert turn2.usage.prompt_tokens_details is not None
    cached = turn2.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and turn1.usage.prompt_tokens <= cached < turn2.usage.prompt_tokens, cached
    # The same two turns with nothing in between, on a model of the same
    # build whose slot still holds turn 1: a restored cache is that cache, bit for bit.
    kept1 = client.chat.completions.create(model="cached", messages=first, max_tokens=12, temperature=0)
    assert kept1.choices[0].message.content == turn1.choices[0].message.content
    kept2 = client.chat.completions.create(model="cached", messages=second, max_tokens=12, temperature=0, logprobs=True)
    assert kept2.usage.prompt_tokens_details is not None
    assert kept2.usage.prompt_tokens_details.cached_tokens == cached
    assert turn2.choices[0].message.content == kept2.choices[0].message.content
    restored = [t.logprob for t in turn2.choices[0].logprobs.content]  # type: ignore[union-attr]
    kept = [t.logprob for t in kept2.choices[0].logprobs.content]  # type: ignore[union-attr]
    assert max(abs(a - b) for a, b in zip(restored, kept)) < 1e-4


def test_a_new_conversation_copies_a_shared_system_prompt_from_another_slot(client: openai.OpenAI) -> None:
    """A second user with the same long system prompt goes to another slot
    (the first one's answer is too long to drop for it) and has the system
    prompt copied from the first one's slot instead of evaluating it."""
    system = "You answer questions about the weather. " + " ".join(f"Fact {i}: clouds are water." for i in range(14))
    first = [{"role": "system", "content": system}, {"role": "user", "content": "What is fog?"}]
    one = client.chat.completions.create(
        model="cached", messages=first, max_tokens=220, temperature=0, extra_body={"ignore_eos": True}
    )
    assert one.usage.completion_tokens == 220 > one.usage.prompt_tokens
    second = [{"role": "system", "content": system}, {"role": "user", "content": "What is hail?"}]
    two = client.chat.completions.create(model="cached", messages=second, max_tokens=12, temperature=0)
    assert two.usage.prompt_tokens_details is not None
    cached = two.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and two.usage.prompt_tokens - 15 <= cached < two.usage.prompt_tokens, cached
    fresh = client.chat.completions.create(model="duo", messages=second, max_tokens=12, temperature=0)
    assert not (fresh.usage.prompt_tokens_details and fresh.usage.prompt_tokens_details.cached_tokens)
    assert two.choices[0].message.content == fresh.choices[0].message.content


def test_n_choices_decode_together(client: openai.OpenAI) -> None:
    response = ask(client, "batch", "Name a colour.", n=3, temperature=0, max_tokens=12)
    texts = [c.message.content for c in response.choices]
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert texts[0] and texts.count(texts[0]) == 3  # greedy: every choice the same
    assert response.usage.completion_tokens == 3 * ask(client, "batch", "Name a colour.", temperature=0, max_tokens=12).usage.completion_tokens


def test_health_and_metrics_show_slots_and_cache(server: ServerProcess, client: openai.OpenAI) -> None:
    ask(client, "batch", "Say hi.", max_tokens=3)
    deadline = time.monotonic() + 30
    while True:  # the workers report at their next heartbeat (at most 5 s)
        engine = httpx.get(f"{server.base_url}/health", timeout=10).json()["models"]["batch"]["engine"]
        if engine and engine["prompt_tokens_evaluated"] > 0 and engine["slots_busy"] == 0:
            break  # a heartbeat after the request ended
        assert time.monotonic() < deadline, engine
        time.sleep(0.5)
    assert engine["slots"] == 8 and engine["kv_cells"] == 8 * 4096  # per slot: 4096 each
    assert engine["kv_cells_used"] > 0 and engine["engine_queued"] == 0
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert 'modelyard_slots{model="batch"} 8.0' in metrics
    assert re.search(r'modelyard_kv_cells_used\{model="batch"\} [1-9]', metrics)
    assert 'modelyard_prompt_tokens_cached_total{model="cached"}' in metrics
    assert 'modelyard_prompt_cache_bytes{model="single"}' in metrics
