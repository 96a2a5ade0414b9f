"""Anthropic's server tools on /v1/messages, through the official Anthropic
SDK: the server searches (`web_search_20250305`) and runs Python
(`code_execution_20250522`) for the model, and answers with Anthropic's own
blocks: `server_tool_use`, `web_search_tool_result` (with citations on the
text written from it), `code_execution_tool_result`, and the response's
`container`.

The server must run with its agent tools on:

    .venv/bin/modelyard serve --agent
    .venv/bin/python examples/agent_messages.py

The embedded model is tiny; the tools run for real. Environment:
MODELYARD_BASE_URL (default http://localhost:1234/v1; the Anthropic SDK takes
it without /v1), MODELYARD_API_KEY.
"""

from __future__ import annotations

import os
import sys

import anthropic

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1").removesuffix("/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
MODEL = os.environ.get("MODELYARD_MODEL", "smollm2")


def show(message: anthropic.types.Message) -> None:
    for block in message.content:
        print(f"block: {block.type}")
        if block.type == "server_tool_use":
            print(f"  {block.name}({block.input})")
        elif block.type == "web_search_tool_result" and isinstance(block.content, list):
            print(f"  results: {[r.url for r in block.content]}")
        elif block.type == "code_execution_tool_result":
            print(f"  {block.content}"[:200])
        elif block.type == "text":
            print(f"  {block.text[:120]!r} citations={len(block.citations or [])}")
    print(f"stop_reason={message.stop_reason} usage={message.usage.server_tool_use}")


def main() -> int:
    claude = anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, timeout=120)
    searched = claude.messages.create(
        model=MODEL,
        max_tokens=200,
        # The embedded model is tiny: greedy keeps its tool calls well formed, run after run. (This SDK
        # version takes no temperature argument; the API does.)
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "What is the capital of Zorland? Search for it."}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        tool_choice={"type": "tool", "name": "web_search"},
    )
    show(searched)
    ran = claude.messages.create(
        model=MODEL,
        max_tokens=200,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Use Python to print 6 * 7."}],
        tools=[{"type": "code_execution_20250522", "name": "code_execution"}],
        tool_choice={"type": "tool", "name": "code_execution"},
    )
    show(ran)
    container = getattr(ran, "container", None)
    print(f"container: {container.id if container else None}")
    return 0 if any(b.type == "server_tool_use" for b in searched.content) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except anthropic.APIConnectionError as exc:
        print(f"cannot reach {BASE_URL}: {exc}. Start the server with `modelyard serve --agent`.", file=sys.stderr)
        sys.exit(1)
