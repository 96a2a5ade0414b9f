"""Stream a chat reply token by token through the official OpenAI SDK.

Shows: `stream=True`, printing each content delta as it arrives, and
`stream_options={"include_usage": True}`, which makes the server send one
last chunk with no choices and the token usage.

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/streaming.py

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import os
import sys

import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Write two short sentences about the sea."}],
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    finish_reason = None
    print("reply: ", end="", flush=True)
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage  # the last chunk: no choices, only usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
                print(choice.delta.content, end="", flush=True)
            if choice.finish_reason is not None:
                finish_reason = choice.finish_reason
    print()
    print(f"chunks with text: {len(pieces)}")
    print(f"finish_reason: {finish_reason}")
    if usage is None:
        print("error: no usage chunk at the end of the stream", file=sys.stderr)
        return 1
    print(f"usage: prompt={usage.prompt_tokens} completion={usage.completion_tokens} total={usage.total_tokens}")
    if not "".join(pieces).strip():
        print("error: the streamed reply is empty", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
