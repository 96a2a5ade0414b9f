"""POST /v1/audio/speech and GET /v1/audio/voices (a modelyard extension).

Audio is always sent as it is made, as OpenAI does: with `stream_format`
"audio" as a chunked body in the requested format, with "sse" as
`speech.audio.delta` events (base64 audio) ending with `speech.audio.done`
(flac, whose header carries its length, comes in one piece at the end).
A failure before the first audio is answered with a proper error status;
after it, an SSE stream gets an error event and a raw stream is cut off
(no final chunk), so the client sees an incomplete body rather than a
truncated file that looks whole.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from modelyard.adapters.audio import CONTENT_TYPES
from modelyard.adapters.base import AudioChunk, SpeechRequest
from modelyard.router.deps import get_yard, request_id, request_key, resolve_model
from modelyard.router.errors import APIError, api_error_from, invalid_request
from modelyard.router.limits import reject_lone_surrogates
from modelyard.router.registry import ModelEntry
from modelyard.router.streaming import (
    ClientGone,
    EventStreamResponse,
    error_event,
    first_item,
    sse,
    until_disconnected,
    wait_for_disconnect,
)
from modelyard.schemas import openai as oa
from modelyard.schemas.audio import CreateSpeechRequest, SpeechUsage, Voice, VoiceList
from modelyard.schemas.config import SpeechSettings
from starlette.types import Receive, Scope, Send

log = logging.getLogger("modelyard")
router = APIRouter()
ENDPOINT = "/v1/audio/speech"
VOICES = "/v1/audio/voices"
SHOWN_VOICES = 40  # an error message lists at most this many


class AudioStreamResponse(StreamingResponse):
    """Raw audio sent as it is made; the client going away closes the
    stream at once, which cancels the synthesis in the worker."""

    def __init__(self, chunks: AsyncIterator[bytes], media_type: str, req_id: str | None) -> None:
        super().__init__(
            chunks, media_type=media_type, headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
        )
        self.chunks = chunks
        self.req_id = req_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        pump_task = asyncio.create_task(pump())
        listen_task = asyncio.create_task(wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({pump_task, listen_task}, return_when=asyncio.FIRST_COMPLETED)
            failure = pump_task.exception() if pump_task in done else None
            if failure is not None:
                # The status line went out long ago: end the body without its
                # final chunk, so the client sees it is incomplete.
                known = api_error_from(failure)
                log.error(
                    "speech stream failed after audio was sent (request id %s): %s",
                    self.req_id,
                    known.message if known is not None else repr(failure),
                    exc_info=None if known is not None else failure,
                )
        except OSError:
            pass
        finally:
            for task in (pump_task, listen_task):
                task.cancel()
            await asyncio.gather(pump_task, listen_task, return_exceptions=True)
            await self.chunks.aclose()  # type: ignore[attr-defined]


async def speakers_of(entry: ModelEntry) -> list[str]:
    """The backend's own speaker names, which a speech worker reports when it
    has loaded ([] when the backend does not list them: then any voice is
    handed to it unchecked). Loads the model if needed."""
    await entry.load()
    return entry.speakers()


def voice_names(settings: SpeechSettings, speakers: list[str]) -> list[str]:
    return list(dict.fromkeys([*settings.voices, *speakers]))


def default_voice(settings: SpeechSettings, speakers: list[str]) -> str | None:
    if settings.default_voice is not None:
        return settings.default_voice
    if speakers:
        return speakers[0]
    return next(iter(settings.voices), None)


def backend_voice(entry: ModelEntry, requested: str | None, speakers: list[str]) -> str:
    """The backend speaker for a request's voice, or a 400 listing the voices."""
    settings = entry.model.speech
    name = requested or default_voice(settings, speakers)
    if name is None:
        raise invalid_request("Missing required parameter: 'voice'.", param="voice")
    target = settings.voices.get(name)
    if target is not None:
        if speakers and target not in speakers:
            log.error("model %s: voice %r maps to speaker %r, which the model does not have", entry.id, name, target)
            raise APIError(
                500,
                f"The model '{entry.id}' maps the voice '{name}' to the speaker '{target}', which it does not have. "
                "Check [models.speech] voices in the server's config.",
                code="voice_misconfigured",
            )
        return target
    if name in speakers or not speakers:
        return name
    available = voice_names(settings, speakers)
    shown = ", ".join(available[:SHOWN_VOICES]) + (
        f" (and {len(available) - SHOWN_VOICES} more)" if len(available) > SHOWN_VOICES else ""
    )
    raise invalid_request(
        f"Unknown voice '{name}' for the model '{entry.id}'. Available voices: {shown}.", param="voice"
    )


