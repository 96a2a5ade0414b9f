"""Let the server run tools for the model: web search and a Python code
interpreter on chat completions, through the official OpenAI SDK.

Shows: `web_search_options` (the server searches its `[agent.search]`
provider: with the embedded default config, the few documents of
configs/search/), a hosted `code_interpreter` tool, `tool_choice` forcing the
first call, mistral.rs's `agentic_tool_calls` timeline and `session_id`
(Python state kept between two requests), the `url_citation` annotations of
a searched answer, and the `agentic_tool_call_progress` events of a stream.

The server must run with its agent tools on:

    .venv/bin/modelyard serve --agent
    .venv/bin/python examples/agent_chat.py

The embedded model is tiny (135M parameters): the code it writes may not
run, which the timeline then shows as a failed call; the tools themselves
run for real. Environment: MODELYARD_BASE_URL (default
http://localhost:1234/v1), MODELYARD_API_KEY (default "not-needed").
"""

from __future__ import annotations

import json
import os
import sys

import httpx
import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
MODEL = os.environ.get("MODELYARD_MODEL", "smollm2")
CODE = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def show(body: dict) -> None:
    for record in body.get("agentic_tool_calls", []):
        data = record["data"]
        print(f"{record['name']} round {record['round']}: failed={record['failed']} arguments={record['arguments'][:80]}")
        if data["tool_type"] == "web_search":
            print(f"  sources: {data['sources']}")
        else:
            print(f"  stdout: {data.get('stdout', '')[:80]!r} exception: {data.get('exception')}")
    print(f"answer: {body['choices'][0]['message']['content'][:200]!r}")


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)
    searched = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Search: what is the capital of Zorland?"}],
        web_search_options={},
        tool_choice={"type": "function", "function": {"name": "web_search"}},
        max_tokens=200,
            temperature=0,
    ).http_response.json()
    show(searched)
    citations = [a["url_citation"]["url"] for a in searched["choices"][0]["message"]["annotations"]]
    print(f"citations: {citations}")

    # A session: the interpreter keeps `secret` for the second request.
    for code in ("secret = 6 * 7", "print(secret)"):
        ran = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Use Python: {code}"}],
            tools=CODE,
            tool_choice="required",
            max_tokens=200,
            seed=1,  # a tiny model may ramble inside the code string until max_tokens; this seed does not
            extra_body={"session_id": "example-session", "max_tool_rounds": 1},
        ).http_response.json()
        show(ran)

    # A stream: the timeline comes as named SSE events between the chunks.
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Compute 2**20 in Python."}], "tools": CODE,
               "tool_choice": "required", "max_tokens": 200, "seed": 1, "stream": True, "max_tool_rounds": 1}
    with httpx.stream("POST", f"{BASE_URL}/chat/completions", json=request, timeout=120,
                      headers={"authorization": f"Bearer {API_KEY}"}) as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event == "agentic_tool_call_progress":
                progress = json.loads(line[len("data: "):])
                print(f"progress: {progress['tool_name']} {progress['phase']}")
                event = None
    httpx.delete(f"{BASE_URL}/sessions/example-session", headers={"authorization": f"Bearer {API_KEY}"})
    return 0 if searched.get("agentic_tool_calls") else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        print(f"cannot reach {BASE_URL}: {exc}. Start the server with `modelyard serve --agent`.", file=sys.stderr)
        sys.exit(1)
