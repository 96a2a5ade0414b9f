"""Decoding an uploaded audio file for speech to text: any container and
codec PyAV (FFmpeg) reads, mixed down to mono and resampled to 16 kHz
float32 with PyAV's AudioResampler, which is what Whisper takes.

`decode` is blocking (FFmpeg work): the route runs it on a thread. It stops
as soon as the decoded audio passes `[limits] max_audio_seconds`, so a
small file that expands to hours costs no more than the limit. PyAV and
numpy are imported here, lazily: they come with the `transcription` extra,
which a server without a transcription model does not need.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from modelyard.adapters.base import TRANSCRIPTION_SAMPLE_RATE
from modelyard.router.errors import APIError, invalid_request
from modelyard.schemas.audio import AUDIO_EXTENSIONS

# A file part without a known extension is taken by its Content-Type.
CONTENT_TYPE_FORMATS = {
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "video/mp4": "mp4",
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/webm": "webm",
    "video/webm": "webm",
}


@dataclass
class DecodedAudio:
    samples: bytes  # little-endian float32, mono, TRANSCRIPTION_SAMPLE_RATE Hz
    duration: float  # seconds


def audio_format(filename: str, part_type: str | None) -> str:
    """The format the upload claims, from its file name (or Content-Type); a
    400 in OpenAI's words for any other."""
    extension = PurePosixPath(filename).suffix.lower().lstrip(".")
    if extension in AUDIO_EXTENSIONS:
        return extension
    by_type = CONTENT_TYPE_FORMATS.get((part_type or "").split(";")[0].strip().lower())
    if not extension and by_type is not None:
        return by_type
    supported = ", ".join(f"'{name}'" for name in AUDIO_EXTENSIONS)
    raise invalid_request(f"Invalid file format. Supported formats: [{supported}]", param="file", code="invalid_value")


def undecodable(fmt: str, detail: str) -> APIError:
    return invalid_request(
        f"Audio file might be corrupted or unsupported: could not decode the file as {fmt}: {detail}",
        param="file",
        code="invalid_value",
    )


def too_long(max_seconds: float) -> APIError:
    return invalid_request(
        f"The audio is longer than this server accepts ({max_seconds:g} seconds).", param="file", code="audio_too_long"
    )


# FFmpeg's demuxers for flac, mp3/mpeg/mpga, mp4/m4a, ogg, wav and webm (matroska), and raw aac.
DEMUXERS = "flac,mp3,mov,mp4,m4a,ogg,wav,matroska,webm,aac"
MIN_SAMPLE_RATE = 1000  # below it no speech is left, and resampling up would only inflate the samples


def decode(data: bytes, fmt: str, max_seconds: float) -> DecodedAudio:
    """The upload's first audio stream as 16 kHz mono float32 samples."""
    try:
        import av
        import numpy as np
    except ImportError as exc:
        raise APIError(
            500,
            f"Decoding audio needs PyAV and numpy, which are not installed: pip install 'modelyard[transcription]' ({exc})",
            code="missing_dependency",
        ) from None
    if not data:
        raise undecodable(fmt, "the file is empty")
    max_samples = int(max_seconds * TRANSCRIPTION_SAMPLE_RATE)
    pieces = []
    count = 0
    try:
        # Only the demuxers of OpenAI's upload formats: left to guess, FFmpeg
        # also takes playlists such as ffconcat, which open files on this machine.
        with av.open(io.BytesIO(data), mode="r", options={"format_whitelist": DEMUXERS}) as container:
            stream = next(iter(container.streams.audio), None)
            if stream is None:
                raise undecodable(fmt, "it holds no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=TRANSCRIPTION_SAMPLE_RATE)
            for frame in container.decode(stream):
                if frame.sample_rate < MIN_SAMPLE_RATE:
                    raise undecodable(fmt, f"its sample rate of {frame.sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz")
                # Resampling up multiplies the samples: check what this frame will become before it does.
                if count + frame.samples * TRANSCRIPTION_SAMPLE_RATE / frame.sample_rate > max_samples + TRANSCRIPTION_SAMPLE_RATE:
                    raise too_long(max_seconds)
                for out in resampler.resample(frame):
                    piece = out.to_ndarray().reshape(-1)
                    count += piece.size
                    if count > max_samples:
                        raise too_long(max_seconds)
                    pieces.append(piece)
            for out in resampler.resample(None):  # what the resampler still holds
                pieces.append(out.to_ndarray().reshape(-1))
    except APIError:
        raise
    except (av.FFmpegError, ValueError, EOFError, OSError) as exc:
        raise undecodable(fmt, str(exc) or type(exc).__name__) from None
    samples = np.concatenate(pieces).astype("<f4") if pieces else np.zeros(0, dtype="<f4")
    if samples.size == 0:
        raise undecodable(fmt, "no audio could be decoded from it")
    if samples.size > max_samples:
        raise too_long(max_seconds)
    return DecodedAudio(samples=samples.tobytes(), duration=samples.size / TRANSCRIPTION_SAMPLE_RATE)
