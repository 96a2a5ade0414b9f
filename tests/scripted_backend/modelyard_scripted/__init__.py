"""A scripted fake backend: deterministic, no model, millisecond start.

What a chat or completion answers is a script of events, taken from the
request when its last message (or prompt) is `script: <JSON list>`, else
from `[models.options] script` (or `after_tool_result`, once the conversation
holds a tool result: an agent's next turn; unless the newest message is a user
message with its own script), else a short default reply. Events:

- "text" (a string): one text piece (one "token");
- {"reasoning": "..."}: thinking inside the model's <think> tags;
- {"tool_call": {"name": ..., "arguments": {...}}}: a Hermes <tool_call>;
- {"stop": "stop" | "length"}: finish now with that reason;
- {"sleep": seconds}: wait (checking for cancellation);
- {"evaluate": seconds, "cached": n}: accept the prompt (PromptTokens, with n
  cached tokens), then take that long to "evaluate" it, as a long prompt does.
  Without it the prompt is accepted just before the first piece or finish, so
  an error or a sleep at the start of a script comes before the acceptance;
- {"crash": true}: the worker process dies (os._exit);
- {"error": "message"} / {"invalid": "message"}: a backend / invalid-request error.

`token_delay` waits between pieces (disconnects, timeouts, admission);
`load_delay` and `fail_load` shape loading; `crash_on_load` kills the worker;
`n_ctx` refuses chat prompts of that many tokens (words) as too long.
Sampling's max_tokens (pieces) and stop strings are honoured like a real model,
and so is a reasoning budget (ChatRequest.reasoning): once that many pieces were
written inside <think>, the end tag is written and the script's own thinking
up to its end tag is skipped. A chat call reports its prompt's size
(PromptTokens) before its first piece, or at an `evaluate`. With `echo = true`, a chat answers with the JSON of what it
was sent (messages, tools, reasoning; an image part as its size, detail, mode and
PNG hash), to show what the router made of a request. `images = true` makes a
chat model take image parts (takes_images).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelyard.adapters.base import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    AudioChunk,
    BackendError,
    ChatAdapter,
    ChatEvent,
    ChatRequest,
    CompletionRequest,
    Embeddings,
    EmbeddingsAdapter,
    EmbedRequest,
    Finished,
    GeneratedImage,
    ImageAdapter,
    ImageInput,
    ImageProgress,
    ImageRequest,
    InvalidRequestError,
    ModelLoadError,
    PromptTokens,
    Sampling,
    SpeechAdapter,
    SpeechRequest,
    TextDelta,
    prompt_too_long,
)
from modelyard.adapters.reasoning import ReasoningBudget
from pydantic import BaseModel, ConfigDict, Field

TARGETS = {
    "chat": "modelyard_scripted:ScriptedChat",
    "embeddings": "modelyard_scripted:ScriptedEmbeddings",
    "image": "modelyard_scripted:ScriptedImage",
    "speech": "modelyard_scripted:ScriptedSpeech",
}
WEIGHTS = Path(__file__).with_name("weights.txt")
SOURCE = "package:modelyard_scripted/weights.txt"
SCRIPT_PREFIX = "script:"
DEFAULT_SCRIPT = ["Hello", " from", " the", " scripted", " backend", "."]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: list[Any] | None = Field(default=None)
    after_tool_result: list[Any] | None = Field(default=None)
    token_delay: float = 0.0
    load_delay: float = 0.0
    fail_load: str | None = None
    crash_on_load: bool = False
    dimensions: int = 8
    max_input_tokens: int = 64
    speakers: list[str] = Field(default_factory=lambda: ["alice", "bob"])
    image_steps: int = 2
    echo: bool = False
    n_ctx: int | None = None  # a chat prompt of this many tokens (words) or more does not fit
    token_ids: bool = True  # embeddings: take token arrays (False: text only, as sentence-transformers)
    images: bool = False  # chat: take image parts (ImageInput), as a llama-cpp model with its projector


def _load(options: Options) -> None:
    if options.crash_on_load:
        os._exit(3)
    if options.load_delay:
        time.sleep(options.load_delay)
    if options.fail_load:
        raise ModelLoadError(options.fail_load)


def _wait(seconds: float, cancelled: threading.Event) -> None:
    if seconds > 0:
        cancelled.wait(seconds)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _seen_content(content: Any) -> Any:
    """A message's content as JSON: an image part as its size, detail and the SHA-256 of its PNG."""
    if not isinstance(content, list):
        return content
    seen = []
    for part in content:
        image = part.get("image") if isinstance(part, dict) else None
        if isinstance(image, ImageInput):
            from PIL import Image

            mode = Image.open(io.BytesIO(image.png)).mode
            seen.append({"type": "image", "width": image.width, "height": image.height, "detail": image.detail,
                         "mode": mode, "png_sha256": hashlib.sha256(image.png).hexdigest()})
        else:
            seen.append(part)
    return seen


