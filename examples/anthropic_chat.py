"""A conversation through the official Anthropic SDK, on modelyard's chat models.

Shows: pointing `anthropic.Anthropic` at modelyard (the base URL has no
/v1: the SDK adds it), a system prompt, a streamed reply, a forced tool use
whose input follows the tool's schema, and the tool result sent back.

Run it against a running server (`make serve`):

    .venv/bin/python examples/anthropic_chat.py

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1; a
trailing /v1 is dropped for this SDK) and MODELYARD_API_KEY (default
"not-needed"; sent as x-api-key).
"""

from __future__ import annotations

import os
import sys

import anthropic

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1").removesuffix("/").removesuffix("/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def main() -> int:
    client = anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, timeout=120)
    question = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    with client.messages.stream(
        model="smollm2", max_tokens=48, system="You answer in one sentence.", messages=question
    ) as stream:
        for text in stream.text_stream:
            print(text, end="", flush=True)
        reply = stream.get_final_message()
    print(f"\nstop_reason={reply.stop_reason} usage: in={reply.usage.input_tokens} out={reply.usage.output_tokens}")

    forced = client.messages.create(
        model="smollm2",
        max_tokens=100,
        messages=question,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    uses = [block for block in forced.content if block.type == "tool_use"]
    if forced.stop_reason != "tool_use" or not uses:
        print(f"expected a tool_use, got {forced.content}", file=sys.stderr)
        return 1
    print(f"tool_use: {uses[0].name}({uses[0].input})")

    answer = client.messages.create(
        model="smollm2",
        max_tokens=48,
        tools=[WEATHER],
        messages=[
            *question,
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in forced.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 24 C"}]},
        ],
    )
    print("after the tool result:", " ".join(b.text for b in answer.content if b.type == "text"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except anthropic.APIConnectionError:
        print(f"cannot reach {BASE_URL}: start the server with `make serve`", file=sys.stderr)
        sys.exit(1)
