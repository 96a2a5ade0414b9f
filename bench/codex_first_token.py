"""Time to first byte and to the first token for Codex's requests against
SmolLM2-135M on one thread: the recorded requests of tests/data/codex sent
as Codex sent them (only max_output_tokens lowered), each case on a fresh
server (cold), then the recorded next turn on the same server (warm, with
`reuse_prefix`).

    .venv/bin/python bench/codex_first_token.py [--threads 1]

Cases: Codex's default instructions and tools (~9,200 tokens; n_ctx 10240,
as it does not fit 8192), and Codex's default tools with a short
`model_instructions_file` (~5,400 tokens; n_ctx 8192). First byte is the
first byte of the response body; first token is the first event that
carries model output (`response.output_item.added`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.codex_cli import MODEL, SHORT_INSTRUCTIONS, recorded
from tests.conftest import ServerProcess, chat_model_toml
from tests.test_codex_requests import replay_headers

OUTPUT_EVENTS = ("response.output_item.added", "response.output_text.delta")


def with_short_instructions(name: str) -> dict[str, Any]:
    """A recording as `-c model_instructions_file=FILE` makes it: Codex's base instructions replaced."""
    request = json.loads(json.dumps(recorded(name)))
    request["body"]["input"][0]["content"][0]["text"] = SHORT_INSTRUCTIONS.strip()
    return dict(request)


def timed(base_url: str, request: dict[str, Any]) -> dict[str, Any]:
    body = {**request["body"], "max_output_tokens": 8}
    started = time.perf_counter()
    first_byte = first_token = None
    usage: dict[str, Any] = {}
    with httpx.Client(timeout=1800) as client, client.stream(
        "POST", base_url + request["path"], json=body, headers=replay_headers(request)
    ) as response:
        headers_at = time.perf_counter() - started
        assert response.status_code == 200, response.read().decode()
        for line in response.iter_lines():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if first_token is None and event["type"] in OUTPUT_EVENTS:
                first_token = time.perf_counter() - started
            if event["type"] in ("response.completed", "response.incomplete"):
                usage = event["response"]["usage"]
    total = time.perf_counter() - started
    return {"headers": headers_at, "first_byte": first_byte, "first_token": first_token, "total": total, "usage": usage}


def run_case(label: str, n_ctx: int, threads: int, first: dict[str, Any], second: dict[str, Any]) -> None:
    options = f"top_k = 1\nrepeat_penalty = 1.3\nreuse_prefix = true\nn_ctx = {n_ctx}\n"
    config = chat_model_toml(MODEL).replace("n_ctx = 1024\n", "").replace("n_threads = 1", f"n_threads = {threads}")
    config = config.replace("n_threads_batch = 1", f"n_threads_batch = {threads}") + options
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config)
        server = ServerProcess(["-c", str(path)]).start()
        try:
            server.wait_loaded()
            for turn, request in (("cold", first), ("next turn", second)):
                result = timed(server.base_url, request)
                tokens = result["usage"].get("input_tokens")
                print(
                    f"| {label} | {turn} | {tokens} | {result['headers']:.1f} | {result['first_byte']:.1f} | "
                    f"{result['first_token']:.1f} | {result['total']:.1f} |",
                    flush=True,
                )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{datetime.date.today()} commit {commit}, {args.threads} thread(s), load average {load} at start\n")
    print("| prompt | turn | input tokens | headers (s) | first byte (s) | first token (s) | total (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    run_case("default instructions + tools", 10240, args.threads, recorded("default-tool-turn1"), recorded("default-tool-turn2"))
    run_case(
        "short instructions + default tools",
        8192,
        args.threads,
        with_short_instructions("default-tool-turn1"),
        with_short_instructions("default-tool-turn2"),
    )


if __name__ == "__main__":
    main()
