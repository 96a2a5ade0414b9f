"""Text to speech: one file per audio format, then a streamed one.

Shows: `client.audio.speech.create` for each of OpenAI's formats (mp3, opus,
aac, flac, wav, pcm), `with_streaming_response` to write audio while it is
still being made, and modelyard's GET /v1/audio/voices.

The embedded default config serves `piper-joe` (aliases `tts-1`, ...), a
real English Piper voice; every OpenAI voice name maps to its one speaker.

    .venv/bin/python examples/speech.py [OUTPUT_DIR]

OUTPUT_DIR defaults to a new temporary folder. `pcm` is raw 24 kHz signed
16-bit little-endian mono; play it with `ffplay -f s16le -ar 24000 -ac 1`.
Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
MODEL = "tts-1"  # an alias of piper-joe in the default config
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TEXT = "Hello from modelyard."
STORY = (
    "Once upon a time, a small server learned to speak. "
    "It read each sentence aloud as soon as it was ready. "
    "And that is how streaming speech works."
)


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="modelyard-speech-"))
    out.mkdir(parents=True, exist_ok=True)
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=300)

    voices = httpx.get(f"{BASE_URL}/audio/voices", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    voices.raise_for_status()
    names = sorted({v["id"] for v in voices.json()["data"] if v["model"] == "piper-joe"})
    print(f"voices of piper-joe: {', '.join(names)}")

    for fmt in FORMATS:
        raw = client.audio.speech.with_raw_response.create(
            model=MODEL,
            voice="alloy",
            input=TEXT,
            response_format=fmt,  # type: ignore[arg-type]
        )
        path = out / f"speech.{fmt}"
        path.write_bytes(raw.content)
        print(f"wrote {path.name}: {len(raw.content)} bytes, {raw.headers['content-type']}")
        if not raw.content:
            print(f"error: {fmt} audio is empty", file=sys.stderr)
            return 1

    # Streaming: the first sentence arrives while the rest is still being spoken.
    path = out / "story.mp3"
    started = time.monotonic()
    first: float | None = None
    pieces = 0
    with (
        client.audio.speech.with_streaming_response.create(
            model=MODEL, voice="echo", input=STORY, response_format="mp3", speed=1.1
        ) as response,
        path.open("wb") as file,
    ):
        for piece in response.iter_bytes():
            if piece:
                first = time.monotonic() - started if first is None else first
                pieces += 1
                file.write(piece)
    total = time.monotonic() - started
    print(f"streamed {path.name}: {pieces} pieces, first audio after {first or 0:.2f}s of {total:.2f}s")
    print(f"files in {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
