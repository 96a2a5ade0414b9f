"""Time to first byte and to the first token for a coding agent's long prompt:
a Codex-like request (long instructions, a developer message, a dozen
function tools; about 6k prompt tokens) streamed through /v1/responses, and
the same through /v1/messages; cold (nothing of it cached) and on the second
turn (the whole history re-sent plus a new user message), with the previous
turn's prefix reused (reuse_prefix, the default) and, with --without-reuse,
also without.

    .venv/bin/python bench/agent_prompt.py [--threads N] [--n-ctx 8192] [--without-reuse]

SmolLM2-135M-Instruct Q4_1 through a real `modelyard serve`. "headers" is when
the response headers arrived, "first byte" the first event of the body
(response.created / message_start, sent before the prompt is evaluated),
"first token" the first output delta (text or tool-call arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import SMOLLM2_SOURCE, ServerProcess  # noqa: E402

TOPICS = [
    "reading files",
    "editing files",
    "running shell commands",
    "writing tests",
    "git and commits",
    "formatting code",
    "reporting progress",
    "asking for approval",
    "handling errors",
    "working in a sandbox",
    "planning a change",
    "reviewing a diff",
]


def instructions() -> str:
    """A long agent instruction, in the manner of Codex's: sections of rules."""
    sections = ["You are a coding agent running in a terminal, working in the user's repository. Be precise and safe."]
    for number, topic in enumerate(TOPICS, 1):
        rules = [
            f"{number}.{i} When {topic}, first look at what the repository already does and follow its conventions; "
            f"prefer small, reviewable steps, explain why in one sentence, and never touch files outside the task "
            f"(rule {number}.{i} applies to every file type, including generated ones, configuration and docs)."
            for i in range(1, 6)
        ]
        sections.append(f"## {number}. {topic.capitalize()}\n" + "\n".join(rules))
    return "\n\n".join(sections)


def tool_schemas() -> list[dict[str, Any]]:
    names = ["exec_command", "write_stdin", "apply_patch", "read_file", "list_dir", "grep_files", "view_image",
             "update_plan", "run_tests", "git_status", "git_diff", "web_fetch"]  # fmt: skip
    tools = []
    for name in names:
        tools.append(
            {
                "name": name,
                "description": f"{name.replace('_', ' ').capitalize()} in the workspace. Returns the output as text; "
                "fails with a message naming the problem when the arguments are not valid for this workspace.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "A path relative to the workspace root."},
                        "command": {"type": "string", "description": "The command line, as a shell would run it."},
                        "timeout_ms": {"type": "integer", "description": "How long it may run, in milliseconds."},
                        "justification": {"type": "string", "description": "Why this is needed, for the approval prompt."},
                    },
                    "required": ["path"],
                    "additionalProperties": False,
                },
            }
        )
    return tools


INSTRUCTIONS = instructions()
DEVELOPER = "<environment_context>cwd: /home/user/project\nshell: bash\napproval: on-request</environment_context>"
FIRST = "Look at the repository and tell me in one sentence what it does."
SECOND = "Thanks. Which file would you read first, and why?"


@dataclass
class Timing:
    surface: str
    turn: str
    reuse: str
    prompt_tokens: int
    cached_tokens: int
    headers: float
    first_byte: float
    first_token: float | None
    output: Any  # what the next turn re-sends


def stream(client: httpx.Client, url: str, body: dict[str, Any], token_events: set[str]) -> tuple[float, float, float | None, list[dict[str, Any]]]:
    """Post a stream; return when its headers, first event and first output delta came, and its events."""
    started = time.perf_counter()
    first_byte = first_token = None
    events: list[dict[str, Any]] = []
    with client.stream("POST", url, json=body) as response:
        headers = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.read().decode()}")
        for line in response.iter_lines():
            if not line:
                continue
            if first_byte is None:
                first_byte = time.perf_counter() - started
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                events.append(event)
                if first_token is None and event.get("type") in token_events:
                    first_token = time.perf_counter() - started
    assert first_byte is not None
    return headers, first_byte, first_token, events


def responses_turn(client: httpx.Client, base: str, model: str, history: list[dict[str, Any]], turn: str, reuse: str) -> Timing:
    tools = [{"type": "function", **tool} for tool in tool_schemas()]
    body = {
        "model": model,
        "instructions": INSTRUCTIONS,
        "input": history,
        "tools": tools,
        "tool_choice": "auto",
        "store": False,
        "stream": True,
        "max_output_tokens": 24,
        "temperature": 0,
    }
    kinds = {"response.output_text.delta", "response.function_call_arguments.delta", "response.reasoning_text.delta"}
    headers, first_byte, first_token, events = stream(client, f"{base}/v1/responses", body, kinds)
    final = events[-1]["response"]
    usage = final["usage"]
    return Timing(
        "/v1/responses", turn, reuse, usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"],
        headers, first_byte, first_token, final["output"],
    )  # fmt: skip


