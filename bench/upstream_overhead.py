"""What a modelyard front with `backend = "openai"` adds to a request, measured
against calling its upstream directly, on this machine.

    make test-fast        # once: installs the scripted test backend
    .venv/bin/python bench/upstream_overhead.py [--requests 200] [--tokens 96]

Two parts, each with one upstream modelyard server and one front whose
models forward to it over loopback:

1. Overhead: the upstream serves the scripted test backend, which answers at
   once, so what is measured is the HTTP path itself. Per request kind
   (chat, streamed chat's first byte, embeddings) the p50 and p95 latency of
   `--requests` sequential requests direct and through the front, and the
   wall time of 32 chat requests at once.
2. A real model: the upstream serves SmolLM2 (1 thread, greedy, `--tokens`
   tokens); time to first token and tokens/s of one stream, direct and
   through the front.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServerProcess, chat_model_toml, script, scripted_model_toml  # noqa: E402

Timed = Callable[[httpx.AsyncClient], Awaitable[float]]


def serve(config: str, name: str) -> ServerProcess:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-upstream-{name}-{os.getpid()}.toml"
    path.write_text(config)
    server = ServerProcess(["-c", str(path)]).start(timeout=240)
    server.wait_loaded(240)
    return server


def front_config(upstream: ServerProcess, models: dict[str, str]) -> str:
    """One backend = "openai" model per (id → modality), named as on the upstream."""
    tables = []
    for model_id, modality in models.items():
        tables.append(
            f'[[models]]\nid = "{model_id}"\nmodality = "{modality}"\nbackend = "openai"\n'
            f'[models.options]\nupstreams = ["{upstream.base_url}/v1"]\nmax_concurrency = 64\n'
        )
    return "\n".join(tables)


async def chat(client: httpx.AsyncClient) -> float:
    body = {"model": "chat", "messages": [{"role": "user", "content": script("Hi", " there", ".")}]}
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return time.perf_counter() - started


async def stream_first_byte(client: httpx.AsyncClient) -> float:
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": script("Hi", " there", ".")}]}
    started = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter()
    assert first is not None
    return first - started


async def embed(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/embeddings", json={"model": "embed", "input": ["a lighthouse by the sea"]})
    response.raise_for_status()
    return time.perf_counter() - started


async def latencies(base_url: str, timed: Timed, requests: int) -> list[float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        for _ in range(10):  # warm-up: connections, first-call paths
            await timed(client)
        return [await timed(client) for _ in range(requests)]


async def burst(base_url: str, size: int) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=httpx.Limits(max_connections=size)) as client:
        await asyncio.gather(*(chat(client) for _ in range(size)))  # warm-up: open the connections
        started = time.perf_counter()
        await asyncio.gather(*(chat(client) for _ in range(size)))
        return time.perf_counter() - started


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def overhead(requests: int) -> None:
    upstream_models = scripted_model_toml("chat", extra="replicas = 2\n") + scripted_model_toml("embed", "embeddings")
    upstream = serve(upstream_models, "scripted")
    front = serve(front_config(upstream, {"chat": "chat", "embed": "embeddings"}), "front")
    try:
        print(f"1. overhead, scripted upstream, {requests} sequential requests each (ms)")
        print(f"{'':22} {'direct p50':>10} {'p95':>6} {'front p50':>10} {'p95':>6} {'added p50':>10}")
        for name, timed in (("chat", chat), ("stream, first byte", stream_first_byte), ("embeddings", embed)):
            direct = asyncio.run(latencies(upstream.base_url, timed, requests))
            through = asyncio.run(latencies(front.base_url, timed, requests))
            d50, f50 = statistics.median(direct) * 1000, statistics.median(through) * 1000
            print(f"{name:22} {d50:10.2f} {p95(direct) * 1000:6.2f} {f50:10.2f} {p95(through) * 1000:6.2f} {f50 - d50:10.2f}")
        size = 32
        direct_wall, front_wall = asyncio.run(burst(upstream.base_url, size)), asyncio.run(burst(front.base_url, size))
        print(f"{size} chat requests at once: direct {direct_wall * 1000:.0f} ms, through the front {front_wall * 1000:.0f} ms")
    finally:
        front.stop()
        upstream.stop()


async def one_stream(base_url: str, tokens: int) -> tuple[float, float]:
    body = {"model": "smollm2", "stream": True, "temperature": 0, "max_tokens": tokens,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]}
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        started = time.perf_counter()
        first = None
        count = 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    count += 1
                    first = first or time.perf_counter()
        ended = time.perf_counter()
    assert first is not None
    return first - started, (count - 1) / (ended - first)


def real_model(tokens: int, runs: int) -> None:
    upstream = serve(chat_model_toml("smollm2"), "smollm2")
    front = serve(front_config(upstream, {"smollm2": "chat"}), "front-smollm2")
    try:
        print(f"2. SmolLM2 upstream, 1 thread, greedy, {tokens} tokens, median of {runs} streams")
        print(f"{'':10} {'TTFT':>8} {'tokens/s':>9}")
        for name, server in (("direct", upstream), ("front", front)):
            asyncio.run(one_stream(server.base_url, 8))  # warm-up
            rows = [asyncio.run(one_stream(server.base_url, tokens)) for _ in range(runs)]
            ttft = statistics.median(r[0] for r in rows) * 1000
            print(f"{name:10} {ttft:6.0f}ms {statistics.median(r[1] for r in rows):9.1f}")
    finally:
        front.stop()
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    overhead(args.requests)
    real_model(args.tokens, args.runs)


if __name__ == "__main__":
    main()
