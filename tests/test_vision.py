"""Images on the llama-cpp backend: the real SmolLM2 with a tiny random
multimodal projector (adapters/tiny_vlm.py) through llama.cpp's libmtmd,
in-process (the engine's batching and prompt cache), in a real worker
process (the image crosses the worker protocol), and behind the HTTP
server with the OpenAI and Anthropic SDKs (an image's tokens in usage, its
cache, /v1/models; a missing projector fails its model's load alone)."""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from modelyard.adapters import tiny_vlm
from modelyard.adapters.base import (
    ChatRequest,
    Finished,
    ImageInput,
    InvalidRequestError,
    ModelLoadError,
    PromptTokens,
    Sampling,
    TextDelta,
)
from modelyard.adapters.containment import RequestCancelled
from modelyard.adapters.llama_cpp import LlamaCppChat, LlamaCppOptions
from modelyard.schemas import worker as proto

from tests.conftest import SMOLLM2_SOURCE, TEST_LLAMA_OPTIONS, ServerProcess, chat_model_toml, smollm2_path

pytestmark = pytest.mark.real_model

THREADS = {"n_threads": 1, "n_threads_batch": 1}


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> ImageInput:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), *size)


RED = png((220, 30, 30))
BLUE = png((30, 30, 220))
QUESTION = "What is in this picture? Describe it."


def ask(*images: ImageInput, text: str = QUESTION, max_tokens: int = 12, seed: int | None = None) -> ChatRequest:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image", "image": image} for image in images]
    return ChatRequest([{"role": "user", "content": parts}], Sampling(max_tokens=max_tokens, temperature=0, seed=seed))


def run(adapter: LlamaCppChat, request: ChatRequest) -> tuple[PromptTokens, str, Finished]:
    events = list(adapter.chat(request, threading.Event()))
    first, last = events[0], events[-1]
    assert isinstance(first, PromptTokens) and isinstance(last, Finished)
    return first, "".join(e.text for e in events if isinstance(e, TextDelta)), last


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vlm.write_tiny_mmproj(tmp_path_factory.mktemp("vlm") / tiny_vlm.MODEL_NAME)


@pytest.fixture(scope="module")
def adapter(mmproj: Path) -> Iterator[LlamaCppChat]:
    chat = LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=512, slots=2, mmproj=str(mmproj), **THREADS))
    yield chat
    chat.close()


def test_takes_images_only_with_a_projector(adapter: LlamaCppChat) -> None:
    assert adapter.takes_images()
    plain = LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=256, slots=1, **THREADS))
    try:
        assert not plain.takes_images()
        with pytest.raises(InvalidRequestError, match="takes no images"):
            list(plain.chat(ask(RED), threading.Event()))
    finally:
        plain.close()


def test_an_image_takes_its_embeddings_in_the_prompt(adapter: LlamaCppChat) -> None:
    text_only = adapter.count_tokens(ask(), threading.Event())
    tokens, _, images = adapter._chat_input(ask(RED))
    assert images is not None
    try:
        assert [span.count for span in images.spans] == [tiny_vlm.IMAGE_TOKENS]
        assert sum(1 for t in tokens if t < 0) == tiny_vlm.IMAGE_TOKENS
    finally:
        images.close()
    # The image's embeddings plus the projector's own text around them (<start_of_image> ...).
    assert len(tokens) > text_only + tiny_vlm.IMAGE_TOKENS
    assert adapter.count_tokens(ask(RED), threading.Event()) == len(tokens)
    size, text, finished = run(adapter, ask(RED, seed=1))
    assert size.count == finished.prompt_tokens == len(tokens)
    assert finished.completion_tokens > 0 and text
    two = adapter.count_tokens(ask(RED, BLUE), threading.Event())
    assert two == len(tokens) + (len(tokens) - text_only)  # each image adds the same


def test_two_images_in_concurrent_sequences(adapter: LlamaCppChat) -> None:
    # Seeded: each is evaluated in full (no cache reuse), so per-slot KV
    # makes the batched answers the very ones each gets alone.
    alone = {name: run(adapter, ask(image, seed=3, max_tokens=16))[1] for name, image in (("red", RED), ("blue", BLUE))}
    assert alone["red"] != alone["blue"]  # the image changes the answer: it reached the model
    results: dict[str, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(name: str, image: ImageInput) -> None:
        try:
            start.wait()
            results[name] = run(adapter, ask(image, seed=3, max_tokens=16))[1]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=item) for item in (("red", RED), ("blue", BLUE))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert results == alone


