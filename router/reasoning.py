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


def unseal(value: object) -> str | None:
    """The reasoning text of a value `seal` made, else None."""
    if not isinstance(value, str) or not value.startswith(MARKER):
        return None
    try:
        # A bound on the decompressed size: a crafted value cannot balloon.
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(base64.urlsafe_b64decode(value[len(MARKER) :]), 4_000_000)
        return raw.decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        return None
