"""Piper (piper-tts): fast local voices, an ONNX model plus its .onnx.json.

`source` is the .onnx file, or a folder holding one. Synthesis runs sentence
by sentence (Piper phonemizes with its bundled espeak-ng and splits the text
into sentences), and each sentence is encoded and sent as soon as it is made.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelyard.adapters.audio import stream_segments
from modelyard.adapters.base import AudioChunk, InvalidRequestError, ModelLoadError, SpeechAdapter, SpeechRequest
from pydantic import BaseModel, ConfigDict, Field


class PiperOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_file: str | None = Field(
        default=None,
        description="When `source` is a folder: the .onnx file in it. Unset: the folder must hold exactly one.",
    )
    config: str | None = Field(
        default=None,
        description="The voice's JSON config, relative to the model's folder. Unset: the model file's name + .json.",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for onnxruntime (default: its choice).")
    use_cuda: bool = Field(default=False, description="Run on a GPU (needs onnxruntime-gpu).")
    length_scale: float | None = Field(
        default=None,
        gt=0,
        description="Phoneme length at speed 1.0 (default: the voice's); a request's `speed` divides it.",
    )
    noise_scale: float | None = Field(
        default=None, ge=0, description="Generator noise (default: the voice's). 0 makes the audio repeatable."
    )
    noise_w: float | None = Field(
        default=None, ge=0, description="Phoneme duration noise (default: the voice's). 0 makes durations repeatable."
    )
    sentence_silence: float = Field(default=0.2, ge=0, le=5, description="Seconds of silence between sentences.")
    mem_reuse: bool = Field(
        default=False,
        description=(
            "Let onnxruntime plan memory reuse: synthesis is about 10% faster, but loading a voice "
            "takes several times longer (seen: 8 s instead of 2 s)."
        ),
    )


def find_model(path: Path, options: PiperOptions) -> tuple[Path, Path]:
    """The .onnx file and its config for a source path (a file or a folder)."""
    if path.is_dir():
        if options.model_file is not None:
            model = path / options.model_file
        else:
            candidates = sorted(path.glob("*.onnx"))
            if len(candidates) != 1:
                found = ", ".join(c.name for c in candidates) or "none"
                raise ModelLoadError(
                    f"{path} should hold exactly one .onnx voice (found: {found}); set options.model_file"
                )
            model = candidates[0]
    else:
        model = path
    config = model.parent / options.config if options.config is not None else model.with_name(model.name + ".json")
    for required in (model, config):
        if not required.is_file():
            raise ModelLoadError(f"Piper voice file not found: {required}")
    return model, config


class PiperSpeech(SpeechAdapter):
    Options = PiperOptions
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, PiperOptions)
        import onnxruntime
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        self.options = options
        model, config_path = find_model(path, options)
        try:
            config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
            piper_config = PiperConfig.from_dict(config)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"cannot read the Piper voice config {config_path}: {type(exc).__name__}: {exc}"
            ) from None
        session_options = onnxruntime.SessionOptions()
        if options.threads is not None:
            session_options.intra_op_num_threads = options.threads
            session_options.inter_op_num_threads = options.threads
        session_options.enable_mem_reuse = options.mem_reuse
        providers = ["CUDAExecutionProvider"] if options.use_cuda else ["CPUExecutionProvider"]
        try:
            session = onnxruntime.InferenceSession(str(model), sess_options=session_options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not load {model}: {type(exc).__name__}: {exc}") from None
        self.voice: Any = PiperVoice(session=session, config=piper_config)
        self.sample_rate = piper_config.sample_rate
        if piper_config.num_speakers > 1:
            ids = dict(piper_config.speaker_id_map) or {str(i): i for i in range(piper_config.num_speakers)}
            self.speaker_ids: dict[str, int | None] = dict(sorted(ids.items(), key=lambda item: item[1]))
        else:
            # A single-speaker voice: named after its dataset ("joe"), else its file.
            name = str(config.get("dataset") or model.name.removesuffix(".onnx"))
            self.speaker_ids = {name: None}

    def speakers(self) -> list[str]:
        return list(self.speaker_ids)

    def synthesize(self, request: SpeechRequest, cancelled: threading.Event) -> Iterator[AudioChunk]:
        if request.voice not in self.speaker_ids:
            raise InvalidRequestError(
                f"Unknown voice '{request.voice}'. This voice has the speakers: {', '.join(self.speaker_ids)}.",
                param="voice",
            )
        return stream_segments(self._sentences(request), request, cancelled)

    def _sentences(self, request: SpeechRequest) -> Iterator[tuple[Any, int]]:
        import numpy as np
        from piper.config import SynthesisConfig

        base = self.options.length_scale or self.voice.config.length_scale
        syn_config = SynthesisConfig(
            speaker_id=self.speaker_ids[request.voice],
            length_scale=base / request.speed,
            noise_scale=self.options.noise_scale,
            noise_w_scale=self.options.noise_w,
        )
        gap = np.zeros(int(self.options.sentence_silence * self.sample_rate), dtype=np.float32)
        for index, chunk in enumerate(self.voice.synthesize(request.text, syn_config)):
            audio = chunk.audio_float_array
            if index and gap.size:
                audio = np.concatenate([gap, audio])
            yield audio, chunk.sample_rate
