"""Continuous batching: a streaming chat load against modelyard (llama-cpp
with slots) and against llama.cpp's own `llama-server -np SLOTS`, same GGUF,
same threads, taking turns round by round so that machine noise hits both
alike.

    .venv/bin/python bench/batching.py [--concurrency 1 4 8] [--rounds 3] [--threads 1]
                                       [--slots 8] [--n-ctx 8192] [--tokens 128] [--llama-server PATH]

Each round sends N requests (2 x C, at least 8), C in flight, to
/v1/chat/completions: `max_tokens` 128, temperature 0, `ignore_eos`, streamed
with usage. Prompts differ per request and repeat across rounds (so both
servers' prompt caches see what a chat's next turn would). Reported per C,
median over rounds: aggregate completion tokens/s (all tokens / wall time
of the round), TTFT p50 and p95 (to the first content delta), per-stream
decode tokens/s ((tokens - 1) / (last delta - first delta), median), and
the ratio modelyard / llama-server.

llama-server comes from ../shared/bench/build_llama_server.sh (the llama.cpp
that llama-cpp-python vendors); default path
~/.cache/modelyard-bench/llama-build/bin/llama-server. Model: SmolLM2-135M-Instruct Q4_1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import SMOLLM2_SOURCE, ServerProcess, free_port, smollm2_path  # noqa: E402

TOPICS = [
    "a lighthouse keeper",
    "a city under the sea",
    "the first day of school",
    "a dragon who cannot fly",
    "a robot learning to paint",
    "a journey across the desert",
    "a library that never closes",
    "a winter in the mountains",
    "a lost cat finding home",
    "a ship made of glass",
    "the last tree on earth",
    "a clock that runs backwards",
    "a festival of lanterns",
    "a garden on the moon",
    "a detective who is a dog",
    "a song nobody remembers",
]


@dataclass
class Stream:
    ttft: float
    tokens: int
    decode_rate: float | None


@dataclass
class Round:
    wall: float
    streams: list[Stream]

    @property
    def aggregate(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall


async def one_request(client: httpx.AsyncClient, url: str, model: str, topic: str, tokens: int) -> Stream:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write a long story about {topic}."}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    count = 0
    completion_tokens = None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    count += 1
    assert first is not None and last is not None, "no content came back"
    n = completion_tokens or count
    rate = (n - 1) / (last - first) if n > 1 and last > first else None
    return Stream(first - started, n, rate)


async def one_round(base_url: str, model: str, concurrency: int, requests: int, tokens: int) -> Round:
    room = asyncio.Semaphore(concurrency)
    url = f"{base_url}/v1/chat/completions"
    # A connection per request: llama-server (cpp-httplib) closes kept-alive
    # connections after a few requests, which a reusing client sees as a disconnect.
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as client:

        async def limited(i: int) -> Stream:
            async with room:
                return await one_request(client, url, model, TOPICS[i % len(TOPICS)], tokens)

        started = time.perf_counter()
        streams = await asyncio.gather(*(limited(i) for i in range(requests)))
        return Round(time.perf_counter() - started, list(streams))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(rounds: list[Round]) -> dict[str, float]:
    ttfts = [[s.ttft for s in r.streams] for r in rounds]
    rates = [[s.decode_rate for s in r.streams if s.decode_rate] for r in rounds]
    return {
        "aggregate": statistics.median(r.aggregate for r in rounds),
        "ttft_p50": statistics.median(percentile(t, 0.5) for t in ttfts),
        "ttft_p95": statistics.median(percentile(t, 0.95) for t in ttfts),
        "decode": statistics.median(statistics.median(r) for r in rates if r),
    }


def start_llama_server(binary: Path, gguf: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "-np", str(args.slots), "-c", str(args.n_ctx), "-t", str(args.threads), "-tb", str(args.threads),
        "--no-webui", "-fa", args.flash_attn, *(["-kvu"] if args.kv_cache == "shared" else []),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"llama-server did not come up: {' '.join(command)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=8192, help="KV cells in all, as llama-server's -c (per slot: this / slots)")
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reuse-prefix", choices=["true", "false"], default="true")
    parser.add_argument("--flash-attn", choices=["on", "off"], default="on", help="for both servers (on: both defaults)")
    parser.add_argument("--kv-cache", choices=["per-slot", "shared"], default="per-slot", help="modelyard's kv_cache; llama-server gets -kvu for shared")
    default_binary = Path(os.environ.get("LLAMA_BUILD", Path.home() / ".cache/modelyard-bench/llama-build")) / "bin/llama-server"
    parser.add_argument("--llama-server", type=Path, default=default_binary)
    parser.add_argument("--only-modelyard", action="store_true", help="skip llama-server")
    args = parser.parse_args()

    config = f"""