def test_images_in_a_shared_kv_pool(mmproj: Path) -> None:
    # One pool for both slots: the images' cells are found room for like any prompt's.
    options = LlamaCppOptions(n_ctx=512, slots=2, kv_cache="shared", mmproj=str(mmproj), **THREADS)
    chat = LlamaCppChat(smollm2_path(), options)
    try:
        answers: dict[str, Finished] = {}

        def worker(name: str, image: ImageInput) -> None:
            answers[name] = run(chat, ask(image, max_tokens=8))[2]

        threads = [threading.Thread(target=worker, args=item) for item in (("red", RED), ("blue", BLUE))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(answers) == ["blue", "red"]
        assert all(f.completion_tokens > 0 and f.prompt_tokens > tiny_vlm.IMAGE_TOKENS for f in answers.values())
        assert chat.stats()["kv_cells_used"] <= chat.stats()["kv_cells"]
    finally:
        chat.close()


def test_a_request_pushed_out_of_a_full_pool_reads_its_image_again(mmproj: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 256 cells for two requests of 62 prompt tokens that each write 80 more: one is pushed out and read in again.
    options = LlamaCppOptions(n_ctx=170, slots=2, kv_cache="shared", mmproj=str(mmproj), **THREADS)
    chat = LlamaCppChat(smollm2_path(), options)
    no_eos = Sampling(max_tokens=80, temperature=0, logit_bias={2: -100})  # SmolLM2's <|im_end|> banned
    try:
        answers: dict[str, Finished] = {}

        def worker(name: str, image: ImageInput) -> None:
            request = ask(image)
            request.sampling = no_eos
            answers[name] = run(chat, request)[2]

        with caplog.at_level(logging.INFO, logger="modelyard.worker.llama_engine"):
            threads = [threading.Thread(target=worker, args=item) for item in (("red", RED), ("blue", BLUE))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        assert any("waits to be read in again" in record.getMessage() for record in caplog.records)
        assert sorted(answers) == ["blue", "red"] and all(f.completion_tokens == 80 for f in answers.values())
    finally:
        chat.close()


def test_a_cancelled_image_prompt_stops_and_the_engine_goes_on(adapter: LlamaCppChat) -> None:
    cancelled = threading.Event()
    stream = adapter.chat(ask(BLUE, png((1, 2, 3)), max_tokens=50), cancelled)
    assert isinstance(next(stream), PromptTokens)
    cancelled.set()  # while its two images are read in, long before its first token
    try:
        rest = list(stream)
    except RequestCancelled:
        pass  # stopped during the prompt, as expected
    else:  # the prompt was read before the engine saw the cancel: it stops within a token
        assert isinstance(rest[-1], Finished) and rest[-1].completion_tokens <= 1
    assert run(adapter, ask(RED))[2].completion_tokens > 0


def test_the_prompt_cache_reuses_an_image_only_for_the_same_image(adapter: LlamaCppChat) -> None:
    text = "Which colours are here?"  # a prompt no other test left in a slot
    _, _, images = adapter._chat_input(ask(RED, text=text))
    assert images is not None
    start, end = images.spans[0].start, images.spans[0].start + images.spans[0].count
    images.close()
    first, _, _ = run(adapter, ask(RED, text=text))
    assert first.cached <= start
    same, _, _ = run(adapter, ask(RED, text=text))
    assert same.cached >= end  # the image's cells were reused
    other, _, _ = run(adapter, ask(BLUE, text=text))
    assert 0 < other.cached <= start  # the text before the image only
    again, _, _ = run(adapter, ask(RED, text=text))
    assert again.cached >= end  # the red image's slot kept it


def test_saved_prompts_are_not_restored_past_a_different_image(mmproj: Path) -> None:
    # One slot: each new request takes the slot, and what it held goes to host memory.
    chat = LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=512, slots=1, mmproj=str(mmproj), **THREADS))
    try:
        long_text = QUESTION + " Be precise about the colours, the shapes and the light."
        _, _, images = chat._chat_input(ask(RED, text=long_text))
        assert images is not None
        start, end = images.spans[0].start, images.spans[0].start + images.spans[0].count
        images.close()
        run(chat, ask(RED, text=long_text))
        run(chat, ChatRequest([{"role": "user", "content": "Tell me about lighthouses, " * 8}], Sampling(max_tokens=2)))
        assert chat.stats()["prompt_cache_entries"] >= 1
        blue, _, _ = run(chat, ask(BLUE, text=long_text))
        assert 0 < blue.cached <= start  # red's saved prompt, read back up to its image only
        red, _, _ = run(chat, ask(RED, text=long_text))
        assert red.cached >= end  # the slot held blue: red read back from host memory, image and all
    finally:
        chat.close()


def test_an_undecodable_image_is_a_bad_request(adapter: LlamaCppChat) -> None:
    broken = ImageInput(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 4, 4)
    with pytest.raises(InvalidRequestError, match="image 2 of the request could not be decoded"):
        list(adapter.chat(ask(RED, broken), threading.Event()))
    assert run(adapter, ask(RED))[2].completion_tokens > 0  # the engine goes on


def test_an_image_over_n_batch_is_refused_for_a_projector_that_attends_both_ways(mmproj: Path) -> None:
    # Gemma 3's projector (the tiny one's type) attends over an image's embeddings both ways, in one batch.
    chat = LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=256, n_batch=8, slots=1, mmproj=str(mmproj), **THREADS))
    try:
        with pytest.raises(InvalidRequestError, match=r"more than this model's n_batch \(8\)"):
            list(chat.chat(ask(RED), threading.Event()))
        assert run(chat, ask())[2].completion_tokens > 0  # text alone still goes
    finally:
        chat.close()


