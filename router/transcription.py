"""POST /v1/audio/transcriptions and POST /v1/audio/translations: speech to
text, and speech in any language to English text (Whisper's `translate` task).

The upload is multipart/form-data, read in memory under `[limits]
max_audio_bytes` (router/file_upload.py); its fields are checked, the model
resolved, and the file decoded on a thread under `[limits]
max_audio_seconds` (router/audio_decode.py), all before the model sees it.
The worker sends the transcript segment by segment: with `stream=true`
(transcriptions only, as OpenAI) each segment goes out as a
`transcript.text.delta` event as soon as it is decoded, then one
`transcript.text.done`; otherwise the segments are gathered into the
requested `response_format`.

Fields that change nothing here (`chunking_strategy`: Whisper always cuts
the audio into its own 30 s windows; `timestamp_granularities[]=segment`
and `include[]` empty) are accepted; what cannot be honoured (token
logprobs, diarization, streaming subtitles) is refused with a 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from modelyard.adapters.base import TranscribedSegment, TranscriptionInfo, TranscriptionRequest
from modelyard.router import audio_decode, file_upload
from modelyard.router.deps import get_yard, request_id, resolve_model
from modelyard.router.errors import APIError, ClientGone, invalid_request
from modelyard.router.file_upload import Received
from modelyard.router.streaming import EventStreamResponse, error_event, first_item, sse, until_disconnected
from modelyard.schemas import audio as wire

log = logging.getLogger("modelyard")
router = APIRouter()
TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")
STREAMED_FORMATS = ("json", "text")  # a stream carries text; subtitles and segments need the whole result


@dataclass
class AudioFields:
    """An upload's fields, checked."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    granularities: set[str] = field(default_factory=set)
    stream: bool = False


def multipart_schema(translation: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": f"Audio: {', '.join(wire.AUDIO_EXTENSIONS)}."},
        "model": {"type": "string", "description": 'A transcription model id or alias; absent or "default": the default one.'},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": list(FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
    }
    if not translation:
        properties |= {
            "language": {"type": "string", "description": "ISO-639-1 (e.g. `en`); absent: detected."},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": list(GRANULARITIES)}},
            "stream": {"type": "boolean", "default": False},
            "chunking_strategy": {"type": "string", "description": "Accepted and ignored (`auto` or a server_vad object)."},
            "include[]": {"type": "array", "items": {"type": "string"}, "description": "Only [] (no logprobs)."},
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": properties}}
            },
        }
    }


def one_value(received: Received, name: str) -> str | None:
    values = received.values.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid_request(f"Invalid value for '{name}': send it once, not {len(values)} times.", param=name)
    return values[0]


def number(value: str, name: str, least: float, most: float) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise invalid_request(
            f"Invalid type for '{name}': expected a number, but got a string instead.", param=name, code="invalid_type"
        ) from None
    if not least <= parsed <= most:
        raise invalid_request(
            f"Invalid value for '{name}': {value} is not between {least:g} and {most:g}.", param=name, code="invalid_value"
        )
    return parsed


