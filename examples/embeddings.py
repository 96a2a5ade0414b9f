"""Semantic search: embed a few sentences, then find the one closest in
meaning to a query, through the official OpenAI SDK.

Shows: `client.embeddings.create` with a list of inputs (one request for the
whole index) and with a single string, the model's alias
`text-embedding-3-small` (answered by `minilm`), and cosine similarity
between the returned vectors. The SDK asks for `encoding_format="base64"`
by default and decodes it; modelyard sends little-endian float32, as
OpenAI does.

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/embeddings.py

Exits 1 if the best match is not the expected sentence.

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1) and
MODELYARD_API_KEY (default "not-needed"; set it when the server has
[[auth.keys]]).
"""

from __future__ import annotations

import math
import os
import sys

import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")

DOCUMENTS = [
    "The cat sleeps on the warm windowsill all afternoon.",
    "Interest rates were raised by the central bank to fight inflation.",
    "The recipe needs two cups of flour, three eggs and a pinch of salt.",
    "The striker scored twice in the final minutes of the match.",
    "Volcanoes form where tectonic plates pull apart or collide.",
]
QUERY = "Which football player got two goals late in the game?"
EXPECTED = 3


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)

    # Index: every document in one request; data[i] belongs to input i.
    indexed = client.embeddings.create(model="minilm", input=DOCUMENTS)
    vectors = [item.embedding for item in sorted(indexed.data, key=lambda item: item.index)]
    print(f"model: {indexed.model}")
    print(
        f"indexed {len(vectors)} sentences, {len(vectors[0])} dimensions, usage: prompt={indexed.usage.prompt_tokens}"
    )

    # Query by the OpenAI model name: the alias routes to the same model.
    query = client.embeddings.create(model="text-embedding-3-small", input=QUERY)
    print(f"query: {QUERY!r} (answered by {query.model!r})")
    scores = [cosine(query.data[0].embedding, vector) for vector in vectors]
    ranking = sorted(range(len(DOCUMENTS)), key=lambda i: scores[i], reverse=True)
    for i in ranking:
        print(f"  {scores[i]:.3f}  {DOCUMENTS[i]}")
    best = ranking[0]
    print(f"best match: {DOCUMENTS[best]}")
    if best != EXPECTED:
        print(f"error: expected the best match to be {DOCUMENTS[EXPECTED]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
