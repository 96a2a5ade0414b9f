"""Continuous batching for llama.cpp: one context, several sequences, one
decode thread.

The context holds `slots` sequences (llama.cpp sequence ids 0..slots-1).
Each step, the decode thread builds one `llama_batch` with the next token
of every decoding sequence first, then chunks of the prompts of newly
admitted ones up to `n_batch` (chunked prefill: a long new prompt does not
freeze the running streams), calls `llama_decode` once, and lets each
sequence whose input is all in sample from its own sampler chain at its
batch row. This is llama-server's `update_slots` (tools/server in the
llama.cpp sources), in Python.

A slot keeps what its cache holds after its request ends, so a follow-up
sharing a prefix with it (a multi-turn chat, an agent's long system prompt)
goes to that slot and reads only the new tail. A request that goes to
another slot has the longest prefix of its prompt that any slot or a
prompt saved in host memory holds copied in first
(adapters/llama_prompt_cache.py).

The KV cache is either per slot (the default: each sequence its own
`n_ctx` cells, a llama.cpp stream of its own, so that what a request
computes does not depend on what runs beside it, bit for bit) or one pool
of `n_ctx` cells that all slots share (llama.cpp's unified cache: less
memory, and any one request may use all of it, but attention then spans
other sequences' cells, masked, which changes the last bits of the logits).
When a shared pool is full, idle slots' caches go first, least recently
used; then the sequence admitted last is pushed out and waits to be read in
again (its text so far kept, as vLLM's preemption by recomputation); a
request waits in the queue while its prompt does not fit.

A prompt with images (a model loaded with its multimodal projector,
adapters/llama_vision.py) is fed its text up to each image; when a sequence
reaches an image, the step after the batch's decode encodes it and decodes
its embeddings into that sequence's cells, one image a step, so running
streams wait for at most one image encode between their tokens. An image's
places hold sentinels unique to its bytes, so cached prefixes match only
where the same image is, and a prefix taken from a cache never ends inside
an image.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from modelyard.adapters.base import BackendError
from modelyard.adapters.llama_batch import Batch
from modelyard.adapters.llama_prompt_cache import PromptCache, common_prefix
from modelyard.adapters.llama_sequence import Sequence
from modelyard.adapters.llama_vision import Projector

log = logging.getLogger("modelyard.worker.llama_engine")

# A prompt always has its last two tokens evaluated anew: the logits must come
# from this evaluation, and llama.cpp rounds a one-token batch row differently
# from a longer one; with two, a repeated request gets a fresh evaluation's
# logits (on CPU; tokens the model generated still differ when reused).
FRESH_TAIL = 2
# A prefix is copied into a slot from a saved prompt or another slot only if
# it saves evaluating at least this many more tokens than the slot keeps.
MIN_GAIN = 8


@dataclass
class Slot:
    """One llama.cpp sequence id, and the tokens the cache holds for it."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    sequence: Sequence | None = None
    last_used: float = 0.0


@dataclass
class Portion:
    """What one sequence puts into one step's batch."""

    slot: Slot
    count: int
    row: int | None  # where its logits are, if it samples after this step