def test_image_parts_beside_text_parts_and_other_messages(adapter: LlamaCppChat) -> None:
    request = ChatRequest(
        [
            {"role": "system", "content": "You describe pictures."},
            {"role": "user", "content": [{"type": "image", "image": RED}, {"type": "text", "text": "And this one?"}]},
            {"role": "assistant", "content": "A red square."},
            {"role": "user", "content": [{"type": "text", "text": "Compare:"}, {"type": "image", "image": BLUE}]},
        ],
        Sampling(max_tokens=6, temperature=0),
    )
    tokens, _, images = adapter._chat_input(request)
    assert images is not None and len(images.spans) == 2
    images.close()
    # A tool's result may be an image (Anthropic's tool_result blocks): it goes inside the tool response.
    call = {"id": "c1", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}
    with_tool = ChatRequest(
        [
            {"role": "user", "content": "Take a screenshot."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "image", "image": BLUE}]},
        ],
        Sampling(max_tokens=4, temperature=0),
    )
    tokens, _, images = adapter._chat_input(with_tool)
    assert images is not None and len(images.spans) == 1
    before = adapter._text([t for t in tokens[: images.spans[0].start] if t >= 0])
    images.close()
    assert before.rstrip().endswith("<start_of_image>") and "<tool_response>" in before
    assert run(adapter, with_tool)[2].completion_tokens > 0
    # A user may write libmtmd's default marker: it stays text, it is no image.
    tricky = ask(RED, text="What does <__media__> mean?")
    tokens, _, images = adapter._chat_input(tricky)
    assert images is not None and len(images.spans) == 1
    images.close()
    assert run(adapter, request)[2].completion_tokens > 0


# A template that reads content only as typed parts, as SmolVLM's does: a string content renders as nothing.
TYPED_ONLY_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_of_typed_content_gets_text_and_images(mmproj: Path) -> None:
    options = LlamaCppOptions(n_ctx=256, slots=1, mmproj=str(mmproj), chat_template=TYPED_ONLY_TEMPLATE, **THREADS)
    chat = LlamaCppChat(smollm2_path(), options)
    try:
        assert chat._typed_content
        tokens, _ = chat._chat_prompt(ChatRequest([{"role": "user", "content": "Name a colour."}]))
        assert "Name a colour." in chat._text(tokens)
        tokens, _, images = chat._chat_input(ask(RED, text="Name its colour."))
        assert images is not None and [span.start for span in images.spans] == [next(i for i, t in enumerate(tokens) if t < 0)]
        images.close()
        assert "Name its colour." in chat._text([t for t in tokens if t >= 0])
        assert run(chat, ask(RED, max_tokens=3))[2].completion_tokens == 3
    finally:
        chat.close()
    plain = LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=256, slots=1, **THREADS))
    try:
        assert not plain._typed_content  # SmolLM2's own template reads strings
    finally:
        plain.close()


