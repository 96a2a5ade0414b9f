"""Backend-neutral requests (adapters/base.py) as OpenAI request bodies for
an upstream, and the upstream's answers back as the events an adapter
yields, so every surface (chat completions, Responses, Messages, the agent
loop) works over upstreams as over a local worker.

Tool calls come back as the Hermes text adapters write
(`<tool_call>{"name": ..., "arguments": ...}</tool_call>`), which the
router's parser turns into each surface's own tool-call shape; reasoning
comes back inside the model's reasoning tags.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from modelyard.adapters.base import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    Finished,
    ImageInput,
    ImageRequest,
    Sampling,
    SpeechRequest,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    TranscribedSegment,
    TranscribedWord,
    TranscriptionInfo,
    TranscriptionRequest,
)
from modelyard.router.workers import CallFailed


def sampling_fields(sampling: Sampling, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("max_tokens", "temperature", "top_p", "seed", "top_k", "min_p"):
        value = getattr(sampling, name)
        if value is not None:
            body[name] = value
    if sampling.repeat_penalty is not None:
        body["repetition_penalty"] = sampling.repeat_penalty  # vLLM's and llama-server's name
    if sampling.presence_penalty:
        body["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty:
        body["frequency_penalty"] = sampling.frequency_penalty
    if sampling.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias.items()}
    if sampling.stop:
        body["stop"] = sampling.stop
    if sampling.logprobs is not None:
        if chat:
            body["logprobs"] = True
            body["top_logprobs"] = sampling.logprobs
        else:
            body["logprobs"] = sampling.logprobs
    if sampling.ignore_eos:
        body["ignore_eos"] = True
    return body


def grammar_refused(gbnf: str | None) -> None:
    if gbnf is not None:
        raise CallFailed("invalid_request", "A grammar cannot be sent to this model's upstream servers.", "grammar")


def wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A backend message as the upstream's chat API takes it: image parts
    (ImageInput, the PNG the router read) become `image_url` parts with a
    data URL; whether the upstream model takes images is for it to say."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts: list[dict[str, Any]] = []
    for part in content:
        image = part.get("image") if part.get("type") == "image" else None
        if isinstance(image, ImageInput):
            url = "data:image/png;base64," + base64.b64encode(image.png).decode("ascii")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": image.detail}})
        else:
            parts.append(part)
    return {**message, "content": parts}


def chat_body(model: str, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [wire_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_fields(request.sampling, chat=True),
    }
    if request.constraint is not None:
        grammar_refused(request.constraint.gbnf)
        if request.constraint.json_schema is not None:
            schema = request.constraint.json_schema
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    if request.tools is not None:
        body["tools"] = request.tools.tools
        if request.tools.mode == "named":
            body["tool_choice"] = {"type": "function", "function": {"name": request.tools.name}}
        else:
            body["tool_choice"] = request.tools.mode
        if not request.tools.parallel:
            body["parallel_tool_calls"] = False
    return body


def completion_body(model: str, request: CompletionRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_fields(request.sampling, chat=False),
    }
    if request.echo:
        body["echo"] = True
    if request.suffix is not None:
        body["suffix"] = request.suffix
    if request.constraint is not None:
        grammar_refused(request.constraint.gbnf)
        if request.constraint.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": request.constraint.json_schema}}
    return body


def embeddings_body(model: str, request: EmbedRequest) -> dict[str, Any]:
    return {"model": model, "input": request.inputs, "encoding_format": "base64"}


def image_body(model: str, request: ImageRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "n": request.n,
        "size": f"{request.width}x{request.height}",
        "response_format": "b64_json",
        "output_format": request.output_format,
    }
    if request.output_compression is not None:
        body["output_compression"] = request.output_compression
    return body


def speech_body(model: str, request: SpeechRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "input": request.text,
        "voice": request.voice,
        "response_format": request.response_format,
        "speed": request.speed,
    }
    if request.instructions is not None:
        body["instructions"] = request.instructions
    if request.stream:
        body["stream_format"] = "audio"
    return body


def pcm16_wav(samples: bytes, rate: int) -> bytes:
    """Little-endian float32 mono samples as a 16-bit PCM WAV file: half
    the bytes of the floats, and what every transcription server reads."""
    import numpy as np

    pcm = (np.clip(np.frombuffer(samples, dtype="<f4"), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16, b"data", len(pcm),
    )
    return header + pcm


def transcription_fields(model: str, request: TranscriptionRequest) -> dict[str, Any]:
    """The multipart fields of an upstream transcription or translation:
    verbose_json when the answer shows times (segments, words), else json,
    which every transcription model serves (gpt-4o-transcribe serves no other)."""
    timed = request.timestamps or request.word_timestamps
    fields: dict[str, Any] = {
        "model": model, "response_format": "verbose_json" if timed else "json", "temperature": str(request.temperature)
    }
    if request.prompt is not None:
        fields["prompt"] = request.prompt
    if request.task == "transcribe":
        if request.language is not None:
            fields["language"] = request.language
        if timed:
            fields["timestamp_granularities[]"] = ["segment", "word"] if request.word_timestamps else ["segment"]
    return fields


def transcription_events(data: dict[str, Any], request: TranscriptionRequest, duration: float) -> list[Any]:
    """An upstream's verbose_json (or json) as the events a transcription
    adapter yields: the language and duration, then each segment with its
    words (verbose_json lists words apart from segments: each goes to the
    segment its start falls in). A field of the wrong type is an upstream_error."""
    from modelyard.schemas.audio import WHISPER_LANGUAGES

    try:
        codes = {name: code for code, name in WHISPER_LANGUAGES.items()}
        language = str(data.get("language") or request.language or "en").lower()
        events: list[Any] = [TranscriptionInfo(codes.get(language, language), float(data.get("duration") or duration))]
        raw = data.get("segments")
        if not isinstance(raw, list) or not raw:  # json: the text alone, one segment
            raw = [{"start": 0.0, "end": duration, "text": str(data.get("text") or "")}]
        words = [w for w in data.get("words") or [] if isinstance(w, dict)] if request.word_timestamps else []
        for index, segment in enumerate(raw):
            start, end = float(segment.get("start") or 0.0), float(segment.get("end") or 0.0)
            last = index == len(raw) - 1
            mine = [w for w in words if start <= float(w.get("start") or 0.0) < end or (last and float(w.get("start") or 0.0) >= end)]
            events.append(TranscribedSegment(
                id=int(segment.get("id", index)),
                seek=int(segment.get("seek") or 0),
                start=start,
                end=end,
                text=str(segment.get("text") or ""),
                tokens=[int(t) for t in segment.get("tokens") or []],
                temperature=float(segment.get("temperature") or request.temperature),
                avg_logprob=float(segment.get("avg_logprob") or 0.0),
                compression_ratio=float(segment.get("compression_ratio") or 0.0),
                no_speech_prob=float(segment.get("no_speech_prob") or 0.0),
                words=[TranscribedWord(" " + str(w.get("word", "")).lstrip(), float(w.get("start") or 0.0),
                                       float(w.get("end") or 0.0), float(w.get("probability") or 1.0)) for w in mine]
                if request.word_timestamps else None,
            ))
    except (AttributeError, TypeError, ValueError) as exc:
        raise CallFailed("upstream_error", f"The upstream's transcription is not in OpenAI's shape: {exc}") from None
    return events


def vector_bytes(embedding: Any) -> bytes:
    """An upstream's vector (base64 float32, or a list of floats from a server that ignores encoding_format)."""
    if isinstance(embedding, str):
        return base64.b64decode(embedding)
    return struct.pack(f"<{len(embedding)}f", *embedding)


