"""The ctransformers backend through a real server: a tiny random-weight
GPT-2 in the legacy GGML format (written by tests/ggml_gpt2.py), next to a
llama-cpp SmolLM2, and ctransformers models that cannot load (one fails,
one crashes its worker with SIGSEGV) without harming the rest.

The GPT-2's vocabulary is byte-level, so a prompt takes one token per
byte and the (ASCII) text it writes one byte per token: usage is checked
exactly."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from modelyard.adapters.base import ChatRequest, CompletionRequest, Finished, InvalidRequestError, PromptTokens, Sampling, TextDelta
from modelyard.adapters.ctransformers import CTransformersChat, CTransformersOptions
from modelyard.router.config import ConfigError, load_config

from tests.conftest import SMOLLM2_SOURCE, ServerProcess, chat_model_toml, openai_validator, sse_events
from tests.ggml_gpt2 import GGML_MAGIC, write_tiny_gpt2

pytestmark = pytest.mark.real_model

N_CTX = 1024
HELLO = [{"role": "user", "content": "Say hi."}]
# A plain template, unlike the default ChatML one, to show the option works.
TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def rendered(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def write_segfaulting_gpt2(path: Path) -> Path:
    """A GGML GPT-2 that crashes ctransformers with SIGSEGV while loading.

    With n_vocab·n_embd = 2^32 + 2^16 the loader's (int) size arithmetic
    wraps around: it allocates a few MB, ggml then cannot fit `model/wte`
    and returns NULL, and reading that tensor's data dereferences it."""
    n_vocab, n_embd = 2**16 + 1, 2**16
    with path.open("wb") as out:
        out.write(struct.pack("<I6i", GGML_MAGIC, n_vocab, 1, n_embd, 1, 1, 0))
        out.write(struct.pack("<i", n_vocab))
        for token in range(n_vocab):
            out.write(struct.pack("<2I", 4, token))
        name = b"model/ln_f/g"
        out.write(struct.pack("<4i", 1, len(name), 0, n_embd) + name + bytes(4 * n_embd))
        name = b"model/wte"
        out.write(struct.pack("<5i", 2, len(name), 0, n_embd, n_vocab) + name + bytes(64))
    return path