def messages_turn(client: httpx.Client, base: str, model: str, history: list[dict[str, Any]], turn: str, reuse: str) -> Timing:
    tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in tool_schemas()]
    body = {
        "model": model,
        "system": INSTRUCTIONS + "\n\n" + DEVELOPER,
        "messages": history,
        "tools": tools,
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
    }
    headers, first_byte, first_token, events = stream(client, f"{base}/v1/messages", body, {"content_block_delta"})
    start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
    blocks: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "content_block_start":
            blocks.append(dict(event["content_block"]))
        elif event["type"] == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                blocks[-1]["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                blocks[-1]["partial"] = blocks[-1].get("partial", "") + delta["partial_json"]
    for block in blocks:
        if block["type"] == "tool_use":
            try:
                block["input"] = json.loads(block.pop("partial", "{}") or "{}")
            except json.JSONDecodeError:
                block["input"] = {}
    prompt = start["input_tokens"] + start["cache_read_input_tokens"]
    return Timing("/v1/messages", turn, reuse, prompt, start["cache_read_input_tokens"], headers, first_byte, first_token, blocks)


def responses_first() -> list[dict[str, Any]]:
    return [{"role": "developer", "content": DEVELOPER}, {"role": "user", "content": FIRST}]


def responses_second(first: Timing) -> list[dict[str, Any]]:
    """What Codex sends next: the whole history, the model's output, a new message."""
    history = responses_first()
    for item in first.output:
        if item["type"] == "message":
            history.append({"role": "assistant", "content": item["content"][0]["text"] if item["content"] else ""})
        elif item["type"] == "function_call":
            history.append({k: item[k] for k in ("type", "call_id", "name", "arguments")})
            history.append({"type": "function_call_output", "call_id": item["call_id"], "output": "(no output)"})
    return history + [{"role": "user", "content": SECOND}]


def messages_second(first: Timing) -> list[dict[str, Any]]:
    content = [b for b in first.output if b["type"] != "text" or b["text"]] or [{"type": "text", "text": "(nothing)"}]
    results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "(no output)"} for b in content if b["type"] == "tool_use"]
    return [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": content},
        {"role": "user", "content": [*results, {"type": "text", "text": SECOND}]},
    ]


def config(threads: int, n_ctx: int, without_reuse: bool) -> str:
    def model(model_id: str, reuse: bool) -> str:
        return (
            f'[[models]]\nid = "{model_id}"\nmodality = "chat"\nbackend = "llama-cpp"\nsource = "{SMOLLM2_SOURCE}"\n'
            f"[models.options]\nn_ctx = {n_ctx}\nn_threads = {threads}\nn_threads_batch = {threads}\n"
            f"reuse_prefix = {str(reuse).lower()}\n"
        )

    return model("smol", True) + (model("smol-fresh", False) if without_reuse else "")


def forget(client: httpx.Client, base: str) -> None:
    """An unrelated request: the next prompt finds nothing of itself in the cache."""
    body = {"model": "smol", "messages": [{"role": "system", "content": "Unrelated."}, {"role": "user", "content": "Hi"}]}
    client.post(f"{base}/v1/chat/completions", json={**body, "max_tokens": 1}).raise_for_status()


def run(base: str, without_reuse: bool) -> list[Timing]:
    timings: list[Timing] = []

    def measured(timing: Timing) -> Timing:
        timings.append(timing)
        print(table([timing]).splitlines()[-1], flush=True)  # as it comes: a cold turn can take minutes
        return timing

    with httpx.Client(timeout=3600) as client:
        forget(client, base)
        cold = measured(responses_turn(client, base, "smol", responses_first(), "cold", "on"))
        history = responses_second(cold)
        measured(responses_turn(client, base, "smol", history, "second", "on"))
        if without_reuse:
            measured(responses_turn(client, base, "smol-fresh", history, "second", "off"))
        forget(client, base)
        cold = measured(messages_turn(client, base, "smol", [{"role": "user", "content": FIRST}], "cold", "on"))
        history = messages_second(cold)
        measured(messages_turn(client, base, "smol", history, "second", "on"))
        if without_reuse:
            measured(messages_turn(client, base, "smol-fresh", history, "second", "off"))
    return timings


def table(timings: list[Timing]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:,.0f}"

    rows = [
        "| surface | turn | reuse_prefix | prompt tokens | cached | headers ms | first byte ms | first token ms |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for t in timings:
        rows.append(
            f"| {t.surface} | {t.turn} | {t.reuse} | {t.prompt_tokens:,} | {t.cached_tokens:,} | "
            f"{ms(t.headers)} | {ms(t.first_byte)} | {ms(t.first_token)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: the CPUs this may use")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--without-reuse", action="store_true", help="also time second turns on a reuse_prefix = false model")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server on the way out
    print(f"SmolLM2-135M-Instruct Q4_1, n_ctx {args.n_ctx}, {args.threads} threads, greedy, 24 output tokens at most\n")
    print("\n".join(table([]).splitlines()[:2]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(config(args.threads, args.n_ctx, args.without_reuse))
        server = ServerProcess(["-c", str(path), "--log-level", "warning"]).start()
        try:
            server.wait_loaded()
            run(server.base_url, args.without_reuse)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