def check_input(text: str, settings: SpeechSettings) -> None:
    if not text.strip():
        raise invalid_request("input must not be empty.", param="input", code="empty_string")
    if "\x00" in text:
        # Piper's phonemizer takes C strings: it raises at a NUL.
        raise invalid_request("input must not contain NUL characters (U+0000).", param="input", code="invalid_value")
    if len(text) > settings.max_input_chars:
        raise invalid_request(
            f"input is {len(text)} characters long; this model takes at most {settings.max_input_chars}.",
            param="input",
            code="string_above_max_length",
        )


async def raw_audio(first: AudioChunk, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        yield first.data
        async for chunk in chunks:
            yield chunk.data
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def sse_audio(
    first: AudioChunk, chunks: AsyncIterator[Any], characters: int, req_id: str | None
) -> AsyncIterator[str]:
    try:
        yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(first.data).decode("ascii")})
        async for chunk in chunks:
            yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk.data).decode("ascii")})
        # The backends have no tokens: input_tokens counts the input's characters.
        usage = SpeechUsage(input_tokens=characters, output_tokens=0, total_tokens=characters)
        yield sse({"type": "speech.audio.done", "usage": usage.model_dump()})
    except Exception as exc:
        yield error_event(exc, req_id)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


@router.post(
    ENDPOINT,
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in (*sorted(set(CONTENT_TYPES.values())), "text/event-stream")}},
        400: {"model": oa.ErrorResponse},
    },
)
async def create_speech(body: CreateSpeechRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "speech", ENDPOINT)
    settings = entry.model.speech
    reject_lone_surrogates(body)
    check_input(body.input, settings)
    try:
        speakers = await until_disconnected(request, speakers_of(entry))
        voice = backend_voice(entry, body.voice_name(), speakers)
        speech = SpeechRequest(
            text=body.input,
            voice=voice,
            response_format=body.response_format,
            speed=body.speed,
            instructions=body.instructions,
            stream=True,
        )
        chunks = entry.stream("synthesize", speech)
        first = await until_disconnected(request, first_item(chunks))
    except ClientGone:
        return Response(status_code=499)
    if body.stream_format == "sse":
        return EventStreamResponse(sse_audio(first, chunks, len(body.input), request_id(request)))
    return AudioStreamResponse(raw_audio(first, chunks), CONTENT_TYPES[body.response_format], request_id(request))


@router.get(VOICES, response_model=VoiceList)
async def list_voices(request: Request, model: str | None = None) -> VoiceList:
    """Each speech model's voices: its [models.speech] voices, then the
    backend's own speakers (known once the model has loaded)."""
    if model is not None:
        entries = [resolve_model(request, model, "speech", VOICES)]
    else:
        key = request_key(request)
        entries = [
            e
            for e in get_yard(request).generation.entries.values()
            if e.model.modality == "speech" and (key is None or key.allows(e.model.names()))
        ]
    data: list[Voice] = []
    for entry in entries:
        # Listing voices does not load a model: an unloaded one shows its configured names.
        speakers = entry.speakers()
        settings = entry.model.speech
        default = default_voice(settings, speakers)
        for name in voice_names(settings, speakers):
            speaker = settings.voices.get(name, name)
            data.append(Voice(id=name, name=name, model=entry.id, speaker=speaker, default=name == default))
    return VoiceList(data=data)
