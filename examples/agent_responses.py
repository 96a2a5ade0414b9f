"""Hosted tools on the Responses API, through the official OpenAI SDK: the
server searches (`web_search`) and runs Python (`code_interpreter`) for the
model, and answers with OpenAI's own output items.

Shows: `tools=[{"type": "web_search"}]` with `tool_choice` forcing the first
call and `include=["web_search_call.action.sources"]`; a
`code_interpreter` tool with `container: {"type": "auto"}`, its
`code_interpreter_call` item (`code`, `container_id`, `outputs` with
`include=["code_interpreter_call.outputs"]`), and the container reused by id
in a second request, where the Python variable of the first is still there.

The server must run with its agent tools on:

    .venv/bin/modelyard serve --agent
    .venv/bin/python examples/agent_responses.py

The embedded model is tiny: what it writes may not be good Python, which the
item then shows as a failed call; the tools run for real. Environment:
MODELYARD_BASE_URL (default http://localhost:1234/v1), MODELYARD_API_KEY.
"""

from __future__ import annotations

import os
import sys

import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
MODEL = os.environ.get("MODELYARD_MODEL", "smollm2")


def show(response: openai.types.responses.Response) -> None:
    for item in response.output:
        print(f"item: {item.type} status={getattr(item, 'status', None)}")
        if item.type == "web_search_call":
            sources = [s.url for s in (item.action.sources or [])] if item.action.type == "search" else []
            print(f"  query={item.action.query!r} sources={sources}")  # type: ignore[union-attr]
        elif item.type == "code_interpreter_call":
            print(f"  container={item.container_id} code={item.code!r:.80} outputs={[o.type for o in item.outputs or []]}")
    print(f"answer: {response.output_text[:200]!r}")


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)
    searched = client.responses.create(
        model=MODEL,
        input="What is the capital of Zorland? Search for it.",
        tools=[{"type": "web_search"}],
        tool_choice={"type": "web_search_preview"},
        include=["web_search_call.action.sources"],
        max_output_tokens=200,
        temperature=0,
    )
    show(searched)

    ran = client.responses.create(
        model=MODEL,
        input="Use Python to compute 6 * 7 and keep it in a variable called answer.",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        tool_choice={"type": "code_interpreter"},
        include=["code_interpreter_call.outputs"],
        max_output_tokens=200,
        temperature=0,
    )
    show(ran)
    calls = [item for item in ran.output if item.type == "code_interpreter_call"]
    if not calls or not calls[0].container_id:
        print("error: no code_interpreter_call with a container", file=sys.stderr)
        return 1
    again = client.responses.create(
        model=MODEL,
        input="Print the list of variables you have, with Python.",
        tools=[{"type": "code_interpreter", "container": calls[0].container_id}],
        tool_choice={"type": "code_interpreter"},
        include=["code_interpreter_call.outputs"],
        max_output_tokens=200,
        temperature=0,
    )
    show(again)
    print(f"same container: {[i.container_id for i in again.output if i.type == 'code_interpreter_call'] == [calls[0].container_id]}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        print(f"cannot reach {BASE_URL}: {exc}. Start the server with `modelyard serve --agent`.", file=sys.stderr)
        sys.exit(1)