def boolean(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid_request(
        f"Invalid type for '{name}': expected a boolean, but got a string instead.", param=name, code="invalid_type"
    )


def check_chunking(received: Received) -> None:
    """`chunking_strategy` is taken and ignored: "auto", or a server_vad
    object (JSON text, or the `chunking_strategy[type]` fields the SDKs send)."""
    plain = one_value(received, "chunking_strategy")
    nested = {name: values[-1] for name, values in received.values.items() if name.startswith("chunking_strategy[")}
    if plain is not None and plain != "auto":
        try:
            parsed = json.loads(plain)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or parsed.get("type") != "server_vad":
            raise invalid_request(
                "Invalid value for 'chunking_strategy': expected 'auto' or an object with type 'server_vad'.",
                param="chunking_strategy",
                code="invalid_value",
            )
    if nested and nested.get("chunking_strategy[type]") != "server_vad":
        raise invalid_request(
            "Invalid value for 'chunking_strategy.type': expected 'server_vad'.", param="chunking_strategy.type"
        )


TRANSCRIPTION_FIELDS = {
    "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
    "timestamp_granularities", "stream", "chunking_strategy", "include[]", "include",
}  # fmt: skip
TRANSLATION_FIELDS = {"model", "prompt", "response_format", "temperature"}
# Known to OpenAI's API, but what they ask for (speaker labels, the hints of
# other models) this server cannot give.
UNSUPPORTED_FIELDS = {
    "known_speaker_names[]": "speaker diarization",
    "known_speaker_references[]": "speaker diarization",
    "keywords[]": "keyword hints",
    "languages[]": "several candidate languages",
}


def read_fields(received: Received, translation: bool) -> AudioFields:
    known = TRANSLATION_FIELDS if translation else TRANSCRIPTION_FIELDS
    for name in received.values:
        if name in known or (not translation and name.startswith("chunking_strategy[")):
            continue
        base = name if name.endswith("[]") else f"{name}[]"
        if not translation and base in UNSUPPORTED_FIELDS:
            raise invalid_request(
                f"'{name.removesuffix('[]')}' is not supported by this server: its transcription models do not do "
                f"{UNSUPPORTED_FIELDS[base]}.",
                param=name.removesuffix("[]"),
                code="unsupported_parameter",
            )
        raise invalid_request(f"Unrecognized request argument supplied: {name}", param=name)
    fields = AudioFields(model=one_value(received, "model") or None, prompt=one_value(received, "prompt") or None)
    response_format = one_value(received, "response_format")
    if response_format is not None:
        if response_format not in FORMATS:
            supported = ", ".join(f"'{f}'" for f in FORMATS)
            raise invalid_request(
                f"Invalid value for 'response_format': '{response_format}'. Supported values are: {supported}.",
                param="response_format",
                code="invalid_value",
            )
        fields.response_format = response_format
    temperature = one_value(received, "temperature")
    if temperature is not None:
        fields.temperature = number(temperature, "temperature", 0.0, 1.0)
    if translation:
        return fields
    language = one_value(received, "language")
    if language is not None:
        language = language.strip().lower()
        if language not in wire.WHISPER_LANGUAGES:
            raise invalid_request(
                f"Invalid language '{language}'. Language parameter must be specified in ISO-639-1 format.",
                param="language",
                code="invalid_language_format",
            )
        fields.language = language
    for value in received.values.get("timestamp_granularities[]", []) + received.values.get("timestamp_granularities", []):
        if value not in GRANULARITIES:
            raise invalid_request(
                f"Invalid value for 'timestamp_granularities': '{value}'. Supported values are: 'word', 'segment'.",
                param="timestamp_granularities",
                code="invalid_value",
            )
        fields.granularities.add(value)
    if fields.granularities and fields.response_format != "verbose_json":
        raise invalid_request(
            "timestamp_granularities needs response_format 'verbose_json' (the other formats have no timestamps "
            "to put them in).",
            param="timestamp_granularities",
        )
    for value in received.values.get("include[]", []) + received.values.get("include", []):
        raise invalid_request(
            f"'include' ('{value}') is not supported by this server: its transcription models do not return token "
            "logprobs.",
            param="include",
            code="unsupported_parameter",
        )
    stream = one_value(received, "stream")
    if stream is not None:
        fields.stream = boolean(stream, "stream")
    if fields.stream and fields.response_format not in STREAMED_FORMATS:
        raise invalid_request(
            f"Streaming sends the text as transcript.text.delta events; it takes response_format 'json' or 'text', "
            f"not '{fields.response_format}'.",
            param="stream",
        )
    check_chunking(received)
    return fields


# --- answers -------------------------------------------------------------------


def timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: list[TranscribedSegment]) -> str:
    cues = [
        f"{n}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for n, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues) + ("\n" if cues else "")


def vtt(segments: list[TranscribedSegment]) -> str:
    cues = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues) + ("\n" if cues else "")


def full_text(segments: list[TranscribedSegment]) -> str:
    return "".join(s.text for s in segments).strip()


def verbose(
    info: TranscriptionInfo, segments: list[TranscribedSegment], fields: AudioFields, translation: bool, seconds: float
) -> wire.TranscriptionVerbose:
    language = "english" if translation else wire.WHISPER_LANGUAGES.get(info.language, info.language)
    with_segments = translation or not fields.granularities or "segment" in fields.granularities
    body = wire.TranscriptionVerbose(
        task="translate" if translation else "transcribe",
        language=language,
        duration=round(seconds, 3),
        text=full_text(segments),
        segments=[
            wire.TranscriptionSegment(
                id=s.id, seek=s.seek, start=s.start, end=s.end, text=s.text, tokens=s.tokens,
                temperature=s.temperature, avg_logprob=s.avg_logprob, compression_ratio=s.compression_ratio,
                no_speech_prob=s.no_speech_prob,
            )  # fmt: skip
            for s in segments
        ]
        if with_segments
        else None,
        usage=None if translation else wire.DurationUsage(seconds=round(seconds, 3)),
    )
    if "word" in fields.granularities:
        body.words = [wire.TranscriptionWord(word=w.word.strip(), start=w.start, end=w.end) for s in segments for w in s.words or ()]
    return body


