"""The `encrypted_content` of the reasoning items this server returns.

OpenAI returns a reasoning model's hidden reasoning encrypted, so that a
client that stores nothing on the server (`store: false`, as Codex) can
hand it back in the next request's input. This server shows the reasoning
in the item's `content` anyway, so the value is the same text, encoded
(compressed, base64url, with a marker), not encrypted: any client can read
it. Values this server did not make (OpenAI's own) are not readable and are
ignored.
"""

from __future__ import annotations

import base64
import binascii
import zlib

MARKER = "modelyard.reasoning.v1:"


def seal(text: str) -> str:
    return MARKER + base64.urlsafe_b64encode(zlib.compress(text.encode("utf-8"))).decode("ascii")


# The most reasoning text one request's items may carry back (the default
# prompt limit): together with the body limit, it bounds what decoding costs.
MAX_REASONING_CHARS = 1_000_000


class ReasoningTooLong(ValueError):
    """The reasoning items of a request decode to more than MAX_REASONING_CHARS."""


def unseal(value: object, budget: int = MAX_REASONING_CHARS) -> str | None:
    """The reasoning text of a value `seal` made, else None (a value this
    server did not make, or one cut short). Decoding stops past `budget`
    bytes: a crafted value cannot balloon, and ReasoningTooLong says so."""
    if not isinstance(value, str) or not value.startswith(MARKER):
        return None
    try:
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(base64.urlsafe_b64decode(value[len(MARKER) :]), max(0, budget) + 1)
        if len(raw) > budget:
            raise ReasoningTooLong(f"reasoning items carry more than {MAX_REASONING_CHARS:,} characters")
        if not decompressor.eof or decompressor.unused_data:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError):
        return None