[[models]]
id = "smollm2"
modality = "chat"
backend = "llama-cpp"
source = "{SMOLLM2_SOURCE}"

[models.options]
n_ctx = {args.n_ctx // args.slots if args.kv_cache == "per-slot" else args.n_ctx}
n_batch = {args.n_batch}
n_threads = {args.threads}
n_threads_batch = {args.threads}
slots = {args.slots}
reuse_prefix = {args.reuse_prefix}
flash_attn = {"true" if args.flash_attn == "on" else "false"}
kv_cache = "{args.kv_cache}"
"""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"modelyard-bench-batching-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.toml").write_text(config, encoding="utf-8")
    modelyard = ServerProcess(["-c", str(work / "config.toml"), "--log-level", "warning"]).start()
    deadline = time.monotonic() + 120
    while httpx.get(f"{modelyard.base_url}/ready", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit("modelyard did not load the model:\n" + modelyard.log())
        time.sleep(0.2)
    targets = {"modelyard": (modelyard.base_url, "smollm2")}
    llama = None
    if not args.only_modelyard:
        if not args.llama_server.exists():
            raise SystemExit(f"{args.llama_server} is missing: run ../shared/bench/build_llama_server.sh first")
        llama, base = start_llama_server(args.llama_server, smollm2_path(), args)
        targets["llama-server"] = (base, "smollm2")
    try:
        results: dict[tuple[str, int], list[Round]] = {}
        for name, (base, model) in targets.items():  # warm-up: the model in memory, the code paths hot
            asyncio.run(one_round(base, model, 1, 1, 8))
        for concurrency in args.concurrency:
            requests = max(8, 2 * concurrency)
            for number in range(args.rounds):
                order = list(targets) if number % 2 == 0 else list(reversed(targets))
                for name in order:
                    base, model = targets[name]
                    try:
                        done = asyncio.run(one_round(base, model, concurrency, requests, args.tokens))
                    except httpx.HTTPError as exc:
                        log = modelyard.log() if name == "modelyard" else ""
                        raise SystemExit(f"{name} failed at C={concurrency}: {exc!r}\n{log}") from None
                    results.setdefault((name, concurrency), []).append(done)
                    print(f"C={concurrency} round {number + 1} {name}: {done.aggregate:.1f} tok/s", file=sys.stderr)
        print(f"\nSmolLM2-135M Q4_1, {args.threads} thread(s), {args.slots} slots, n_ctx {args.n_ctx}, "
              f"flash attention {args.flash_attn}, KV cache {args.kv_cache}, "
              f"{args.tokens} tokens, median of {args.rounds} rounds\n")  # fmt: skip
        print("| C | server | aggregate tok/s | TTFT p50 ms | TTFT p95 ms | per-stream decode tok/s |")
        print("|---|---|---|---|---|---|")
        for concurrency in args.concurrency:
            rows = {name: summary(results[(name, concurrency)]) for name in targets}
            for name, row in rows.items():
                print(f"| {concurrency} | {name} | {row['aggregate']:.1f} | {row['ttft_p50'] * 1000:.0f} | "
                      f"{row['ttft_p95'] * 1000:.0f} | {row['decode']:.1f} |")  # fmt: skip
            if len(rows) == 2:
                ours, theirs = rows["modelyard"], rows["llama-server"]
                print(f"| {concurrency} | ratio | {ours['aggregate'] / theirs['aggregate']:.2f}x | "
                      f"{ours['ttft_p50'] / theirs['ttft_p50']:.2f}x | {ours['ttft_p95'] / theirs['ttft_p95']:.2f}x | "
                      f"{ours['decode'] / theirs['decode']:.2f}x |")  # fmt: skip
    finally:
        modelyard.stop()
        if llama is not None:
            llama.terminate()
            llama.wait(10)


if __name__ == "__main__":
    main()