class Engine:
    def __init__(
        self,
        lib: Any,
        model: Any,
        *,
        n_ctx: int,
        n_batch: int,
        slots: int,
        n_threads: int,
        n_threads_batch: int,
        prefix_cacheable: bool,
        shared_cache: bool = False,
        flash_attn: bool = True,
        prompt_cache_bytes: int = 0,
        projector: Projector | None = None,
    ) -> None:
        self.lib = lib
        self.projector = projector
        params = lib.llama_context_default_params()
        if not n_ctx:
            n_ctx = lib.llama_model_n_ctx_train(model)
        # Per slot, each sequence has its own n_ctx cells (llama.cpp's split
        # cache, a stream per sequence): what one request computes does not
        # depend on what runs beside it. Shared: one pool of n_ctx cells.
        params.n_ctx = n_ctx if shared_cache else n_ctx * slots
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = shared_cache
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.no_perf = True
        self.ctx = lib.llama_init_from_model(model, params)
        if not self.ctx:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens for {slots} slots")
        self.memory = lib.llama_get_memory(self.ctx)
        self.shared_cache = shared_cache
        self.cells = lib.llama_n_ctx(self.ctx)  # in all
        self.n_ctx = lib.llama_n_ctx_seq(self.ctx)  # what one sequence may hold
        self.n_batch = lib.llama_n_batch(self.ctx)
        self.prefix_cacheable = prefix_cacheable
        # Prompts that lost their slot, in host memory (per-slot KV only: a
        # shared pool frees room by dropping idle caches, which this would keep).
        self.saved = PromptCache(lib, self.ctx, 0 if shared_cache or not prefix_cacheable else prompt_cache_bytes)
        self.batch = Batch(lib, self.n_batch)
        self.slots = [Slot(i) for i in range(slots)]
        self.waiting: deque[Sequence] = deque()
        self.cond = threading.Condition()
        self.closing = False
        # Totals since load, for /health and /metrics.
        self.prompt_tokens_cached = 0
        self.prompt_tokens_evaluated = 0
        self.thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self.thread.start()

    # --- the callers' side ---------------------------------------------------

    def submit(self, sequence: Sequence) -> None:
        with self.cond:
            if self.closing:
                raise BackendError("the model is shutting down")
            self.waiting.append(sequence)
            self.cond.notify()

    def stats(self) -> dict[str, int]:
        busy = sum(1 for s in self.slots if s.sequence is not None)
        return {
            "slots": len(self.slots),
            "slots_busy": busy,
            "engine_queued": len(self.waiting),
            "kv_cells": self.cells,
            "kv_cells_used": sum(len(s.tokens) for s in self.slots),
            "prompt_tokens_cached": self.prompt_tokens_cached,
            "prompt_tokens_evaluated": self.prompt_tokens_evaluated,
            **self.saved.stats(),
        }

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join()
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None

    # --- the decode thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closing and not self.waiting and not self._busy():
                    self.cond.wait()
                if self.closing:
                    break
            try:
                self._drop_stopped()
                self._admit()
                self._step()
            except Exception as exc:  # a failed decode ends the sequences it held, not the worker
                log.exception("llama.cpp decode step failed")
                for slot in self.slots:
                    if slot.sequence is not None:
                        slot.sequence.fail(BackendError(f"llama.cpp failed while decoding: {exc}"))
                        self._free(slot, keep_cache=False)
        shutdown = BackendError("the model is shutting down")
        for slot in self.slots:
            if slot.sequence is not None:
                slot.sequence.fail(shutdown)
        while self.waiting:
            self.waiting.popleft().fail(shutdown)

    def _busy(self) -> bool:
        return any(s.sequence is not None for s in self.slots)

    def _used(self) -> int:
        return sum(len(s.tokens) for s in self.slots)

    def _drop_stopped(self) -> None:
        for slot in self.slots:
            if slot.sequence is not None and slot.sequence.stopped():
                sequence = slot.sequence
                if not sequence.sampled:
                    log.debug(
                        "prompt stopped after %d of %d tokens (%d reused): cancelled",
                        sequence.fed,
                        len(sequence.prompt),
                        sequence.cached,
                    )
                sequence.cancel()
                self._free(slot, keep_cache=False)  # its cells are free at once
        with self.cond:
            stopped = [s for s in self.waiting if s.stopped()]
            for sequence in stopped:
                self.waiting.remove(sequence)
        for sequence in stopped:
            sequence.cancel()

    def _admit(self) -> None:
        """Give waiting sequences free slots, in order, while their input fits the cache."""
        while True:
            with self.cond:
                if not self.waiting:
                    return
                sequence = self.waiting[0]
            free = [s for s in self.slots if s.sequence is None]
            if not free:
                return
            slot, keep = self._best_slot(free, sequence)
            keep = self._swap_in(slot, keep, sequence)
            if sequence.images is not None:
                keep = sequence.images.aligned(keep)
            self._cut(slot, keep)
            need = len(sequence.context) - len(slot.tokens) + 1
            if self.shared_cache and not self._make_room(need, spare=slot) and self._busy():
                return  # it waits until running sequences finish
            with self.cond:
                self.waiting.popleft()
            slot.sequence = sequence
            slot.last_used = time.monotonic()
            cached = len(slot.tokens)
            if not sequence.started:
                self.prompt_tokens_cached += cached
            sequence.admitted(cached)
            if sequence.done:  # nothing to generate (a reasoning tag that did not fit)
                self._free(slot, keep_cache=True)

    def _best_slot(self, free: list[Slot], sequence: Sequence) -> tuple[Slot, int]:
        """The free slot to run `sequence` in, and how much of its cache to keep.

        A slot is taken for its cached prefix when the prefix saves at least
        as many tokens as taking the slot drops (a conversation's next turn
        finds its own slot; an unrelated request that shares only the chat
        template's first tokens does not wipe it). Otherwise: an empty slot,
        else the least recently used one."""
        usable = self._usable(sequence)
        reuse = self._reusable(sequence)
        shared = {id(slot): common_prefix(slot.tokens, usable) if reuse else 0 for slot in free}
        worth = [slot for slot in free if 0 < shared[id(slot)] >= len(slot.tokens) - shared[id(slot)]]
        if worth:
            best = max(worth, key=lambda slot: shared[id(slot)])
        else:
            best = min(free, key=lambda slot: (len(slot.tokens) > 0, slot.last_used))
        return best, shared[id(best)]

    def _swap_in(self, slot: Slot, keep: int, sequence: Sequence) -> int:
        """Before `slot` is cut back to `keep` tokens for `sequence`: read in
        instead the longest prefix of its prompt that a saved prompt or
        another slot holds, if longer; save what `slot` held if that loses
        more than half of it. How much of the slot to keep."""
        if self.shared_cache or not self._reusable(sequence):
            return keep
        usable = self._usable(sequence)
        found = self.saved.find(usable, better_than=keep + MIN_GAIN - 1)
        donors = [(common_prefix(s.tokens, usable), s) for s in self.slots if s is not slot and s.tokens]
        donor = max(donors, key=lambda pair: pair[0], default=(0, None))
        gain = max(found[1] if found else 0, donor[0])
        if gain < keep + MIN_GAIN:
            if keep * 2 < len(slot.tokens):
                self.saved.save(slot.seq_id, slot.tokens)
            return keep
        self.saved.save(slot.seq_id, slot.tokens)
        if found is not None and found[1] >= donor[0]:
            entry, shared = found
            copied, tokens = self.saved.restore(entry, slot.seq_id), entry.tokens
        else:
            shared, source = donor
            assert source is not None
            copied, tokens = self.saved.copy(source.seq_id, slot.seq_id), source.tokens
        slot.tokens = list(tokens) if copied else []
        return shared if copied else 0

    def _usable(self, sequence: Sequence) -> list[int]:
        """The part of its prompt a sequence may take from a cache."""
        return sequence.context[: max(0, len(sequence.prompt) - FRESH_TAIL)]

    def _reusable(self, sequence: Sequence) -> bool:
        return sequence.reuse_prefix and self.prefix_cacheable and not sequence.started

    def _cut(self, slot: Slot, keep: int) -> None:
        """Drop what the slot's cache holds past its first `keep` tokens."""
        if keep >= len(slot.tokens):
            return
        if keep and self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1):
            del slot.tokens[keep:]
            return
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)  # a cut that fails: read in full
        slot.tokens.clear()

    def _free(self, slot: Slot, keep_cache: bool) -> None:
        slot.sequence = None
        slot.last_used = time.monotonic()
        if not keep_cache:
            self._cut(slot, 0)

    def _make_room(self, need: int, spare: Slot | None = None) -> bool:
        """Free cells for `need` more tokens by dropping idle slots' caches, least recently used first."""
        idle = sorted((s for s in self.slots if s.sequence is None and s is not spare and s.tokens), key=lambda s: s.last_used)
        while self._used() + need > self.cells and idle:
            self._cut(idle.pop(0), 0)
        return self._used() + need <= self.cells

    def _preempt(self) -> bool:
        """Push out the sequence admitted last (the cache is full): it waits at
        the head of the queue and is read in again, its text so far kept."""
        running = [s for s in self.slots if s.sequence is not None]
        if len(running) < 2:
            return False
        slot = max(running, key=lambda s: s.last_used)
        sequence = slot.sequence
        assert sequence is not None
        log.info("KV cache full: sequence in slot %d (%d tokens) waits to be read in again", slot.seq_id, len(slot.tokens))
        sequence.fed = 0
        self._free(slot, keep_cache=False)
        with self.cond:
            self.waiting.appendleft(sequence)
        return True

    def _plan(self) -> list[Portion]:
        """This step's batch: one token of each decoding sequence first, then prompt chunks."""
        running = sorted((s for s in self.slots if s.sequence is not None), key=lambda s: (not s.sequence.sampled, s.last_used))  # type: ignore[union-attr]
        batch = self.batch
        batch.clear()
        portions = []
        room = self.n_batch
        for slot in running:
            sequence = slot.sequence
            assert sequence is not None
            pending = sequence.pending
            count = min(len(pending), room)
            if sequence.images is not None:
                image = sequence.images.next_start(sequence.fed)
                if image is not None:
                    count = min(count, image - sequence.fed)  # the text up to the image; the image after the decode
            if count <= 0:
                continue
            whole = count == len(pending)
            row = batch.add(pending[:count], sequence.fed, slot.seq_id, want_logits=whole)
            portions.append(Portion(slot, count, row))
            room -= count
        return portions

    def _step(self) -> None:
        portions = self._plan()
        if portions:
            self._decode_step(portions)
        # After the batch's sampling: an image's decode replaces the context's logits.
        self._image_step()

    def _decode_step(self, portions: list[Portion]) -> None:
        need = sum(p.count for p in portions)
        if self.shared_cache and not self._make_room(need) and self._preempt():
            return  # planned again next step, without it
        result = self._decode()
        if result == 1:
            # No room found for the batch (the cache is full or fragmented).
            if self.shared_cache and (self._make_room(self.cells) or self._preempt()):
                return
            for portion in portions:
                assert portion.slot.sequence is not None
                portion.slot.sequence.fail(BackendError("the KV cache has no room left for this request"))
                self._free(portion.slot, keep_cache=False)
            return
        if result != 0:
            raise RuntimeError(f"llama_decode returned {result}")
        for portion in portions:
            slot, sequence = portion.slot, portion.slot.sequence
            assert sequence is not None
            slot.tokens.extend(sequence.pending[: portion.count])
            sequence.fed += portion.count
            if not sequence.sampled:
                self.prompt_tokens_evaluated += portion.count
                if portion.row is not None:
                    log.debug(
                        "prompt of %d tokens: %d reused from the cache, %d evaluated",
                        len(sequence.prompt),
                        sequence.cached,
                        len(sequence.prompt) - sequence.cached,
                    )
            if portion.row is not None and not sequence.after_logits(self.ctx, portion.row):
                self._free(slot, keep_cache=True)

    def _image_step(self) -> None:
        """Evaluate the image one prefilling sequence has reached, the longest waiting first."""
        if self.projector is None:
            return
        running = sorted((s for s in self.slots if s.sequence is not None), key=lambda s: s.last_used)
        for slot in running:
            sequence = slot.sequence
            assert sequence is not None
            span = sequence.images.at(sequence.fed) if sequence.images is not None else None
            if span is not None:
                break
        else:
            return
        if self.shared_cache and not self._make_room(span.count) and self._preempt():
            return  # planned again next step, without the sequence pushed out
        try:
            self.projector.evaluate(self.ctx, span, slot.seq_id, sequence.fed, self.n_batch)
        except BackendError as exc:
            sequence.fail(exc)
            self._free(slot, keep_cache=False)
            return
        slot.tokens.extend(sequence.context[sequence.fed : sequence.fed + span.count])
        sequence.fed += span.count
        self.prompt_tokens_evaluated += span.count

    def _decode(self) -> int:
        """One llama_decode over the step's batch (the GIL is released while it runs)."""
        self.batch.struct.n_tokens = self.batch.n_tokens
        return int(self.lib.llama_decode(self.ctx, self.batch.struct))

