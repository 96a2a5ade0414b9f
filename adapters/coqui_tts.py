"""Coqui TTS (the maintained `coqui-tts` package, module `TTS`).

`source` is a model folder (a checkpoint and its config.json, as Coqui's
model downloads lay them out) or a checkpoint file with config.json beside
it. Models load through `TTS.utils.synthesizer.Synthesizer`, as Coqui's own
CLI and server do. Multi-speaker models list their speakers; multi-language
models take a voice as "speaker@language" (for example "p225@en").

Synthesis runs sentence by sentence (Coqui's own sentence splitter), each
sentence encoded and sent as soon as it is made. Coqui imports torchaudio;
where torchaudio cannot be imported (PyPI's Linux build needs CUDA torch),
`modelyard.adapters.coqui_torchaudio` stands in for what inference uses.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from modelyard.adapters.audio import stream_segments
from modelyard.adapters.base import AudioChunk, InvalidRequestError, ModelLoadError, SpeechAdapter, SpeechRequest
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("modelyard.coqui")

DEFAULT_SPEAKER = "default"  # the voice of a model that has no named speakers
CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth")


class CoquiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(
        default=None,
        description=(
            "When `source` is a folder: the checkpoint file in it. Unset: its only .pth file, else model.pth, "
            "model_file.pth, best_model.pth or checkpoint.pth, else the folder itself "
            "(models such as XTTS load from one)."
        ),
    )
    config: str = Field(default="config.json", description="The model's config, relative to the checkpoint's folder.")
    vocoder_checkpoint: str | None = Field(
        default=None,
        description="A separate vocoder's checkpoint (Tacotron, Glow-TTS...), relative to the model's folder.",
    )
    vocoder_config: str | None = Field(
        default=None, description="The vocoder's config; needed with vocoder_checkpoint."
    )
    language: str | None = Field(
        default=None,
        description="Multi-language models: the language of voices that name none (default: the model's first).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="cpu", description='"cpu", "cuda", or "auto" (cuda when present).'
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (default: torch's choice).")
    sentence_silence: float = Field(default=0.2, ge=0, le=5, description="Seconds of silence between sentences.")


def find_checkpoint(path: Path, options: CoquiOptions) -> tuple[Path, Path]:
    if path.is_dir():
        if options.checkpoint is not None:
            checkpoint = path / options.checkpoint
        else:
            files = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt", ".tar"))
            named = [path / name for name in CHECKPOINT_NAMES if (path / name).is_file()]
            checkpoint = files[0] if len(files) == 1 else named[0] if named else path
    else:
        checkpoint = path
    if not checkpoint.exists():
        raise ModelLoadError(f"Coqui checkpoint not found: {checkpoint}")
    config = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / options.config
    if not config.is_file():
        raise ModelLoadError(f"Coqui model config not found: {config} (set options.config)")
    return checkpoint, config


def import_synthesizer() -> Any:
    from modelyard.adapters.coqui_torchaudio import prepare

    if importlib.util.find_spec("TTS") is None:
        raise ModelLoadError(
            "backend 'coqui-tts' needs the coqui-tts package; install it with: pip install 'modelyard[coqui]'"
        )
    reason = prepare()
    if reason is not None:
        log.warning("torchaudio is unavailable (%s); running Coqui TTS with modelyard's stand-in", reason)
    try:
        from TTS.utils.synthesizer import Synthesizer
    except ImportError as exc:
        raise ModelLoadError(f"cannot import Coqui TTS: {exc}".strip()) from None
    return Synthesizer


class CoquiSpeech(SpeechAdapter):
    Options = CoquiOptions
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, CoquiOptions)
        import torch

        self.options = options
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        use_cuda = options.device == "cuda" or (options.device == "auto" and torch.cuda.is_available())
        checkpoint, config = find_checkpoint(path, options)
        folder = path if path.is_dir() else path.parent
        vocoder: dict[str, Any] = {}
        if options.vocoder_checkpoint is not None:
            if options.vocoder_config is None:
                raise ModelLoadError("options.vocoder_checkpoint needs options.vocoder_config")
            vocoder = {
                "vocoder_checkpoint": str(folder / options.vocoder_checkpoint),
                "vocoder_config": str(folder / options.vocoder_config),
            }
        Synthesizer = import_synthesizer()
        try:
            self.synth: Any = Synthesizer(
                tts_checkpoint=str(checkpoint), tts_config_path=str(config), use_cuda=use_cuda, **vocoder
            )
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"Coqui TTS could not load {checkpoint}: {type(exc).__name__}: {exc}") from None
        model = self.synth.tts_model
        manager = getattr(model, "speaker_manager", None)
        names = list(manager.speaker_names) if manager is not None and manager.speaker_names else []
        self.speaker_names: list[str] = [str(n) for n in names]
        languages = getattr(model, "language_manager", None)
        self.languages: list[str] = [str(n) for n in languages.language_names] if languages is not None else []
        if options.language is not None and self.languages and options.language not in self.languages:
            raise ModelLoadError(
                f"options.language {options.language!r} is not one of the model's: {', '.join(self.languages)}"
            )
        self.language = options.language or (self.languages[0] if self.languages else None)
        self.sample_rate = int(self.synth.output_sample_rate)

    def speakers(self) -> list[str]:
        names = self.speaker_names or [DEFAULT_SPEAKER]
        if len(self.languages) < 2:
            return names
        return names + [f"{name}@{language}" for name in names for language in self.languages]

    def _voice(self, voice: str) -> tuple[str | None, str | None]:
        if voice not in self.speakers():
            shown = self.speakers()
            more = f" (and {len(shown) - 20} more)" if len(shown) > 20 else ""
            raise InvalidRequestError(
                f"Unknown voice '{voice}'. This model's speakers: {', '.join(shown[:20])}{more}.", param="voice"
            )
        name, _, language = voice.partition("@")
        return (None if not self.speaker_names else name), (language or self.language)

    def synthesize(self, request: SpeechRequest, cancelled: threading.Event) -> Iterator[AudioChunk]:
        speaker, language = self._voice(request.voice)
        return stream_segments(self._sentences(request, speaker, language), request, cancelled)

    def _sentences(
        self, request: SpeechRequest, speaker: str | None, language: str | None
    ) -> Iterator[tuple[Any, int]]:
        import numpy as np

        model = self.synth.tts_model
        stretch = not isinstance(getattr(model, "length_scale", None), (int, float))
        base = None if stretch else model.length_scale
        gap = np.zeros(int(self.options.sentence_silence * self.sample_rate), dtype=np.float32)
        sentences = [s for s in self.synth.split_into_sentences(request.text, language) if s.strip()]
        try:
            if base is not None:
                model.length_scale = base / request.speed
            for index, sentence in enumerate(sentences):
                wav = np.asarray(
                    self.synth.tts(sentence, speaker_name=speaker, language_name=language, split_sentences=False),
                    dtype=np.float32,
                )
                # Synthesizer.tts pads every sentence with silence; the gap below replaces it.
                wav = np.trim_zeros(wav, "b")
                if stretch and request.speed != 1.0 and wav.size:
                    import librosa

                    wav = librosa.effects.time_stretch(wav, rate=request.speed)
                if index and gap.size:
                    wav = np.concatenate([gap, wav])
                yield wav, self.sample_rate
        finally:
            if base is not None:
                model.length_scale = base