def _seen(request: ChatRequest) -> dict[str, Any]:
    """What a chat call was sent, as JSON (the echo option)."""
    tools = request.tools
    reasoning = request.reasoning
    return {
        "messages": [{**m, "content": _seen_content(m.get("content"))} for m in request.messages],
        "tools": [t["function"] for t in tools.tools] if tools is not None else None,
        "tool_mode": tools.mode if tools is not None else None,
        "free_arguments": tools.free_arguments if tools is not None else None,
        "reasoning": None if reasoning is None else {"enabled": reasoning.enabled, "budget_tokens": reasoning.budget_tokens},
        "json_schema": request.constraint.json_schema if request.constraint is not None else None,
        "max_tokens": request.sampling.max_tokens,
        "attached_files": request.attached_files,
    }


class ScriptedChat(ChatAdapter):
    Options = Options
    max_concurrency = 1  # as llama-cpp: admission and queueing behave the same

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, Options)
        _load(options)
        self.options = options

    def takes_images(self) -> bool:
        return self.options.images

    @staticmethod
    def _explicit(text: str) -> bool:
        return text.strip().rsplit("\n\n", 1)[-1].strip().startswith(SCRIPT_PREFIX)

    def _script(self, text: str) -> list[Any]:
        # Or the message's last paragraph: the Responses surface joins consecutive user turns.
        text = text.strip().rsplit("\n\n", 1)[-1].strip()
        if text.startswith(SCRIPT_PREFIX):
            try:
                script = json.loads(text[len(SCRIPT_PREFIX) :])
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"bad script: {exc}") from None
            if not isinstance(script, list):
                raise InvalidRequestError("a script is a JSON list of events")
            return script
        return list(self.options.script if self.options.script is not None else DEFAULT_SCRIPT)

    def _run(
        self,
        script: list[Any],
        sampling: Sampling,
        prompt_tokens: int,
        cancelled: threading.Event,
        budget: ReasoningBudget | None = None,
    ) -> Iterator[ChatEvent]:
        emitted = ""
        pieces = 0
        accepted = False
        cached = 0
        skipping = False  # the budget closed the thinking: the script's own thinking is skipped to its end tag
        for event in script:
            if skipping:
                if isinstance(event, str) and budget is not None and budget.end in event:
                    skipping = False
                continue
            if cancelled.is_set():
                break
            if isinstance(event, dict) and "evaluate" in event:
                if not accepted:
                    accepted, cached = True, int(event.get("cached", 0))
                    yield PromptTokens(prompt_tokens, cached)
                _wait(float(event["evaluate"]), cancelled)
                continue
            if not accepted and not (isinstance(event, dict) and {"sleep", "crash", "error", "invalid"} & event.keys()):
                accepted = True
                yield PromptTokens(prompt_tokens)
            if sampling.max_tokens is not None and pieces >= sampling.max_tokens:
                yield Finished("length", prompt_tokens, pieces, cached_tokens=cached)
                return
            if isinstance(event, dict) and "stop" in event:
                yield Finished(str(event["stop"]), prompt_tokens, pieces, cached_tokens=cached)
                return
            if isinstance(event, dict) and "sleep" in event:
                _wait(float(event["sleep"]), cancelled)
                continue
            if isinstance(event, dict) and event.get("crash"):
                os._exit(4)
            if isinstance(event, dict) and "error" in event:
                raise BackendError(str(event["error"]))
            if isinstance(event, dict) and "invalid" in event:
                raise InvalidRequestError(str(event["invalid"]))
            piece = self._piece(event)
            if pieces and self.options.token_delay:
                _wait(self.options.token_delay, cancelled)
            candidate = emitted + piece
            for stop in sampling.stop:
                at = candidate.find(stop)
                if stop and at != -1:
                    if at > len(emitted):
                        yield TextDelta(candidate[len(emitted) : at])
                    yield Finished("stop", prompt_tokens, pieces + 1, stop_sequence=stop, cached_tokens=cached)
                    return
            emitted = candidate
            pieces += 1
            yield TextDelta(piece)
            closing = budget.feed(piece) if budget is not None else None
            if closing:
                emitted += closing
                pieces += 1
                skipping = True
                yield TextDelta(closing)
        if not accepted and not cancelled.is_set():
            yield PromptTokens(prompt_tokens)
        yield Finished("stop", prompt_tokens, pieces, cached_tokens=cached)

    @staticmethod
    def _piece(event: Any) -> str:
        if isinstance(event, str):
            return event
        if isinstance(event, dict) and "reasoning" in event:
            return f"<think>{event['reasoning']}</think>"
        if isinstance(event, dict) and "tool_call" in event:
            return f"{TOOL_CALL_START}{json.dumps(event['tool_call'])}{TOOL_CALL_END}"
        raise InvalidRequestError(f"unknown script event {event!r}")

    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        last = _text_of(request.messages[-1].get("content")) if request.messages else ""
        prompt_tokens = self.count_tokens(request, cancelled)
        if self.options.n_ctx is not None and prompt_tokens >= self.options.n_ctx:
            raise prompt_too_long(prompt_tokens, self.options.n_ctx, "messages", request.attached_files)
        if self.options.echo:
            yield PromptTokens(prompt_tokens)
            # "<" escaped: tags in the messages must not read as the answer's own reasoning or tool calls.
            yield TextDelta(json.dumps(_seen(request)).replace("<", "\\u003c"))
            yield Finished("stop", prompt_tokens, 1)
            return
        budget = ReasoningBudget(request.reasoning) if request.reasoning is not None else None
        script = self._script(last)
        # A script in the newest user message wins over after_tool_result: a later turn of a conversation whose
        # history holds tool results (an agent's next request) still follows its own script.
        explicit = request.messages[-1].get("role") == "user" and self._explicit(last)
        if self.options.after_tool_result is not None and not explicit and any(m.get("role") == "tool" for m in request.messages):
            script = list(self.options.after_tool_result)
        yield from self._run(script, request.sampling, prompt_tokens, cancelled, budget)

    def complete(self, request: CompletionRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        prompt = request.prompt if isinstance(request.prompt, str) else " ".join(map(str, request.prompt))
        prompt_tokens = _tokens(prompt) if isinstance(request.prompt, str) else len(request.prompt)
        events = self._run(self._script(prompt), request.sampling, prompt_tokens, cancelled)
        if request.echo and isinstance(request.prompt, str):
            yield TextDelta(request.prompt)
        yield from events

    def count_tokens(self, request: ChatRequest, cancelled: threading.Event) -> int:
        return sum(_tokens(_text_of(m.get("content"))) for m in request.messages)


class ScriptedEmbeddings(EmbeddingsAdapter):
    """A unit vector per input from its hash: equal inputs, equal vectors."""

    Options = Options
    max_concurrency = 4

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, Options)
        _load(options)
        self.options = options

    def takes_token_ids(self) -> bool:
        return self.options.token_ids

    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        if self.options.token_delay:
            _wait(self.options.token_delay, cancelled)
        limit = min(request.max_tokens or self.options.max_input_tokens, self.options.max_input_tokens)
        vectors: list[bytes | None] = []
        counts: list[int] = []
        errors: list[str | None] = []
        for item in request.inputs:
            tokens = item.split() if isinstance(item, str) else [str(t) for t in item]
            if len(tokens) > limit and not request.truncate:
                vectors.append(None)
                counts.append(len(tokens))
                errors.append(f"input is {len(tokens)} tokens, over this model's limit of {limit}")
                continue
            tokens = tokens[:limit]
            digest = hashlib.sha256(" ".join(tokens).encode()).digest()
            raw = [(digest[i % len(digest)] - 127.5) for i in range(self.options.dimensions)]
            norm = sum(v * v for v in raw) ** 0.5 or 1.0
            vectors.append(struct.pack(f"<{len(raw)}f", *(v / norm for v in raw)))
            counts.append(max(1, len(tokens)))
            errors.append(None)
        return Embeddings(vectors, counts, errors)