def split_tokens(total: int, inputs: list[str | list[int]]) -> list[int]:
    """The upstream counts a batch's tokens as one total: shared out by input length."""
    sizes = [max(1, len(item)) for item in inputs]
    counts = [total * size // sum(sizes) for size in sizes]
    if counts:
        counts[-1] += total - sum(counts)
    return counts


def chat_logprobs(data: Any) -> list[TokenLogprob] | None:
    if not isinstance(data, dict) or not data.get("content"):
        return None
    return [
        TokenLogprob(
            e["token"],
            e["logprob"],
            e.get("bytes") or list(e["token"].encode()),
            [TopLogprob(t["token"], t["logprob"], t.get("bytes") or list(t["token"].encode())) for t in e.get("top_logprobs") or []],
        )
        for e in data["content"]
    ]


def completion_logprobs(data: Any) -> list[TokenLogprob] | None:
    if not isinstance(data, dict) or not data.get("tokens"):
        return None
    tops = data.get("top_logprobs") or [{} for _ in data["tokens"]]
    return [
        TokenLogprob(token, logprob, list(token.encode()), [TopLogprob(t, lp, list(t.encode())) for t, lp in (top or {}).items()])
        for token, logprob, top in zip(data["tokens"], data["token_logprobs"], tops, strict=False)
    ]


class StreamTranslator:
    """One upstream SSE stream (chat or legacy completions) as TextDelta
    events and, at its end, one Finished."""

    def __init__(self, chat: bool, reasoning_tags: list[str]) -> None:
        self.chat = chat
        self.tags = reasoning_tags
        self.reasoning = False  # inside the reasoning tags we opened
        self.calls: dict[int, dict[str, str]] = {}  # index → name, arguments
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.pieces = 0

    def feed(self, chunk: dict[str, Any]) -> list[TextDelta]:
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise CallFailed("upstream_error", f"The upstream failed mid-stream: {message}")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[TextDelta] = []
        for choice in chunk.get("choices") or []:
            if self.chat:
                out += self._chat_delta(choice.get("delta") or {}, chat_logprobs(choice.get("logprobs")))
            elif choice.get("text"):
                out.append(TextDelta(choice["text"], completion_logprobs(choice.get("logprobs"))))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self.pieces += len(out)
        return out

    def _chat_delta(self, delta: dict[str, Any], logprobs: list[TokenLogprob] | None) -> list[TextDelta]:
        out: list[TextDelta] = []
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if thinking:
            if self.tags and not self.reasoning:
                out.append(TextDelta(self.tags[0]))
                self.reasoning = True
            out.append(TextDelta(thinking))
        content = delta.get("content")
        if content or delta.get("tool_calls"):
            out += self._close_reasoning()
        if content:
            out.append(TextDelta(content, logprobs))
        for call in delta.get("tool_calls") or []:
            held = self.calls.setdefault(int(call.get("index", len(self.calls))), {"name": "", "arguments": ""})
            function = call.get("function") or {}
            held["name"] += function.get("name") or ""
            held["arguments"] += function.get("arguments") or ""
        return out

    def _close_reasoning(self) -> list[TextDelta]:
        if self.reasoning:
            self.reasoning = False
            return [TextDelta(self.tags[1])]
        return []

    def finish(self) -> tuple[list[TextDelta], Finished]:
        """The stream ended: the tool calls it held, as Hermes text, and its Finished."""
        if self.finish_reason is None:
            raise CallFailed("upstream_error", "The upstream ended the stream before it finished.")
        out = self._close_reasoning()
        for _, call in sorted(self.calls.items()):
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except ValueError:
                arguments = call["arguments"]
            out.append(TextDelta(TOOL_CALL_START + json.dumps({"name": call["name"], "arguments": arguments}) + TOOL_CALL_END))
        details = self.usage.get("prompt_tokens_details") or {}
        finished = Finished(
            "length" if self.finish_reason == "length" else "stop",
            int(self.usage.get("prompt_tokens") or 0),
            int(self.usage.get("completion_tokens") or self.pieces),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )
        return out, finished


def error_message(response_body: bytes, status: int) -> str:
    """The message of an upstream's error answer (OpenAI's or Anthropic's shape, or its text)."""
    try:
        data = json.loads(response_body)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])
    except ValueError:
        pass
    text = response_body.decode("utf-8", "replace").strip()
    return text[:500] if text else f"status {status}"
