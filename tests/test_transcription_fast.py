"""The speech-to-text routes' own logic, with no model: the scripted
backend's transcription model (one segment per second of audio) behind a
real server. Uploads, fields, limits, every response_format and the stream;
the `join:` source that builds the default Whisper folder from packages;
the web UI's Transcribe tab in a real headless Chromium (uploads, every
format, the stream, errors, a recording from Chromium's fake microphone).
(tests/test_transcription.py runs Whisper itself.)"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile
from modelyard.adapters import sources
from modelyard.router.config import ConfigError, load_config
from modelyard.router.transcription import srt, timestamp, vtt

from tests.conftest import scripted_model_toml
from tests.ui_browser import browser_unavailable

MAX_AUDIO_BYTES = 256 * 1024
MAX_AUDIO_SECONDS = 30


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    config = (
        f'[server]\nbody_limit = "64KiB"\n\n[limits]\nmax_audio_bytes = {MAX_AUDIO_BYTES}\n'
        f"max_audio_seconds = {MAX_AUDIO_SECONDS}\n\n"
        + scripted_model_toml("listener", "transcription", aliases=["whisper-1"])
        + scripted_model_toml("echo-ear", "transcription", options="echo = true")
        + scripted_model_toml("slow-ear", "transcription", options="token_delay = 0.3")
        + scripted_model_toml("chatty", "chat")
    )
    return server_factory(config)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def wav(seconds: float, rate: int = 8000, channels: int = 1, level: float = 0.0) -> bytes:
    out = io.BytesIO()
    frames = np.full((int(seconds * rate), channels), level, dtype=np.float32)
    soundfile.write(out, frames, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


THREE_SECONDS = wav(2.5)  # three segments: 0-1, 1-2, 2-2.5


def post(server: Any, data: bytes, name: str = "a.wav", path: str = "transcriptions", **fields: Any) -> httpx.Response:
    fields.setdefault("model", "listener")
    return httpx.post(f"{server.base_url}/v1/audio/{path}", files={"file": (name, data)}, data=fields, timeout=60)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


# --- formats -----------------------------------------------------------------------


def test_json_is_the_text_and_the_duration(client: openai.OpenAI) -> None:
    transcript = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", THREE_SECONDS))
    assert transcript.text == "second 1. second 2. second 3."
    assert transcript.usage is not None and transcript.usage.type == "duration" and transcript.usage.seconds == 2.5


def test_text_srt_vtt(server: Any) -> None:
    text = post(server, THREE_SECONDS, response_format="text")
    assert text.headers["content-type"].startswith("text/plain") and text.text == "second 1. second 2. second 3.\n"
    subtitles = post(server, THREE_SECONDS, response_format="srt")
    assert subtitles.headers["content-type"].startswith("application/x-subrip")
    assert subtitles.text == (
        "1\n00:00:00,000 --> 00:00:01,000\nsecond 1.\n\n"
        "2\n00:00:01,000 --> 00:00:02,000\nsecond 2.\n\n"
        "3\n00:00:02,000 --> 00:00:02,500\nsecond 3.\n\n"
    )
    web = post(server, THREE_SECONDS, response_format="vtt")
    assert web.headers["content-type"].startswith("text/vtt")
    assert web.text == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nsecond 1.\n\n"
        "00:00:01.000 --> 00:00:02.000\nsecond 2.\n\n00:00:02.000 --> 00:00:02.500\nsecond 3.\n\n"
    )


def test_timestamps_past_an_hour() -> None:
    assert timestamp(3723.4567, ",") == "01:02:03,457"
    assert timestamp(-0.001, ".") == "00:00:00.000"
    assert srt([]) == "" and vtt([]) == "WEBVTT\n\n"


def test_verbose_json_segments_and_words(client: openai.OpenAI) -> None:
    verbose = client.audio.transcriptions.create(
        model="listener", file=("a.wav", THREE_SECONDS), response_format="verbose_json", language="de"
    )
    assert (verbose.language, verbose.duration, verbose.words) == ("german", 2.5, None)
    assert [(s.id, s.start, s.end, s.text) for s in verbose.segments or []] == [
        (0, 0.0, 1.0, " second 1."),
        (1, 1.0, 2.0, " second 2."),
        (2, 2.0, 2.5, " second 3."),
    ]
    both = client.audio.transcriptions.create(
        model="listener",
        file=("a.wav", THREE_SECONDS),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert both.segments and [(w.word, w.start, w.end) for w in both.words or []][:2] == [("second", 0.0, 0.5), ("1.", 0.5, 1.0)]
    words = client.audio.transcriptions.create(
        model="listener", file=("a.wav", THREE_SECONDS), response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert words.segments is None and len(words.words or []) == 6


def test_stream(client: openai.OpenAI) -> None:
    events = list(client.audio.transcriptions.create(model="listener", file=("a.wav", THREE_SECONDS), stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    assert [e.delta for e in events[:3]] == ["second 1.", " second 2.", " second 3."]  # type: ignore[union-attr]
    assert events[-1].text == "second 1. second 2. second 3."  # type: ignore[union-attr]


def test_stream_cut_off_by_the_client_stops_the_model(server: Any) -> None:
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("long.wav", wav(20, rate=2000))},
        data={"model": "slow-ear", "stream": "true"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first[len("data: ") :]) == {"type": "transcript.text.delta", "delta": "second 1."}
    # 20 segments at 0.3 s would take 6 s; the worker is free again long before.
    server.wait_for(lambda h: h["models"]["slow-ear"]["inflight"] == 0, timeout=3, what="the stream's call to end")


def test_translation(client: openai.OpenAI, server: Any) -> None:
    translation = client.audio.translations.create(model="listener", file=("a.wav", THREE_SECONDS))
    assert translation.text == "second 1. second 2. second 3." and "usage" not in translation.model_dump(exclude_none=True)
    verbose = post(server, THREE_SECONDS, path="translations", response_format="verbose_json").json()
    assert (verbose["task"], verbose["language"], "words" in verbose, "usage" in verbose) == ("translate", "english", False, False)


# --- what reaches the model -------------------------------------------------------------


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    sent: dict[str, Any] = json.loads(response.json()["text"])
    return sent


def test_fields_reach_the_adapter(server: Any) -> None:
    sent = echoed(
        post(
            server, wav(1.0, level=0.5), model="echo-ear", language="FR", prompt="Bonjour.", temperature="0.4",
            response_format="json",
        )  # fmt: skip
    )
    assert sent == {
        "samples": 16000, "peak": 0.5, "task": "transcribe", "language": "fr", "prompt": "Bonjour.",
        "temperature": 0.4, "word_timestamps": False,
    }  # fmt: skip
    translated = echoed(post(server, wav(0.5), path="translations", model="echo-ear", temperature="0"))
    assert (translated["task"], translated["language"], translated["temperature"]) == ("translate", None, 0.0)


def test_audio_is_resampled_to_16k_mono(server: Any) -> None:
    stereo_44k = wav(0.5, rate=44100, channels=2, level=0.25)
    sent = echoed(post(server, stereo_44k, model="echo-ear"))
    # FFmpeg's stereo downmix (1/sqrt(2) per channel), as whisper's own `ffmpeg -ac 1` loader gives.
    assert sent["samples"] == 8000 and sent["peak"] == round(0.25 * 2**0.5, 3)
    flac = io.BytesIO()
    soundfile.write(flac, np.full(24000, 0.125, dtype=np.float32), 48000, format="FLAC")
    assert echoed(post(server, flac.getvalue(), name="a.flac", model="echo-ear"))["samples"] == 8000


def test_an_adapter_refusal_is_a_400(server: Any) -> None:
    # The scripted model refuses language "xx"; the router's own check takes Whisper's languages only.
    error = error_of(post(server, THREE_SECONDS, language="xx"), 400)
    assert error["param"] == "language" and "ISO-639-1" in error["message"]


# --- limits, all before the model --------------------------------------------------------


def test_audio_is_held_to_max_audio_bytes_not_body_limit(server: Any) -> None:
    above_body_limit = wav(10)  # 160 KB: over the 64 KiB body_limit, under max_audio_bytes
    assert 64 * 1024 < len(above_body_limit) < MAX_AUDIO_BYTES
    assert post(server, above_body_limit).json()["text"].endswith("second 10.")
    error = error_of(post(server, b"\0" * (MAX_AUDIO_BYTES + 1)), 413)
    assert error["code"] == "file_too_large" and str(MAX_AUDIO_BYTES) in error["message"]


def test_bytes_sent_after_the_file_count_toward_the_limit(server: Any) -> None:
    # The multipart parser drops what follows the closing boundary: a client could send it without end.
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nlistener\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n").encode()
    closing = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        yield head + wav(1) + closing
        for _ in range(2 * MAX_AUDIO_BYTES // 65536 + 2):
            yield b"\r\n" + b"x" * 65534

    response = httpx.post(f"{server.base_url}/v1/audio/transcriptions", content=body(), timeout=60,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert error_of(response, 413)["code"] == "file_too_large"


def test_over_duration(server: Any) -> None:
    error = error_of(post(server, wav(MAX_AUDIO_SECONDS + 1, rate=2000)), 400)
    assert (error["code"], error["param"]) == ("audio_too_long", "file")


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("a.mp3", b"\xff\xfb" + b"not really an mp3 " * 50, "could not decode the file as mp3"),
        ("a.wav", b"", "could not decode the file as wav: the file is empty"),
        ("a.ogg", b"OggS" + b"\0" * 100, "could not decode the file as ogg"),
        ("a.txt", b"hello", "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"),
        ("noext", b"hello", "Invalid file format."),
    ],
)
def test_files_that_are_not_audio(server: Any, name: str, data: bytes, needle: str) -> None:
    error = error_of(post(server, data, name=name), 400)
    assert needle in error["message"] and error["param"] == "file", error


def test_a_name_without_extension_is_taken_by_its_content_type(server: Any) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("recording", THREE_SECONDS, "audio/wav")},
        data={"model": "listener"},
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["text"].startswith("second 1.")


def test_not_multipart_and_missing_file(server: Any) -> None:
    error = error_of(httpx.post(f"{server.base_url}/v1/audio/transcriptions", json={"model": "listener"}), 400)
    assert error["code"] == "invalid_content_type" and "'file' part" in error["message"]
    error = error_of(
        httpx.post(f"{server.base_url}/v1/audio/transcriptions", files={"other": ("x", b"1")}, data={"model": "listener"}),
        400,
    )
    assert error["message"] == "Missing required parameter: 'file'."


def test_models_of_other_modalities_and_unknown_models(server: Any) -> None:
    error = error_of(post(server, THREE_SECONDS, model="chatty"), 400)
    assert error["code"] == "model_modality_mismatch" and "needs a transcription model" in error["message"]
    error = error_of(post(server, THREE_SECONDS, path="translations", model="nobody"), 404)
    assert error["code"] == "model_not_found"
    assert post(server, THREE_SECONDS, model="default").status_code == 200  # the first transcription model


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"response_format": "yaml"}, "response_format", "invalid_value"),
        ({"temperature": "-0.1"}, "temperature", "invalid_value"),
        ({"stream": "maybe"}, "stream", "invalid_type"),
        ({"stream": "true", "response_format": "verbose_json"}, "stream", None),
        ({"timestamp_granularities[]": "segment"}, "timestamp_granularities", None),
        ({"include[]": "logprobs"}, "include", "unsupported_parameter"),
        ({"keywords[]": "modelyard"}, "keywords", "unsupported_parameter"),
        ({"chunking_strategy[type]": "client_vad"}, "chunking_strategy.type", None),
        ({"bogus": "1"}, "bogus", None),
    ],
)
def test_bad_fields(server: Any, fields: dict[str, str], param: str, code: str | None) -> None:
    error = error_of(post(server, THREE_SECONDS, **fields), 400)
    assert (error["param"], error["code"]) == (param, code), error


def test_translations_refuse_transcription_fields(server: Any) -> None:
    for name in ("language", "stream", "timestamp_granularities[]"):
        error = error_of(post(server, THREE_SECONDS, path="translations", **{name: "en"}), 400)
        assert error["message"] == f"Unrecognized request argument supplied: {name}"


def test_ignored_fields(server: Any) -> None:
    for extra in (
        {"chunking_strategy": "auto"},
        {"chunking_strategy": '{"type": "server_vad", "threshold": 0.3}'},
        {"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "300"},
        {"stream": "false", "timestamp_granularities[]": "segment", "response_format": "verbose_json"},
    ):
        response = post(server, THREE_SECONDS, **extra)
        assert response.status_code == 200, (extra, response.text)
        assert response.json()["text"] == "second 1. second 2. second 3."


# --- the join: source ----------------------------------------------------------------------


@pytest.fixture
def split_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two importable packages that carry one model folder between them."""
    site = tmp_path / "site"
    first, second = site / "weights_a" / "data", site / "weights_b" / "data"
    for folder in (first, second):
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
    (first / "model.bin.part1").write_bytes(b"AAAA")
    (second / "model.bin.part2").write_bytes(b"BB")
    (second / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MODELYARD_CACHE", str(tmp_path / "cache"))
    return site


SOURCE = "join:weights_a/data+weights_b/data"


def test_join_builds_the_folder_once(split_packages: Path) -> None:
    built = sources.join(SOURCE)
    assert sorted(p.name for p in built.iterdir()) == ["config.json", "model.bin"]
    assert (built / "model.bin").read_bytes() == b"AAAABB"
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary folder left
    (built / "model.bin").write_bytes(b"reused")
    assert sources.join(SOURCE) == built and (built / "model.bin").read_bytes() == b"reused"
    assert "weights_a" not in sys.modules  # found, never imported
    # A new version of a part is a new folder.
    (split_packages / "weights_b" / "data" / "model.bin.part2").write_bytes(b"BBB")
    rebuilt = sources.join(SOURCE)
    assert rebuilt != built and (rebuilt / "model.bin").read_bytes() == b"AAAABBB"


def test_join_removes_what_a_dead_build_left(split_packages: Path) -> None:
    built = sources.join(SOURCE)
    shutil.rmtree(built)
    stale, fresh = built.parent / f".{built.name}.dead1", built.parent / f".{built.name}.busy2"
    for leftover in (stale, fresh):
        leftover.mkdir()
        (leftover / "model.bin").write_bytes(b"half")
    long_ago = time.time() - sources.STALE_BUILD_SECONDS - 60
    for path in (stale, stale / "model.bin"):
        os.utime(path, (long_ago, long_ago))
    assert (sources.join(SOURCE) / "model.bin").read_bytes() == b"AAAABB"
    assert not stale.exists() and fresh.exists()  # another worker's build in progress is left alone


def test_join_refuses_gaps_and_doubles(split_packages: Path) -> None:
    (split_packages / "weights_b" / "data" / "model.bin.part3").write_bytes(b"C")
    (split_packages / "weights_b" / "data" / "model.bin.part2").unlink()
    with pytest.raises(sources.SourceError, match="model.bin lacks part 2"):
        sources.check_join(SOURCE)
    (split_packages / "weights_a" / "data" / "model.bin.part2").write_bytes(b"B")
    (split_packages / "weights_a" / "data" / "config.json").write_text("{}")
    with pytest.raises(sources.SourceError, match="config.json is carried twice"):
        sources.check_join(SOURCE)


def test_join_source_is_checked_when_the_config_loads(split_packages: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    model = scripted_model_toml("ear", "transcription").replace('source = "package:modelyard_scripted/weights.txt"', 'source = "SRC"')
    config.write_text(model.replace("SRC", SOURCE))
    loaded = load_config(config)
    assert loaded.model_path(loaded.config.models[0]) is None  # built in the worker
    config.write_text(model.replace("SRC", "join:weights_a/data+no_such_weights_xyz/data"))
    with pytest.raises(ConfigError, match="no_such_weights_xyz"):
        load_config(config)


# --- the web UI's transcribe tab (a real headless Chromium) ----------------------------

UI_SKIP = pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable()))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.ui_browser import FAKE_MICROPHONE_ARGS, launched_browser

    with launched_browser(FAKE_MICROPHONE_ARGS) as launched:
        yield launched


