"""Speech to text: a sentence spoken by the server's voice, read back.

Shows: `client.audio.transcriptions.create` with each response_format (json,
text, srt, vtt, verbose_json with word timestamps), `stream=True` (one
`transcript.text.delta` per phrase, then `transcript.text.done`), and
`client.audio.translations.create` (speech to English text).

The embedded default config serves `whisper-base` (aliases `whisper-1`,
...), Whisper base on faster-whisper, loaded on the first request; the
audio comes from its Piper voice `piper-joe` (`tts-1`), so no audio file is
needed. Pass one to transcribe it instead:

    .venv/bin/python examples/transcribe.py [AUDIO_FILE]

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
MODEL = "whisper-1"  # an alias of whisper-base in the default config
SENTENCE = "Good morning. The weather today is sunny with a light breeze from the west."


def main() -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=300)
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
        audio = (path.name, path.read_bytes())
    else:
        spoken = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="mp3")
        audio = ("sentence.mp3", spoken.content)
        print(f"spoken by tts-1: {SENTENCE!r} ({len(spoken.content)} bytes of mp3)")

    started = time.monotonic()
    transcript = client.audio.transcriptions.create(model=MODEL, file=audio)
    seconds = transcript.usage.seconds if transcript.usage and transcript.usage.type == "duration" else 0.0
    print(f"json: {transcript.text!r} ({seconds:.1f} s of audio in {time.monotonic() - started:.1f} s)")

    text = client.audio.transcriptions.create(model=MODEL, file=audio, response_format="text")
    print(f"text: {text.strip()!r}")
    for fmt in ("srt", "vtt"):
        subtitles = client.audio.transcriptions.create(model=MODEL, file=audio, response_format=fmt)
        print(f"{fmt}:\n{subtitles.strip()}")

    verbose = client.audio.transcriptions.create(
        model=MODEL,
        file=audio,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    print(f"verbose_json: language={verbose.language} duration={verbose.duration:.2f} segments={len(verbose.segments or [])}")
    for word in verbose.words or []:
        print(f"  word {word.start:5.2f}-{word.end:5.2f} {word.word}")

    print("stream:", end=" ", flush=True)
    for event in client.audio.transcriptions.create(model=MODEL, file=audio, stream=True):
        if event.type == "transcript.text.delta":
            print(f"[delta {event.delta!r}]", end=" ", flush=True)
        elif event.type == "transcript.text.done":
            print(f"\ndone: {event.text!r}")

    translation = client.audio.translations.create(model=MODEL, file=audio)
    print(f"translation (to English): {translation.text!r}")


if __name__ == "__main__":
    main()
