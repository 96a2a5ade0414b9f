"""Tokens/s and time to first token of SmolLM2 served by a local worker
process versus the same model as a one-replica Ray Serve deployment
([cluster] engine = "ray") on a `ray start --head` cluster on this machine.

    .venv/bin/python bench/ray_throughput.py [--tokens 96] [--runs 5]

Both sides: SmolLM2-135M-Instruct Q4_1, n_ctx 1024, 1 thread, greedy
sampling, one stream at a time, then 4 streams at once (2 slots).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServerProcess, chat_model_toml, free_port  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
RAY = Path(sys.executable).with_name("ray")


async def one_stream(client: httpx.AsyncClient, tokens: int) -> tuple[float, int, float]:
    started = time.perf_counter()
    first = None
    count = 0
    body = {"model": "smollm2", "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                count += 1
                first = first or time.perf_counter()
    ended = time.perf_counter()
    assert first is not None
    return first - started, count, ended - started


async def measure(base_url: str, tokens: int, runs: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        await one_stream(client, 8)  # warm-up
        singles = [await one_stream(client, tokens) for _ in range(runs)]
        started = time.perf_counter()
        together = await asyncio.gather(*(one_stream(client, tokens) for _ in range(4)))
        wall = time.perf_counter() - started
    return {
        "ttft_p50": statistics.median(s[0] for s in singles),
        "tok_s_1": statistics.median((s[1] - 1) / (s[2] - s[0]) for s in singles),
        "tok_s_4": sum(s[1] for s in together) / wall,
    }


def serve(config: str) -> ServerProcess:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-ray-{os.getpid()}.toml"
    path.write_text(config)
    server = ServerProcess(["-c", str(path)]).start(timeout=240)
    server.wait_loaded(240)
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    model = chat_model_toml("smollm2").replace("n_threads_batch = 1\n", "n_threads_batch = 1\nslots = 2\n")
    results = {}
    local = serve(model)
    try:
        results["local worker"] = asyncio.run(measure(local.base_url, args.tokens, args.runs))
    finally:
        local.stop()
    port = free_port()
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    try:
        cluster = f'[cluster]\nengine = "ray"\naddress = "127.0.0.1:{port}"\napp_prefix = "bench"\n'
        ray_server = serve(cluster + model.replace("[models.options]", "[models.cluster]\nnum_cpus = 1\n[models.options]"))
        try:
            results["Ray Serve"] = asyncio.run(measure(ray_server.base_url, args.tokens, args.runs))
        finally:
            ray_server.stop()
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True)
    print(f"{'':14} {'TTFT p50':>9} {'tok/s 1 stream':>15} {'tok/s 4 streams':>16}")
    for name, row in results.items():
        print(f"{name:14} {row['ttft_p50'] * 1000:7.0f}ms {row['tok_s_1']:15.1f} {row['tok_s_4']:16.1f}")


if __name__ == "__main__":
    main()
