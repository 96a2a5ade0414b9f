"""OpenAI wire types for audio: text to speech (POST /v1/audio/speech, its
SSE events, and modelyard's GET /v1/audio/voices) and speech to text (the
answers and stream events of POST /v1/audio/transcriptions and
/v1/audio/translations, whose multipart fields router/transcription.py reads).

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


# --- speech to text: POST /v1/audio/transcriptions and /v1/audio/translations ---

TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
# What the upload's file name may end with (OpenAI's list; "oga" is Ogg audio).
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")

# Whisper's languages, by ISO-639-1 code: verbose_json names the language in
# English words ("english"), as OpenAI does.
WHISPER_LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean", "fr":
    "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan", "nl": "dutch",
    "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi":
    "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech", "ro": "romanian",
    "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian", "th": "thai", "ur": "urdu", "hr":
    "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin", "mi": "maori", "ml": "malayalam", "cy":
    "welsh", "sk": "slovak", "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton",
    "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk":
    "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si":
    "sinhala", "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan",
    "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi":
    "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen",
    "nn": "nynorsk", "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha":
    "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip


class DurationUsage(BaseModel):
    """Usage of a model billed by audio duration (whisper-1's kind)."""

    type: Literal["duration"] = "duration"
    seconds: float


class Transcription(BaseModel):
    """response_format "json"."""

    text: str
    usage: DurationUsage | None = None


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionVerbose(BaseModel):
    """response_format "verbose_json" (a translation's has no words)."""

    task: Literal["transcribe", "translate"]
    language: str = Field(description='The language in English words ("english"); a translation\'s is always english.')
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None
    usage: DurationUsage | None = None


class TranscriptTextDelta(BaseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptTextDone(BaseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
