"""faster-whisper: Whisper speech to text on CTranslate2.

`source` is a CTranslate2 Whisper folder (model.bin, config.json,
tokenizer.json, vocabulary.json), as `hf:Systran/faster-whisper-base` or a
`join:` of the packages that carry one. The router hands over decoded 16 kHz
mono samples; faster-whisper decodes them window by window (30 s each) and
each segment goes back as soon as it is decoded, so a stream shows text
while later windows are still being worked on, and a cancelled request
stops at the next segment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from modelyard.adapters.base import (
    InvalidRequestError,
    ModelLoadError,
    TranscribedSegment,
    TranscribedWord,
    TranscriptionAdapter,
    TranscriptionEvent,
    TranscriptionInfo,
    TranscriptionRequest,
)
from pydantic import BaseModel, ConfigDict, Field

# Whisper's fallback: a segment that fails its checks (repetition, low
# log probability) is decoded again at the next temperature, up to 1.0.
TEMPERATURE_STEP = 0.2


class FasterWhisperOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="Where CTranslate2 runs the model.")
    compute_type: str = Field(
        default="int8",
        description='CTranslate2 compute type: "int8" (fast on CPU; float16 weights are quantized as they load), '
        '"int8_float32", "float32", "float16" (GPU), "default" (as the weights were saved).',
    )
    cpu_threads: int | None = Field(
        default=None, ge=1, description="CPU threads of one transcription (default: CTranslate2's, at most 4)."
    )
    beam_size: int = Field(default=5, ge=1, le=16, description="Beam search width at temperature 0 (1: greedy).")
    vad_filter: bool = Field(
        default=False,
        description="Skip the stretches Silero VAD finds silent before decoding (faster on audio with long pauses).",
    )
    condition_on_previous_text: bool = Field(
        default=True,
        description="Give each window the text of the one before as its prompt (Whisper's default; off avoids "
        "a repetition carrying over).",
    )


def temperatures(start: float) -> list[float]:
    """The temperatures a segment may be decoded at: the request's, then
    higher ones on failure, as OpenAI's (and whisper's own CLI) do."""
    steps = [round(start + TEMPERATURE_STEP * n, 2) for n in range(int((1.0 - start) / TEMPERATURE_STEP + 1e-9) + 1)]
    return steps or [start]


class FasterWhisperTranscription(TranscriptionAdapter):
    Options = FasterWhisperOptions
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, FasterWhisperOptions)
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        self.options = options
        if not (path / "model.bin").is_file():
            raise ModelLoadError(f"{path} is not a CTranslate2 Whisper folder (it has no model.bin)")
        try:
            self.model: Any = WhisperModel(
                str(path),
                device=options.device,
                compute_type=options.compute_type,
                cpu_threads=options.cpu_threads or 0,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(f"faster-whisper could not load {path}: {type(exc).__name__}: {exc}") from None
        self.languages: frozenset[str] = frozenset(_LANGUAGE_CODES)

    def transcribe(self, request: TranscriptionRequest, cancelled: threading.Event) -> Iterator[TranscriptionEvent]:
        import numpy as np

        language = request.language.lower() if request.language else None
        if language is not None and language not in self.languages:
            raise InvalidRequestError(
                f"Invalid language '{request.language}'. Language parameter must be specified in ISO-639-1 format.",
                param="language",
            )
        if not self.model.model.is_multilingual:
            if request.task == "translate":
                raise InvalidRequestError("This model is English-only: it cannot translate.", param="model")
            if language not in (None, "en"):
                raise InvalidRequestError(
                    f"This model is English-only: it cannot transcribe the language '{request.language}'.",
                    param="language",
                )
        audio = np.frombuffer(request.samples, dtype="<f4")
        return self._events(audio, request, language, cancelled)

    def _events(
        self, audio: Any, request: TranscriptionRequest, language: str | None, cancelled: threading.Event
    ) -> Iterator[TranscriptionEvent]:
        segments, info = self.model.transcribe(
            audio,
            language=language,
            task=request.task,
            beam_size=self.options.beam_size,
            temperature=temperatures(request.temperature),
            initial_prompt=request.prompt or None,
            word_timestamps=request.word_timestamps,
            vad_filter=self.options.vad_filter,
            condition_on_previous_text=self.options.condition_on_previous_text,
        )
        yield TranscriptionInfo(language=info.language, duration=float(info.duration))
        for index, segment in enumerate(segments):
            words = None
            if request.word_timestamps:
                words = [
                    TranscribedWord(word=w.word, start=float(w.start), end=float(w.end), probability=float(w.probability))
                    for w in segment.words or ()
                ]
            yield TranscribedSegment(
                id=index,
                seek=int(segment.seek),
                start=float(segment.start),
                end=float(segment.end),
                text=segment.text,
                tokens=[int(t) for t in segment.tokens],
                temperature=float(segment.temperature or 0.0),
                avg_logprob=float(segment.avg_logprob),
                compression_ratio=float(segment.compression_ratio),
                no_speech_prob=float(segment.no_speech_prob),
                words=words,
            )
            if cancelled.is_set():  # the worker checks too; stop decoding the next window here
                return