def finished_status(page: Any) -> str:
    """The status line once the request is over (no longer busy)."""
    page.wait_for_selector("#stt-status:not(.status-busy):not(:empty)")
    text: str = page.locator("#stt-status").inner_text()
    return text


def choose_file(page: Any, name: str, data: bytes) -> None:
    page.set_input_files("#stt-file", files=[{"name": name, "mimeType": "audio/wav", "buffer": data}])


def transcribe_in_ui(page: Any) -> str:
    page.click("#stt-run")
    return finished_status(page)


@UI_SKIP
def test_ui_transcribes_a_file_plain_streamed_subtitles_and_segments(server: Any, browser: Any) -> None:
    from tests.ui_browser import ui_page

    uploads: list[str] = []
    with ui_page(browser, server.base_url, path="/ui/#transcribe") as page:
        page.on("request", lambda r: uploads.append(r.post_data or "") if "/v1/audio/" in r.url else None)
        assert page.locator("#panel-transcribe").is_visible() and page.locator("#stt-record").is_visible()
        options = page.locator("#stt-model option").all_inner_texts()
        assert options == ["listener", "echo-ear", "slow-ear"], options  # transcription models only
        page.select_option("#stt-model", "listener")
        choose_file(page, "three.wav", THREE_SECONDS)
        assert "three.wav" in page.locator("#stt-source").inner_text()
        assert page.locator("#stt-preview audio").count() == 1

        status = transcribe_in_ui(page)
        assert status.startswith("Transcribed by listener"), status
        assert page.locator("#stt-text").inner_text() == "second 1. second 2. second 3."
        assert 'name="response_format"\r\n\r\ntext' in uploads[-1] and 'name="stream"' not in uploads[-1]

        # Streamed from the slow model (0.3 s a segment): the text grows delta by delta.
        page.select_option("#stt-model", "slow-ear")
        page.check("#stt-stream")
        page.evaluate(
            """() => {
              window.seenTexts = [];
              new MutationObserver(() => {
                const block = document.getElementById("stt-text");
                if (block && window.seenTexts.at(-1) !== block.textContent) window.seenTexts.push(block.textContent);
              }).observe(document.getElementById("stt-result"), { subtree: true, childList: true,
                                                                 characterData: true });
            }"""
        )
        status = transcribe_in_ui(page)
        assert status.startswith("Transcribed by slow-ear"), status
        assert 'name="stream"\r\n\r\ntrue' in uploads[-1]
        seen = page.evaluate("window.seenTexts")
        assert seen[-1] == "second 1. second 2. second 3.", seen
        assert "second 1." in seen and "second 1. second 2." in seen, seen  # two states before the last

        # Subtitles and verbose_json need the whole answer: streaming is switched off.
        page.select_option("#stt-model", "listener")
        page.select_option("#stt-format", "srt")
        assert page.locator("#stt-stream").is_disabled() and not page.locator("#stt-stream").is_checked()
        transcribe_in_ui(page)
        assert "00:00:01,000 --> 00:00:02,000\nsecond 2." in page.locator("#stt-text").inner_text()
        assert page.locator("#stt-download").get_attribute("download") == "transcript.srt"

        page.select_option("#stt-format", "verbose_json")
        page.fill("#stt-language", "de")
        transcribe_in_ui(page)
        rows = [row.locator("td").all_inner_texts() for row in page.locator("#stt-segments tbody tr").all()]
        assert rows == [
            ["0:00.00", "0:01.00", "second 1."],
            ["0:01.00", "0:02.00", "second 2."],
            ["0:02.00", "0:02.50", "second 3."],
        ], rows
        assert "language: german" in page.locator("#stt-result .meta").inner_text()

        # Translation: no language field (the route refuses one), another endpoint.
        page.select_option("#stt-task", "translate")
        assert page.locator("#stt-language").is_disabled() and page.locator("#stt-run").inner_text() == "Translate"
        page.select_option("#stt-format", "text")
        assert page.locator("#stt-stream").is_disabled()
        status = transcribe_in_ui(page)
        assert status.startswith("Translated by listener"), status
        assert page.locator("#stt-text").inner_text() == "second 1. second 2. second 3."
        assert 'name="language"' not in uploads[-1]
        assert page.outside.blocked == [] and page.console_errors == []


