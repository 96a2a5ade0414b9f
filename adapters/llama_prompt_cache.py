"""Prompts kept in host memory after their slot went to another request.

A slot holds one cached prompt. When a request takes a slot whose cache it
mostly cannot use, what the slot held is copied out of the KV cache
(`llama_state_seq_get_data_ext`) into this store instead of being lost; a
later request whose prompt starts with one of the saved prompts has it
copied back into its slot (`llama_state_seq_set_data_ext`) and evaluates
only the rest. So a server with 4 slots keeps the prompts of many more
conversations: each user's next turn, or an agent's long system prompt
after a burst of other work, reads only its new tail. llama-server does the
same with `--cache-ram` (its server_prompt_cache, on by default); the rules
below follow it: save when a slot would lose more than half of what it
holds, restore the saved prompt that keeps the most of the new prompt,
move an entry into the slot (it is saved again when that slot is next
given away), drop the least recently saved first when over the byte bound.

Only the decode thread uses it (it touches the llama.cpp context).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("modelyard.worker.llama_engine")

# Prompts shorter than this are cheaper to evaluate again than to copy.
MIN_TOKENS = 16


@dataclass
class SavedPrompt:
    tokens: list[int]
    data: Any  # a ctypes uint8 array holding the sequence's KV state

    @property
    def size(self) -> int:
        return len(self.data)


class PromptCache:
    """Saved sequence states, oldest first, within `max_bytes` in all."""

    def __init__(self, lib: Any, ctx: Any, max_bytes: int) -> None:
        self.lib = lib
        self.ctx = ctx
        self.max_bytes = max_bytes
        self.entries: list[SavedPrompt] = []
        self.bytes = 0

    def save(self, seq_id: int, tokens: list[int]) -> None:
        """Copy what sequence `seq_id` holds (`tokens`) out of the KV cache."""
        if self.max_bytes <= 0 or len(tokens) < MIN_TOKENS:
            return
        data = self._snapshot(seq_id, self.max_bytes)
        if data is None:
            return
        size = len(data)
        if any(e.tokens[: len(tokens)] == tokens for e in self.entries):
            return  # saved already (this slot was read in from it and added nothing)
        # An entry this one starts with (the same conversation, an earlier turn) adds nothing now.
        for old in [e for e in self.entries if e.tokens == tokens[: len(e.tokens)]]:
            self._remove(old)
        self.entries.append(SavedPrompt(list(tokens), data))
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(self.entries[0])

    def find(self, prompt: list[int], better_than: int) -> tuple[SavedPrompt, int] | None:
        """The saved prompt sharing the longest prefix with `prompt`, if that
        is longer than `better_than`, and the length of that prefix. It stays
        saved (a copy goes to the slot), now the most recently used."""
        best: tuple[SavedPrompt, int] | None = None
        for entry in self.entries:
            shared = common_prefix(entry.tokens, prompt)
            if shared > better_than and (best is None or shared > best[1]):
                best = (entry, shared)
        if best is not None:
            self.entries.remove(best[0])
            self.entries.append(best[0])
        return best

    def restore(self, entry: SavedPrompt, seq_id: int) -> bool:
        """Copy `entry` into sequence `seq_id` (which llama.cpp empties first)."""
        return self._write(entry.data, seq_id)

    def copy(self, source: int, target: int) -> bool:
        """Copy what sequence `source` holds into sequence `target` (each
        slot of a per-slot cache is a llama.cpp stream of its own, where
        `llama_memory_seq_cp` copies only whole streams)."""
        data = self._snapshot(source, None)
        return data is not None and self._write(data, target)

    def _snapshot(self, seq_id: int, max_bytes: int | None) -> Any:
        size = int(self.lib.llama_state_seq_get_size_ext(self.ctx, seq_id, 0))
        if size <= 0 or (max_bytes is not None and size > max_bytes):
            return None
        data = (ctypes.c_uint8 * size)()
        if int(self.lib.llama_state_seq_get_data_ext(self.ctx, data, size, seq_id, 0)) != size:
            log.warning("could not copy sequence %d out of the KV cache", seq_id)
            return None
        return data

    def _write(self, data: Any, seq_id: int) -> bool:
        if int(self.lib.llama_state_seq_set_data_ext(self.ctx, data, len(data), seq_id, 0)) != len(data):
            log.warning("could not copy %d bytes of KV state into sequence %d", len(data), seq_id)
            self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), seq_id, -1, -1)
            return False
        return True

    def stats(self) -> dict[str, int]:
        return {"prompt_cache_entries": len(self.entries), "prompt_cache_bytes": self.bytes}

    def _remove(self, entry: SavedPrompt) -> None:
        self.entries.remove(entry)
        self.bytes -= entry.size


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
