"""Audio encoding shared by the speech backends.

`Encoder` takes mono samples (float in [-1, 1] or int16, numpy) segment by
segment and returns encoded bytes as soon as the codec has them, so that a
stream's pieces, concatenated, are one valid file:

- mp3 (MPEG audio frames), opus (Ogg Opus) and aac (ADTS) are encoded by one
  PyAV encoder that lives for the whole request and writes to a sink that
  cannot seek: nothing is patched afterwards, the stream is the file;
- wav: a header with the largest sizes (the length is not known yet), then
  16-bit PCM; when the whole audio is encoded at once the sizes are exact;
- pcm: OpenAI's raw format, 24 kHz signed 16-bit little-endian mono;
- flac carries its length in its first block, so it is always encoded whole
  (a stream sends it in one piece at the end) and decoders see its duration.

Opus runs only at 8/12/16/24/48 kHz, and mp3 and aac at their standard
rates: other rates are resampled (libswresample, through PyAV), keeping
state across segments. numpy and av are imported when an encoder is made.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from modelyard.adapters.base import AudioChunk, InvalidRequestError, SpeechRequest

FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",  # Ogg Opus; OpenAI labels it audio/opus
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
PCM_RATE = 24000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# format → (muxer, codec, muxer options)
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "mp3": ("mp3", "libmp3lame", {}),
    "opus": ("ogg", "libopus", {"page_duration": "100000"}),  # an Ogg page every 100 ms at most
    "aac": ("adts", "aac", {}),
    "flac": ("flac", "flac", {}),
}


def output_rate(fmt: str, rate: int) -> int:
    """The sample rate `fmt` is written at, for audio made at `rate`."""
    if fmt == "pcm":
        return PCM_RATE
    if fmt == "opus":
        return next((r for r in OPUS_RATES if r >= rate), 48000)
    if fmt in ("mp3", "aac") and rate not in MPEG_RATES:
        return next((r for r in MPEG_RATES if r >= rate), 48000)
    return rate


def wav_header(rate: int, data_bytes: int | None) -> bytes:
    """A 16-bit mono PCM WAV header; None: the length is unknown (largest sizes)."""
    data_size = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    riff_size = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data_size)
    )  # fmt: skip


class _Sink:
    """A write-only file for PyAV: what the muxer wrote since the last take()."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: Any) -> int:
        self.buffer += bytes(data)
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def as_float(samples: Any) -> Any:
    """Mono float32 in [-1, 1] from float or int16 samples, 1-D or (frames, channels)."""
    import numpy as np

    array = np.asarray(samples)
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    array = array.astype(np.float32, copy=False)
    if array.ndim == 2:
        array = array.mean(axis=1)
    return np.clip(array.reshape(-1), -1.0, 1.0)


def as_int16(samples: Any) -> Any:

    return (as_float(samples) * 32767.0).round().astype("<i2")


class Encoder:
    """Encode one request's audio, segment by segment.

    progressive=True: feed() returns what can be sent now; False: feed()
    returns nothing and finish() returns the whole file.
    """

    def __init__(self, fmt: str, rate: int, *, progressive: bool) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.format = fmt
        self.in_rate = rate
        self.rate = output_rate(fmt, rate)
        self.progressive = progressive and fmt != "flac"
        self._pending: list[bytes] = []  # encoded bytes not yet returned
        self._pcm_bytes = 0
        self._header_sent = False
        self._resampler: Any = None
        self._container: Any = None
        if fmt in CODECS:
            self._open_codec()
        elif self.rate != self.in_rate:
            import av

            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)

    def _open_codec(self) -> None:
        import io

        import av

        muxer, codec, options = CODECS[self.format]
        # Whole files go to a seekable buffer, so that the muxer can write
        # lengths into the header at the end.
        self._sink: Any = _Sink() if self.progressive else io.BytesIO()
        self._container = av.open(self._sink, mode="w", format=muxer, options=options)
        self._stream = self._container.add_stream(codec, rate=self.rate, layout="mono")
        self._resampler = av.AudioResampler(
            format=self._stream.codec_context.format.name, layout="mono", rate=self.rate
        )

    def _frames(self, samples: Any) -> Iterable[Any]:
        """Resampled frames; None flushes the resampler."""
        import av

        if samples is None:
            return list(self._resampler.resample(None))
        frame = av.AudioFrame.from_ndarray(as_float(samples)[None, :], format="flt", layout="mono")
        frame.sample_rate = self.in_rate
        return list(self._resampler.resample(frame))

    def _raw(self, samples: Any) -> bytes:
        """16-bit PCM at the output rate."""
        if self._resampler is None:
            return b"" if samples is None else bytes(as_int16(samples).tobytes())
        return b"".join(bytes(frame.to_ndarray().astype("<i2").tobytes()) for frame in self._frames(samples))

    def feed(self, samples: Any) -> bytes:
        if self._container is not None:
            for frame in self._frames(samples):
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            if self.progressive:
                self._pending.append(self._sink.take())
        else:
            data = self._raw(samples)
            self._pcm_bytes += len(data)
            if self.format == "wav" and self.progressive and not self._header_sent:
                self._header_sent = True
                self._pending.append(wav_header(self.rate, None))
            self._pending.append(data)
        return self._take() if self.progressive else b""

    def finish(self) -> bytes:
        if self._container is not None:
            for frame in self._frames(None):
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._pending.append(self._sink.take() if self.progressive else self._sink.getvalue())
        else:
            data = self._raw(None)
            self._pcm_bytes += len(data)
            self._pending.append(data)
            if self.format == "wav" and not self._header_sent:
                self._header_sent = True
                self._pending.insert(0, wav_header(self.rate, self._pcm_bytes))
        return self._take()

    def _take(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        return data


def encode(samples: Any, rate: int, fmt: str) -> bytes:
    """A whole file in `fmt` from one array of samples."""
    encoder = Encoder(fmt, rate, progressive=False)
    encoder.feed(samples)
    return encoder.finish()


def stream_segments(
    segments: Iterator[tuple[Any, int]], request: SpeechRequest, cancelled: threading.Event
) -> Iterator[AudioChunk]:
    """Encode (samples, rate) segments as a backend makes them (a sentence
    each, say) into the request's format; with request.stream, each piece is
    yielded as soon as it is encoded. Stops when `cancelled` is set."""
    encoder: Encoder | None = None
    try:
        for samples, rate in segments:
            if cancelled.is_set():
                return
            if len(samples) == 0:
                continue
            if encoder is None:
                encoder = Encoder(request.response_format, rate, progressive=request.stream)
            data = encoder.feed(samples)
            if data:
                yield AudioChunk(data, encoder.rate)
        if encoder is None:
            raise InvalidRequestError("The model found nothing to speak in this input.", param="input")
        data = encoder.finish()
        if data:
            yield AudioChunk(data, encoder.rate)
    finally:
        close = getattr(segments, "close", None)
        if close is not None:
            close()