def answer(
    info: TranscriptionInfo, segments: list[TranscribedSegment], fields: AudioFields, translation: bool, seconds: float
) -> Response:
    fmt = fields.response_format
    if fmt == "text":
        return PlainTextResponse(full_text(segments) + "\n")
    if fmt == "srt":
        return PlainTextResponse(srt(segments), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(vtt(segments), media_type="text/vtt")
    if fmt == "verbose_json":
        return JSONResponse(verbose(info, segments, fields, translation, seconds).model_dump(exclude_none=True))
    usage = None if translation else wire.DurationUsage(seconds=round(seconds, 3))
    return JSONResponse(wire.Transcription(text=full_text(segments), usage=usage).model_dump(exclude_none=True))


async def text_events(events: AsyncIterator[Any], req_id: str | None) -> AsyncIterator[str]:
    """Each segment's text as a delta (the first without Whisper's leading
    space), so that the deltas joined are the done event's text."""
    text = ""
    try:
        async for event in events:
            if not isinstance(event, TranscribedSegment):
                continue
            delta = event.text if text else event.text.lstrip()
            if not delta:
                continue
            text += delta
            yield sse(wire.TranscriptTextDelta(delta=delta).model_dump())
        yield sse(wire.TranscriptTextDone(text=text.rstrip()).model_dump())
    except Exception as exc:
        yield error_event(exc, req_id)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def gather(events: AsyncIterator[Any]) -> list[TranscribedSegment]:
    try:
        return [event async for event in events if isinstance(event, TranscribedSegment)]
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def transcribe(request: Request, translation: bool) -> Response:
    endpoint = TRANSLATIONS if translation else TRANSCRIPTIONS
    limits = get_yard(request).generation.loaded.config.limits
    max_bytes = int(limits.max_audio_bytes)
    data, received = await file_upload.receive_in_memory(
        request,
        max_bytes,
        f"The audio file is larger than this server accepts ({max_bytes} bytes).",
        "with a 'file' part (the audio) and a 'model' field",
    )
    fields = read_fields(received, translation)
    assert received.filename is not None
    fmt = audio_decode.audio_format(received.filename, received.part_type)
    entry = resolve_model(request, fields.model, "transcription", endpoint)
    try:
        decoded = await until_disconnected(
            request, asyncio.to_thread(audio_decode.decode, data, fmt, float(limits.max_audio_seconds))
        )
        del data
        call = TranscriptionRequest(
            samples=decoded.samples,
            task="translate" if translation else "transcribe",
            language=fields.language,
            prompt=fields.prompt,
            temperature=fields.temperature,
            word_timestamps="word" in fields.granularities,
            timestamps=fields.response_format in ("srt", "vtt", "verbose_json"),
        )
        events = entry.stream("transcribe", call)
        info = await until_disconnected(request, first_item(events))
        if not isinstance(info, TranscriptionInfo):
            await events.aclose()  # type: ignore[attr-defined]
            raise APIError(500, f"The model '{entry.id}' answered out of order.", code="backend_error")
        if fields.stream:
            return EventStreamResponse(text_events(events, request_id(request)))
        segments = await until_disconnected(request, gather(events))
    except ClientGone:
        return Response(status_code=499)
    return answer(info, segments, fields, translation, decoded.duration)


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {},
            "text/plain": {"schema": {"type": "string"}},
            "application/x-subrip": {"schema": {"type": "string"}},
            "text/vtt": {"schema": {"type": "string"}},
        }
    }
}


@router.post(TRANSCRIPTIONS, response_model=wire.Transcription | wire.TranscriptionVerbose, responses=RESPONSES, openapi_extra=multipart_schema(False))
async def create_transcription(request: Request) -> Response:
    return await transcribe(request, translation=False)


@router.post(TRANSLATIONS, response_model=wire.Transcription | wire.TranscriptionVerbose, responses=RESPONSES, openapi_extra=multipart_schema(True))
async def create_translation(request: Request) -> Response:
    return await transcribe(request, translation=True)