@UI_SKIP
def test_ui_shows_the_servers_errors(server: Any, browser: Any) -> None:
    from tests.ui_browser import ui_page

    with ui_page(browser, server.base_url, path="/ui/#transcribe") as page:
        page.click("#stt-run")
        assert "Choose an audio file" in finished_status(page)
        choose_file(page, "three.wav", THREE_SECONDS)
        assert transcribe_in_ui(page).startswith("Transcribed by")
        choose_file(page, "broken.wav", b"RIFF" + b"\x01" * 200)
        status = transcribe_in_ui(page)
        assert page.locator("#stt-status").get_attribute("role") == "alert"
        assert status.startswith("Error (400") and "could not decode the file as wav" in status, status
        assert page.locator("#stt-text").count() == 0  # the last answer is not left standing under the error
        choose_file(page, "three.wav", THREE_SECONDS)
        page.fill("#stt-language", "xx")
        status = transcribe_in_ui(page)
        assert "invalid_language_format" in status and "ISO-639-1" in status, status
        assert page.locator("#stt-text").count() == 0
        # 400s are logged by the browser as failed loads; nothing else may be.
        assert [e for e in page.console_errors if "400 (Bad Request)" not in e] == []


@UI_SKIP
def test_ui_records_from_the_microphone_and_says_when_it_may_not(server: Any, browser: Any) -> None:
    from tests.ui_browser import ui_page

    with ui_page(browser, server.base_url, path="/ui/#transcribe", permissions=["microphone"]) as page:
        page.select_option("#stt-model", "listener")
        page.click("#stt-record")
        page.wait_for_selector("#stt-record.recording")
        assert page.locator("#stt-run").is_disabled()
        page.wait_for_timeout(1600)
        page.click("#stt-record")
        page.wait_for_selector("#stt-preview audio")
        assert page.locator("#stt-source").inner_text().startswith("Recording: recording.webm")
        status = transcribe_in_ui(page)
        assert status.startswith("Transcribed by listener"), status
        assert page.locator("#stt-text").inner_text().startswith("second 1. second 2.")
        assert page.console_errors == []

    with ui_page(browser, server.base_url, path="/ui/#transcribe") as page:  # no microphone permission
        page.click("#stt-record")
        status = finished_status(page)
        assert "not allowed to use the microphone" in status, status
        assert page.locator("#stt-record").inner_text() == "Record" and page.locator("#stt-preview audio").count() == 0
        # A browser that cannot record (no getUserMedia: e.g. plain http to another host) shows no Record button.
        page.context.add_init_script("Object.defineProperty(navigator, 'mediaDevices', { value: undefined })")
        page.reload()
        page.wait_for_selector("body[data-ready='true']")
        assert page.evaluate("navigator.mediaDevices === undefined")
        assert page.locator("#stt-record").is_hidden() and page.locator("#stt-file").is_visible()
