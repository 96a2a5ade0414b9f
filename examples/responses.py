"""The Responses API through the official OpenAI SDK: one plain response,
one streamed, and a follow-up that continues the first conversation.

Shows: `client.responses.create` with `instructions` and `input`,
`response.output_text`, `client.responses.stream` (printing each text delta
as it arrives), and `previous_response_id`: the server stores each
response (`store` defaults to true), so a follow-up only sends the new turn.

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/responses.py

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

    first = client.responses.create(
        model="smollm2",
        instructions="You are a helpful assistant. Answer briefly.",
        input="What is the capital of France?",
        max_output_tokens=48,
    )
    print(f"id: {first.id} status: {first.status}")
    print(f"reply: {first.output_text.strip()}")
    if first.usage is not None:
        print(f"usage: input={first.usage.input_tokens} output={first.usage.output_tokens}")

    print("streamed: ", end="", flush=True)
    streamed = None
    with client.responses.stream(model="smollm2", input="Write one short sentence about the sea.", max_output_tokens=40) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
            elif event.type in ("response.completed", "response.incomplete"):
                # The last event carries the whole response. (The SDK's
                # get_final_response() only accepts response.completed, and
                # a reply cut by max_output_tokens ends with response.incomplete.)
                streamed = event.response
    print()
    if streamed is None:
        print("error: the stream ended without a final response", file=sys.stderr)
        return 1
    print(f"streamed status: {streamed.status}")

    # The server keeps the first exchange: only the new question is sent.
    follow_up = client.responses.create(
        model="smollm2",
        previous_response_id=first.id,
        input="And what is its population, roughly?",
        max_output_tokens=48,
    )
    print(f"follow-up: {follow_up.output_text.strip()}")
    if follow_up.usage is not None and first.usage is not None:
        print(f"follow-up input tokens: {follow_up.usage.input_tokens} (the first turn took {first.usage.input_tokens})")
    items = client.responses.input_items.list(follow_up.id, order="asc")
    print("conversation: " + ", ".join(f"{item.type}/{getattr(item, 'role', '')}" for item in items.data))

    if not first.output_text.strip() or not streamed.output_text.strip() or not follow_up.output_text.strip():
        print("error: an empty reply", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
