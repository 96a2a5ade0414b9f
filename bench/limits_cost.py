"""What each `[limits]` bound costs at a given size: the time and extra peak
memory of building the grammar (llama-cpp-python's JSON Schema compiler and
llama_sampler_init_grammar, as adapters/llama_cpp.py uses them), sampling a
few tokens under it, or rendering and tokenizing a prompt of many messages.

    .venv/bin/python bench/limits_cost.py [case ...]   # cases: see CASES

Each measurement runs in its own process on a call thread (as in a worker),
with SmolLM2-135M loaded, one thread, an address-space limit of 4 GiB and a
60 s deadline, so a case that would crash or exhaust the host only fails.
Prints one line per case: size, seconds, extra peak RSS in MB.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def schema_string(n: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": n}


def schema_min_string(n: int) -> dict[str, Any]:
    return {"type": "string", "minLength": n}


def schema_array(n: int) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer"}, "maxItems": n}


def schema_enum(n: int) -> dict[str, Any]:
    return {"enum": [f"value-number-{i}" for i in range(n)]}


def schema_deep(n: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(n):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def schema_wide(n: int) -> dict[str, Any]:
    # n subschemas: optional properties (the costliest object shape).
    return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(n - 1)}}


def gbnf_parens(n: int) -> str:
    return "root ::= " + "(" * n + '"x"' + ")" * n + "\n"


def gbnf_alternatives(n_bytes: int) -> str:
    words, size, i = [], 9, 0
    while size < n_bytes:
        word = f'"w{i}"'
        words.append(word)
        size += len(word) + 3
        i += 1
    return "root ::= " + " | ".join(words) + "\n"


def gbnf_rules(n: int) -> str:
    return "".join(f'r{i} ::= "x{i}" | r{i + 1}\n' for i in range(n - 1)) + f'r{n - 1} ::= "y"\nroot ::= r0\n'


def gbnf_repeat(n: int) -> str:
    return f'root ::= "x"{{0,{n}}}\n'


CASES: dict[str, tuple[str, Any, list[int]]] = {
    "maxLength": ("schema", schema_string, [500, 1000, 1500, 1900, 2000, 5000, 20000]),
    "minLength": ("schema", schema_min_string, [1000, 2000, 5000, 20000]),
    "maxItems": ("schema", schema_array, [500, 1000, 1500, 1900, 2000, 5000, 20000]),
    "enum": ("schema", schema_enum, [100, 500, 1000, 2000, 5000, 20000]),
    "depth": ("schema", schema_deep, [16, 32, 64, 128]),
    "nodes": ("schema", schema_wide, [100, 500, 1000, 2000, 5000]),
    "gbnf_depth": ("gbnf", gbnf_parens, [100, 1000, 5000, 10000, 20000]),
    "gbnf_bytes": ("gbnf", gbnf_alternatives, [64 << 10, 256 << 10, 1 << 20]),
    "gbnf_rules": ("gbnf", gbnf_rules, [1000, 5000, 10000, 20000]),
    "gbnf_repeat": ("gbnf", gbnf_repeat, [1000, 5000, 10000, 20000]),
    "messages": ("messages", None, [500, 1000, 2000, 5000, 10000]),
    "prompt_chars": ("chars", None, [100_000, 500_000, 1_000_000, 2_000_000]),
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, builder: Any, n: int, out: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    from modelyard.adapters.base import ChatRequest, CompletionRequest, Constraint, Sampling
    from modelyard.adapters.llama_cpp import LlamaCppChat, LlamaCppOptions

    from tests.conftest import smollm2_path

    options = LlamaCppOptions(n_ctx=4096, n_threads=1, n_threads_batch=1)
    adapter = LlamaCppChat(smollm2_path(), options)
    before = rss_mb()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            started = time.monotonic()
            if kind in ("schema", "gbnf"):
                value = builder(n)
                constraint = Constraint(json_schema=value) if kind == "schema" else Constraint(gbnf=value)
                phase, _ = adapter._phase(constraint, None)
                assert phase.grammar is not None
                result["gbnf_bytes"] = len(phase.grammar)
                adapter._sampler(Sampling(temperature=0), phase.grammar, 0).close()
                result["build_s"] = time.monotonic() - started
                sample_started = time.monotonic()
                request = CompletionRequest(prompt="Answer:", sampling=Sampling(max_tokens=8, temperature=0), constraint=constraint)
                result["text"] = "".join(getattr(e, "text", "") for e in adapter.complete(request, threading.Event()))[:40]
                result["sample8_s"] = time.monotonic() - sample_started
            else:
                if kind == "messages":
                    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]
                else:
                    messages = [{"role": "user", "content": "word " * (n // 5)}]
                request = ChatRequest(messages=messages, sampling=Sampling())
                tokens, _ = adapter._chat_prompt(request)
                result["tokens"] = len(tokens)
            result["total_s"] = time.monotonic() - started
        except BaseException as exc:  # report, do not hide
            result["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    result["extra_rss_mb"] = round(rss_mb() - before, 1)
    out.put(result)


def main() -> None:
    names = sys.argv[1:] or list(CASES)
    context = multiprocessing.get_context("spawn")
    for name in names:
        kind, builder, sizes = CASES[name]
        for n in sizes:
            queue = context.Queue()
            process = context.Process(target=measure, args=(kind, builder, n, queue))
            process.start()
            process.join(90)
            if process.is_alive():
                process.kill()
                process.join()
                line = {"error": "over 90 s (killed)"}
            elif process.exitcode != 0:
                line = {"error": f"process died with exit code {process.exitcode}"}
            else:
                line = queue.get()
            print(f"{name:>13} {n:>9}  {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in line.items()})}", flush=True)


if __name__ == "__main__":
    main()