class ScriptedImage(ImageAdapter):
    """A flat image whose colour comes from the prompt and seed."""

    Options = Options

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, Options)
        _load(options)
        self.options = options

    def generate(self, request: ImageRequest, cancelled: threading.Event) -> Iterator[ImageProgress | GeneratedImage]:
        from PIL import Image

        steps = request.steps or self.options.image_steps
        base_seed = request.seed if request.seed is not None else 0
        for index in range(request.n):
            for step in range(1, steps + 1):
                if cancelled.is_set():
                    return
                _wait(self.options.token_delay, cancelled)
                yield ImageProgress(image=index, step=step, steps=steps)
            seed = base_seed + index
            digest = hashlib.sha256(f"{request.prompt}|{seed}".encode()).digest()
            image = Image.new("RGB", (request.width, request.height), tuple(digest[:3]))
            buffer = io.BytesIO()
            fmt = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[request.output_format]
            kwargs = {"quality": request.output_compression} if request.output_compression is not None and fmt != "PNG" else {}
            image.save(buffer, fmt, **kwargs)
            yield GeneratedImage(buffer.getvalue(), request.width, request.height, seed)


class ScriptedSpeech(SpeechAdapter):
    """Silence, one 0.1 s chunk per word, as WAV (or raw PCM)."""

    Options = Options
    SAMPLE_RATE = 16000

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, Options)
        _load(options)
        self.options = options

    def speakers(self) -> list[str]:
        return list(self.options.speakers)

    def synthesize(self, request: SpeechRequest, cancelled: threading.Event) -> Iterator[AudioChunk]:
        words = max(1, len(request.text.split()))
        pcm = b"\x00\x00" * int(self.SAMPLE_RATE * 0.1)
        if request.response_format == "pcm":
            for _ in range(words):
                if cancelled.is_set():
                    return
                _wait(self.options.token_delay, cancelled)
                yield AudioChunk(pcm, self.SAMPLE_RATE)
            return
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.SAMPLE_RATE)
            out.writeframes(pcm * words)
        yield AudioChunk(buffer.getvalue(), self.SAMPLE_RATE)
