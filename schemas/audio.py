"""OpenAI wire types for text to speech: POST /v1/audio/speech, its SSE
events, and modelyard's GET /v1/audio/voices.

Request fields follow the order of OpenAI's API reference; unknown fields
are rejected with 400. The input length limit is per model
(`[models.speech] max_input_chars`) and is checked by the router.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class Strict(BaseModel):
    # strict: no coercion ("stream": "yes", "top_p": "0.5" and "n": true are
    # 400s, as at OpenAI); JSON integers still count as numbers.
    model_config = ConfigDict(extra="forbid", strict=True)


class CustomVoice(Strict):
    id: str = Field(description="A voice name, as a plain `voice` string would give it.")


class CreateSpeechRequest(Strict):
    model: str | None = Field(
        default=None, description='A speech model id or alias; absent or "default": the default one.'
    )
    input: str = Field(description="The text to speak.")
    instructions: str | None = Field(default=None, max_length=4096, description="Ignored by the current backends.")
    voice: str | CustomVoice | None = Field(
        default=None,
        description="A voice of the model (GET /v1/audio/voices lists them); absent: the model's default voice.",
    )
    response_format: AudioFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["sse", "audio"] = "audio"

    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, CustomVoice) else self.voice


class SpeechUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechAudioDelta(BaseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str  # base64


class SpeechAudioDone(BaseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage


class Voice(BaseModel):
    object: Literal["audio.voice"] = "audio.voice"
    id: str = Field(description="What to send as `voice`.")
    name: str
    model: str = Field(description="The speech model that has this voice.")
    speaker: str = Field(description="The backend speaker it selects.")
    default: bool = Field(description="The voice used when a request names none.")


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Voice]
