"""A `llama_batch` over numpy arrays, filled a slice at a time."""

from __future__ import annotations

import ctypes
from typing import Any


class Batch:
    """A `llama_batch` over arrays this object owns (numpy views, filled a
    slice at a time), one sequence id per token."""

    def __init__(self, lib: Any, capacity: int) -> None:
        import numpy as np

        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq_id = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        i32 = ctypes.POINTER(ctypes.c_int32)
        self._seq_rows = (i32 * capacity)(*(ctypes.cast(self.seq_id.ctypes.data + 4 * i, i32) for i in range(capacity)))
        self.struct = lib.llama_batch()
        self.struct.token = self.token.ctypes.data_as(i32)
        self.struct.embd = None
        self.struct.pos = self.pos.ctypes.data_as(i32)
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(i32)
        self.struct.seq_id = ctypes.cast(self._seq_rows, ctypes.POINTER(i32))
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.n_tokens = 0

    def clear(self) -> None:
        self.n_tokens = 0

    def add(self, tokens: list[int], start_pos: int, seq_id: int, want_logits: bool) -> int | None:
        """Append `tokens` at positions from `start_pos`; the row of the last one if its logits are wanted."""
        n, k = self.n_tokens, len(tokens)
        self.token[n : n + k] = tokens
        self.pos[n : n + k] = range(start_pos, start_pos + k)
        self.seq_id[n : n + k] = seq_id
        self.logits[n : n + k] = 0
        self.n_tokens = n + k
        if want_logits:
            self.logits[n + k - 1] = 1
            return n + k - 1
        return None
