"""The llama-cpp adapter in-process, on the real SmolLM2: the parts of the
decode loop the HTTP tests cannot steer (a grammar switched on mid-way)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from modelyard.adapters.base import ChatRequest, Finished, PromptTokens, Sampling, TextDelta, ToolCalling
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
    free = text_of(list(adapter._generate(prompt, request.sampling, stop, Phase(None), "", threading.Event())))
    # Use the start of the greedy answer as the trigger: from there on, only a tool call may follow.
    trigger = free.split()[0]
    phase = Phase(grammar=None, trigger=trigger, then=tool_call_grammar(TOOLS))
    sampling = Sampling(max_tokens=80, temperature=0)
    events = list(adapter._generate(prompt, sampling, stop, phase, "", threading.Event()))
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
    next(stream)
    cancelled.set()
    rest = list(stream)
    finished = rest[-1]
    assert isinstance(finished, Finished) and finished.completion_tokens <= 3
