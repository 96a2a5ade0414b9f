"""Values the Files and Skills APIs read from query strings, form fields and
paths, parsed once: whole numbers in ASCII digits, and times as RFC 3339."""

from __future__ import annotations

import re
from datetime import datetime, timezone

# ASCII digits only (str.isdigit() also takes "²" and other digits int() refuses),
# and few enough that SQLite's 64-bit integers hold them.
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,15}")


def whole_number(text: str) -> int | None:
    """`text` as an int, or None when it is not a whole number of at most 15 ASCII digits."""
    text = text.strip()
    return int(text) if WHOLE_NUMBER.fullmatch(text) else None


def rfc3339(seconds: float | None) -> str | None:
    """A Unix time as Anthropic's APIs write it ("2026-12-02T12:00:00Z")."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")
