"""List the served models and route requests by id, by alias and to an
unknown model, through the official OpenAI SDK.

Shows: `client.models.list()` with modelyard's extra fields on each model
(`modality`, `status`, `aliases`), a chat completion by the model's id and
one by its alias `gpt-4o-mini` (both answered by the same model), and the
`openai.NotFoundError` (code `model_not_found`) that an unknown model name
raises.

Run it against a running server (`make serve` serves the embedded default
config at http://localhost:1234/v1):

    .venv/bin/python examples/multi_model.py

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
HELLO = [{"role": "user", "content": "Say hello in five words."}]


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=120)

    models = list(client.models.list())
    print("models:")
    for m in models:
        # modality, status and aliases are modelyard's additions to OpenAI's model object.
        modality = getattr(m, "modality", None)
        status = getattr(m, "status", None)
        aliases = getattr(m, "aliases", None) or []
        print(f"  {m.id:<24} modality={modality} status={status} aliases={aliases}")
    chat_model = next((m for m in models if getattr(m, "modality", None) == "chat"), None)
    if chat_model is None:
        print("error: the server has no chat model", file=sys.stderr)
        return 1

    for name in (chat_model.id, "gpt-4o-mini"):
        completion = client.chat.completions.create(model=name, messages=HELLO, max_tokens=16)
        reply = (completion.choices[0].message.content or "").strip()
        # The response names the model that answered: an alias resolves to its id.
        print(f"asked for {name!r}, answered by {completion.model!r}: {reply}")

    try:
        client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=16)
    except openai.NotFoundError as exc:
        print(f"unknown model: HTTP {exc.status_code}, code={exc.code}: {exc.message}")
        if exc.code != "model_not_found":
            print(f"error: expected code model_not_found, got {exc.code!r}", file=sys.stderr)
            return 1
    else:
        print("error: an unknown model did not raise openai.NotFoundError", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