@pytest.fixture(scope="module")
def server(server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    models = tmp_path_factory.mktemp("ggml")
    gpt2 = write_tiny_gpt2(models / "tiny-gpt2.bin", n_ctx=N_CTX)
    crasher = write_segfaulting_gpt2(models / "crasher.bin")
    config = (
        f'[[models]]\nid = "gpt2-tiny"\nmodality = "chat"\nbackend = "ctransformers"\nsource = "{gpt2}"\n'
        f"[models.options]\nmodel_type = \"gpt2\"\nthreads = 1\nprompt_template = '''{TEMPLATE}'''\n"
        'stop = ["\\nuser:"]\n\n'
        f'[[models]]\nid = "crasher"\nmodality = "chat"\nbackend = "ctransformers"\nsource = "{crasher}"\n'
        'load = "lazy"\n[models.options]\nmodel_type = "gpt2"\nthreads = 1\n\n'
        f'[[models]]\nid = "misfit"\nmodality = "chat"\nbackend = "ctransformers"\nsource = "{SMOLLM2_SOURCE}"\n'
        'load = "lazy"\n[models.options]\nmodel_type = "llama"\nthreads = 1\n\n'
        + chat_model_toml("smol")
    )
    started: ServerProcess = server_factory(config)
    return started


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as opened:
        yield opened


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt2-tiny", **{"messages": HELLO, **kwargs})


def test_chat_answers_with_exact_usage(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.health()["models"]["gpt2-tiny"]["status"] == "loaded"
    raw = client.chat.completions.with_raw_response.create(model="gpt2-tiny", messages=HELLO, max_tokens=16, seed=1)
    openai_validator("CreateChatCompletionResponse").validate(json.loads(raw.text))
    completion = raw.parse()
    choice = completion.choices[0]
    assert completion.model == "gpt2-tiny"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 16
    assert len(choice.message.content.encode()) == 16  # one byte per token
    assert completion.usage.prompt_tokens == len(rendered(HELLO).encode())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 16


def test_generation_stops_at_the_end_of_the_context(client: openai.OpenAI) -> None:
    completion = chat(client, seed=2)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens + completion.usage.completion_tokens == N_CTX


def test_prompt_longer_than_the_context_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, messages=[{"role": "user", "content": "word " * 300}], max_tokens=4)
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "messages"
    assert "context holds 1024" in body["message"]


def test_streaming_chat_is_framed_and_matches(server: ServerProcess, client: openai.OpenAI) -> None:
    expected = chat(client, max_tokens=24, seed=5)
    request = {
        "model": "gpt2-tiny",
        "messages": HELLO,
        "max_tokens": 24,
        "seed": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    validator = openai_validator("CreateChatCompletionStreamResponse")
    for chunk in chunks:
        validator.validate(chunk)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == expected.choices[0].message.content
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 24


def test_same_seed_same_text(client: openai.OpenAI) -> None:
    first = chat(client, max_tokens=32, seed=7, temperature=1.0)
    second = chat(client, max_tokens=32, seed=7, temperature=1.0)
    other = chat(client, max_tokens=32, seed=8, temperature=1.0)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_temperature_zero_is_greedy(client: openai.OpenAI) -> None:
    texts = {chat(client, max_tokens=16, temperature=0, seed=seed).choices[0].message.content for seed in (1, 2, 3)}
    assert len(texts) == 1


def test_stop_string_ends_the_answer(server: ServerProcess, client: openai.OpenAI) -> None:
    free = chat(client, max_tokens=40, seed=3).choices[0].message.content
    assert free is not None and len(free) == 40
    stop = free[10:12]
    cut = free.index(stop)
    completion = chat(client, max_tokens=40, seed=3, stop=[stop, "never seen"])
    assert completion.choices[0].message.content == free[:cut]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == cut + len(stop)
    # Streamed, the start of the stop string is held back and never sent.
    request = {"model": "gpt2-tiny", "messages": HELLO, "max_tokens": 40, "seed": 3, "stop": stop, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == free[:cut]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_tool_definitions_are_rendered_into_the_prompt(client: openai.OpenAI) -> None:
    plain = chat(client, max_tokens=4, seed=1)
    with_tools = chat(client, max_tokens=4, seed=1, tools=TOOLS, tool_choice="auto")
    assert plain.usage is not None and with_tools.usage is not None
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 200
    assert with_tools.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
    ],
    ids=["required-tool", "named-tool", "json", "logprobs"],
)
def test_what_ctransformers_cannot_do_is_a_400(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, max_tokens=4, **extra)
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param
    assert "ctransformers" in body["message"]


def test_model_that_crashes_its_worker_fails_alone(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="crasher", messages=HELLO, max_tokens=2)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_load_failed"
    assert "worker process was killed by SIGSEGV while loading" in body["message"]
    assert "Traceback" not in body["message"]
    assert server.health()["models"]["crasher"]["status"] == "failed"
    assert server.proc is not None and server.proc.poll() is None
    assert chat(client, max_tokens=2).model == "gpt2-tiny"
    assert client.chat.completions.create(model="smol", messages=HELLO, max_tokens=2).model == "smol"


def test_model_ctransformers_cannot_read_fails_clearly(server: ServerProcess, client: openai.OpenAI) -> None:
    # A modern GGUF (SmolLM2) is beyond ctransformers' 2023 llama.cpp.
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="misfit", messages=HELLO, max_tokens=2)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_load_failed"
    assert "ctransformers could not load" in body["message"] and "SmolLM2" in body["message"]
    assert "Traceback" not in body["message"]
    assert server.proc is not None and server.proc.poll() is None
    assert chat(client, max_tokens=2).model == "gpt2-tiny"
    assert client.chat.completions.create(model="smol", messages=HELLO, max_tokens=2).model == "smol"


def completions_endpoint(server: ServerProcess) -> None:
    probe = httpx.post(f"{server.base_url}/v1/completions", json={"model": "gpt2-tiny", "prompt": "a", "max_tokens": 1})
    assert probe.status_code == 200, f"/v1/completions must serve ctransformers: {probe.status_code} {probe.text[:500]}"


def test_completion_of_a_raw_prompt(server: ServerProcess, client: openai.OpenAI) -> None:
    completions_endpoint(server)
    prompt = "Once upon a time"
    completion = client.completions.create(model="gpt2-tiny", prompt=prompt, max_tokens=12, seed=4)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(prompt) and completion.usage.completion_tokens == 12
    text = completion.choices[0].text
    echoed = client.completions.create(model="gpt2-tiny", prompt=prompt, max_tokens=12, seed=4, echo=True)
    assert echoed.choices[0].text == prompt + text
    tokens = client.completions.create(model="gpt2-tiny", prompt=list(prompt.encode()), max_tokens=12, seed=4)
    assert tokens.choices[0].text == text

    request = {"model": "gpt2-tiny", "prompt": prompt, "max_tokens": 12, "seed": 4, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=request, timeout=60) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="gpt2-tiny", prompt=prompt, suffix="The end.", max_tokens=4)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "suffix"