def test_missing_or_mismatched_projector_fails_the_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"options\.mmproj: .*nowhere\.gguf.* does not exist"):
        LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=256, slots=1, mmproj=str(tmp_path / "nowhere.gguf"), **THREADS))
    wrong = tiny_vlm.write_tiny_mmproj(tmp_path / "wrong.gguf", text_embd=64)  # not SmolLM2's 576
    with pytest.raises(ModelLoadError, match="could not load the multimodal projector"):
        LlamaCppChat(smollm2_path(), LlamaCppOptions(n_ctx=256, slots=1, mmproj=str(wrong), **THREADS))


def test_a_relative_projector_path_is_beside_the_model(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").symlink_to(smollm2_path())
    tiny_vlm.write_tiny_mmproj(tmp_path / "mmproj.gguf")
    chat = LlamaCppChat(tmp_path / "model.gguf", LlamaCppOptions(n_ctx=256, slots=1, mmproj="mmproj.gguf", **THREADS))
    try:
        assert chat.takes_images()
    finally:
        chat.close()


def test_a_worker_process_serves_images(tmp_path: Path) -> None:
    """The real worker process: the projector assembled into the cache
    folder, Ready reporting images, an image crossing the worker protocol."""
    parent, child = socket.socketpair()
    env = {**os.environ, "MODELYARD_CACHE": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "modelyard.adapters.worker", str(child.fileno())], pass_fds=[child.fileno()], env=env
    )
    child.close()
    try:
        parent.settimeout(120)

        def send(message: object) -> None:
            parent.sendall(proto.encode(message))

        def receive() -> Any:
            header = parent.recv(proto.HEADER.size, socket.MSG_WAITALL)
            return proto.decode(parent.recv(proto.HEADER.unpack(header)[0], socket.MSG_WAITALL))

        options = {"n_ctx": 512, "slots": 1, "mmproj": "assemble:modelyard.adapters.tiny_vlm", **THREADS}
        send(proto.Load("vlm", "llama-cpp", "chat", SMOLLM2_SOURCE, str(smollm2_path()), options))
        ready = receive()
        assert isinstance(ready, proto.Ready), ready
        assert ready.info["images"] is True
        assert (tmp_path / "modelyard.adapters.tiny_vlm" / tiny_vlm.MODEL_NAME).is_file()
        send(proto.Call(1, "chat", ask(RED, max_tokens=4)))
        items = []
        while not isinstance(message := receive(), proto.Done | proto.Failed):
            items.append(message.payload)
        assert isinstance(message, proto.Done), message
        assert isinstance(items[0], PromptTokens) and items[0].count > tiny_vlm.IMAGE_TOKENS
        assert isinstance(items[-1], Finished) and items[-1].completion_tokens == 4
        send(proto.Shutdown())
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        parent.close()


