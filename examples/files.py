"""Store files on the server and get them back, through the official OpenAI
SDK and the Anthropic SDK: both talk to the same store.

Shows: `client.files.create` (with `purpose` and an `expires_after`),
`client.files.list` with pages (`limit`, `after`, the SDK's auto-paging),
`client.files.retrieve`, `client.files.content` (the same bytes back, with
a Content-Type guessed from the name), `client.files.delete`; then the same
file seen through `anthropic.Anthropic().beta.files`. No model is needed.

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/files.py

Exits 1 if a file does not come back as it was sent.

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import json
import os
import sys

import anthropic
import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=60)
    rows = "".join(json.dumps({"prompt": f"question {i}", "answer": f"answer {i}"}) + "\n" for i in range(3))
    uploaded = []
    for i in range(3):
        made = client.files.create(
            file=(f"part-{i}.jsonl", rows.encode()),
            purpose="user_data",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
        print(f"uploaded {made.filename}: {made.id}, {made.bytes} bytes, expires at {made.expires_at}")
        uploaded.append(made)

    page = client.files.list(purpose="user_data", limit=2)
    print(f"first page: {[f.filename for f in page.data]}, has_more={page.has_more}")
    every = [f.id for f in client.files.list(purpose="user_data", limit=2)]  # follows `after` page by page
    print(f"all pages: {len(every)} files")

    first = client.files.retrieve(uploaded[0].id)
    content = client.files.with_raw_response.content(first.id)
    print(f"downloaded {first.filename}: {len(content.content)} bytes, {content.headers['content-type']}")
    if content.content != rows.encode() or not {f.id for f in uploaded} <= set(every):
        print("error: a file did not come back as it was sent", file=sys.stderr)
        return 1

    # The same store through Anthropic's API (its base URL has no /v1).
    claude = anthropic.Anthropic(base_url=BASE_URL.removesuffix("/v1"), api_key=API_KEY, timeout=60)
    seen = claude.beta.files.retrieve_metadata(first.id)
    print(f"anthropic sees {seen.filename}: {seen.size_bytes} bytes, {seen.mime_type}, created {seen.created_at}")

    for made in uploaded:
        deleted = client.files.delete(made.id)
        print(f"deleted {deleted.id}: {deleted.deleted}")
    try:
        client.files.retrieve(first.id)
    except openai.NotFoundError as exc:
        print(f"after delete: 404 {exc.body['code']}")  # type: ignore[index]
        return 0
    print("error: a deleted file is still there", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