def test_prompt_template_syntax_is_checked_with_the_config(tmp_path: Path) -> None:
    model = write_tiny_gpt2(tmp_path / "m.bin")
    text = (
        f'[[models]]\nid = "m"\nmodality = "chat"\nbackend = "ctransformers"\nsource = "{model}"\n'
        "[models.options]\nmodel_type = \"gpt2\"\nprompt_template = '{% for m in messages %}'\n"
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"prompt_template: .*not a valid Jinja template"):
        load_config(path)
    assert CTransformersOptions(model_type="gpt2").stop == ["<|im_end|>"]


# --- the adapter in process: what HTTP cannot show on a model this fast ------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CTransformersChat]:
    path = write_tiny_gpt2(tmp_path_factory.mktemp("inproc") / "tiny.bin", n_ctx=N_CTX)
    loaded = CTransformersChat(path, CTransformersOptions(model_type="gpt2", threads=1, prompt_template=TEMPLATE))
    yield loaded
    loaded.close()


def run(events: Iterator[Any]) -> tuple[str, Finished]:
    items = [e for e in events if not isinstance(e, PromptTokens)]
    assert isinstance(items[-1], Finished) and all(isinstance(e, TextDelta) for e in items[:-1])
    return "".join(e.text for e in items[:-1]), items[-1]


def test_cancellation_stops_after_the_current_token(adapter: CTransformersChat) -> None:
    cancelled = threading.Event()
    events = adapter.chat(ChatRequest(HELLO, Sampling(max_tokens=500, seed=1)), cancelled)
    assert isinstance(next(events), PromptTokens)  # the prompt's size comes first
    first = next(events)
    assert isinstance(first, TextDelta)
    cancelled.set()
    _, finished = run(events)
    assert finished.completion_tokens == 1


def test_non_ascii_prompts_are_tokenized_whole(adapter: CTransformersChat) -> None:
    # One token per byte: more tokens than characters (ctransformers' own
    # tokenize() would overrun its buffer here).
    messages = [{"role": "user", "content": "héllo wörld, 日本語 " * 8}]
    request = ChatRequest(messages, Sampling(max_tokens=3, seed=1))
    _, finished = run(adapter.chat(request, threading.Event()))
    assert finished.prompt_tokens == len(rendered(messages).encode())
    assert adapter.count_tokens(request, threading.Event()) == finished.prompt_tokens


def test_finished_names_the_request_stop_string(adapter: CTransformersChat) -> None:
    free, _ = run(adapter.chat(ChatRequest(HELLO, Sampling(max_tokens=30, seed=9)), threading.Event()))
    stop = free[12:14]
    request = ChatRequest(HELLO, Sampling(max_tokens=30, seed=9, stop=[stop]))
    text, finished = run(adapter.chat(request, threading.Event()))
    assert text == free[: free.index(stop)]
    assert finished.finish_reason == "stop" and finished.stop_sequence == stop


def test_completion_from_token_ids_checks_the_vocabulary(adapter: CTransformersChat) -> None:
    with pytest.raises(InvalidRequestError, match="outside this model's vocabulary") as info:
        run(adapter.complete(CompletionRequest([72, 100000], Sampling(max_tokens=2)), threading.Event()))
    assert info.value.param == "prompt"


def test_logit_bias_and_min_p_reach_the_sampler(client: openai.OpenAI) -> None:
    forced = chat(client, max_tokens=6, seed=1, logit_bias={str(ord("Z")): 100})
    assert forced.choices[0].message.content == "ZZZZZZ"
    greedy = chat(client, max_tokens=8, temperature=0).choices[0].message.content
    # min_p 1 keeps only the most likely token: sampling at any seed is greedy.
    assert chat(client, max_tokens=8, seed=11, extra_body={"min_p": 1.0}).choices[0].message.content == greedy


def test_ignore_eos_excludes_the_end_of_sequence_token(adapter: CTransformersChat) -> None:
    eos = adapter.llm.eos_token_id
    pushed = {eos: 100.0}  # the model would end at once
    _, ended = run(adapter.chat(ChatRequest(HELLO, Sampling(max_tokens=5, seed=1, logit_bias=pushed)), threading.Event()))
    assert ended.finish_reason == "stop" and ended.completion_tokens == 0
    request = ChatRequest(HELLO, Sampling(max_tokens=5, seed=1, logit_bias=pushed, ignore_eos=True))
    _, kept = run(adapter.chat(request, threading.Event()))
    assert kept.finish_reason == "length" and kept.completion_tokens == 5
