"""Background responses: start a run, poll it, cancel another.

Shows: `background=True` (the server answers at once with status `queued`
and generates in the background), polling with `client.responses.retrieve`
until the status is final, and `client.responses.cancel`, which stops a run
in the middle (its status becomes `cancelled` and the model is free for the
next request). Background responses are stored, so they can be fetched
later, after a server restart too.

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/responses_background.py

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import os
import sys
import time

import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
RUNNING = ("queued", "in_progress")


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)

    response = client.responses.create(
        model="smollm2", input="Name three colours.", background=True, max_output_tokens=48
    )
    print(f"started: {response.id} status: {response.status}")
    deadline = time.monotonic() + 120
    while response.status in RUNNING and time.monotonic() < deadline:
        time.sleep(0.25)
        response = client.responses.retrieve(response.id)
    print(f"finished: status: {response.status}")
    print(f"reply: {response.output_text.strip()}")

    long_run = client.responses.create(
        model="smollm2", input="Write a long story about a lighthouse keeper.", background=True, max_output_tokens=800
    )
    time.sleep(1.5)
    partial = client.responses.retrieve(long_run.id)
    print(f"long run: status {partial.status}, {len(partial.output_text)} characters so far")
    cancelled = client.responses.cancel(long_run.id)
    print(f"cancelled: status: {cancelled.status}")

    if response.status not in ("completed", "incomplete") or not response.output_text.strip():
        print("error: the background response did not finish with text", file=sys.stderr)
        return 1
    if cancelled.status != "cancelled":
        print("error: the long run was not cancelled", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
