"""System messages anywhere in a conversation, for chat templates that take
one leading system message only (Qwen3's "System message must be at the
beginning", Mistral's, Llama 2's): all system texts merged, in order, into
that one. Templates that take system turns anywhere (ChatML, Llama 3) get
them where the client put them; adapters merge only when the template
rejects the conversation as it was sent."""

from __future__ import annotations

from typing import Any


def has_late_system(messages: list[dict[str, Any]]) -> bool:
    """Whether a system message comes after the first message, or there are several."""
    return any(m.get("role") == "system" for m in messages[1:])


def merged_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    texts = [m.get("content") or "" for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": "\n\n".join(t for t in texts if t)}, *rest]