@pytest.fixture(scope="module")
def server(server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    cache = tmp_path_factory.mktemp("cache")
    vision = (
        f'[[models]]\nid = "vision"\nmodality = "chat"\nbackend = "llama-cpp"\nsource = "{SMOLLM2_SOURCE}"\n'
        f'[models.options]\n{TEST_LLAMA_OPTIONS}mmproj = "assemble:modelyard.adapters.tiny_vlm"\n\n'
    )
    missing = (
        f'[[models]]\nid = "no-projector"\nmodality = "chat"\nbackend = "llama-cpp"\nsource = "{SMOLLM2_SOURCE}"\n'
        f'[models.options]\n{TEST_LLAMA_OPTIONS}mmproj = "missing-mmproj.gguf"\n\n'
    )
    server: ServerProcess = server_factory(chat_model_toml("bystander") + vision + missing, env={"MODELYARD_CACHE": str(cache)})
    return server


def test_a_server_loads_a_model_with_its_projector(server: ServerProcess, client: openai.OpenAI) -> None:
    health = server.health()["models"]
    assert health["vision"]["status"] == "loaded"
    answer = client.chat.completions.create(model="vision", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert health["no-projector"]["status"] == "failed"
    assert "missing-mmproj.gguf" in health["no-projector"]["error"] and "does not exist" in health["no-projector"]["error"]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="no-projector", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_load_failed"
    assert client.chat.completions.create(model="bystander", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)


def png_bytes(color: tuple[int, int, int]) -> bytes:
    return png(color, (48, 32)).png


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def ask_http(client: openai.OpenAI, *images: bytes, model: str = "vision") -> Any:
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is in this picture?"}]
    content += [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in images]
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=6, temperature=0  # type: ignore[list-item]
    )


def test_chat_completions_count_an_image_in_usage(client: openai.OpenAI) -> None:
    red, blue = png_bytes((220, 30, 30)), png_bytes((30, 30, 220))
    text_only, one, two = ask_http(client), ask_http(client, red), ask_http(client, red, blue)
    assert text_only.usage and one.usage and two.usage
    added = one.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert added > tiny_vlm.IMAGE_TOKENS
    assert two.usage.prompt_tokens == one.usage.prompt_tokens + added
    assert one.choices[0].message.content


def test_chat_completions_cache_an_image_only_for_itself(client: openai.OpenAI) -> None:
    first = ask_http(client, png_bytes((30, 220, 30)))
    again = ask_http(client, png_bytes((30, 220, 30)))
    other = ask_http(client, png_bytes((220, 220, 30)))  # sent for the first time
    assert first.usage and again.usage and other.usage
    assert again.usage.prompt_tokens_details and other.usage.prompt_tokens_details
    assert (again.usage.prompt_tokens_details.cached_tokens or 0) > first.usage.prompt_tokens - tiny_vlm.IMAGE_TOKENS
    assert (other.usage.prompt_tokens_details.cached_tokens or 0) < other.usage.prompt_tokens - tiny_vlm.IMAGE_TOKENS


def test_models_name_vision_and_a_text_model_refuses_images(server: ServerProcess, client: openai.OpenAI) -> None:
    cards = {card["id"]: card for card in httpx.get(f"{server.base_url}/v1/models").json()["data"]}
    assert cards["vision"]["capabilities"] == ["chat", "vision"]
    assert cards["bystander"]["capabilities"] == ["chat"]
    with pytest.raises(openai.BadRequestError):
        ask_http(client, png_bytes((220, 30, 30)), model="bystander")


def test_messages_image_block_and_count_tokens(server: ServerProcess) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png_bytes((220, 30, 30))).decode()}
    messages: Any = [{"role": "user", "content": [{"type": "image", "source": image}, {"type": "text", "text": "Describe it."}]}]
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=60) as claude:
        message = claude.messages.create(model="vision", max_tokens=5, messages=messages)
        counted = claude.messages.count_tokens(model="vision", messages=messages).input_tokens
    assert message.usage.output_tokens > 0
    # Anthropic's input_tokens leaves out what was read from the cache.
    assert counted == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > tiny_vlm.IMAGE_TOKENS


def test_responses_input_image_by_data_url_and_file_id(client: openai.OpenAI) -> None:
    image = png_bytes((120, 40, 200))

    def ask(part: dict[str, Any]) -> Any:
        content = [{"type": "input_text", "text": "What is in this picture?"}, part]
        return client.responses.create(
            model="vision", input=[{"role": "user", "content": content}], max_output_tokens=6, temperature=0, store=False  # type: ignore[list-item, misc]
        )

    text_only = client.responses.create(
        model="vision", input=[{"role": "user", "content": [{"type": "input_text", "text": "What is in this picture?"}]}],
        max_output_tokens=6, temperature=0, store=False,
    )
    by_url = ask({"type": "input_image", "image_url": data_url(image), "detail": "auto"})
    stored = client.files.create(file=("picture.png", image, "image/png"), purpose="vision")
    by_file = ask({"type": "input_image", "file_id": stored.id, "detail": "low"})
    assert text_only.usage and by_url.usage and by_file.usage
    assert by_url.usage.input_tokens - text_only.usage.input_tokens > tiny_vlm.IMAGE_TOKENS
    assert by_file.usage.input_tokens == by_url.usage.input_tokens  # the same bytes, from the file store
    assert by_url.output_text
