"""One request's generation on the llama-cpp engine (adapters/llama_engine.py):
what it feeds the context next, and what each sampled token becomes.

The engine's decode thread owns the context. Each step it feeds every
sequence its `pending` tokens and, once a sequence's pending tokens are all
in, hands it the logits at its batch index (`after_logits`). The sequence
samples from its own sampler chain and turns the token into events: text
(stop strings held back until they can no longer match), logprobs, a
grammar that switches on at a tool-call trigger, a reasoning budget whose
end tag is written rather than sampled. Its events go onto a queue that the
request's own thread reads (`events`), so a slow client never stalls the
decode thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelyard.adapters.base import Finished, PromptTokens, Sampling, TextDelta, TokenLogprob, TopLogprob
from modelyard.adapters.containment import RequestCancelled
from modelyard.adapters.llama_sampling import SamplerChain
from modelyard.adapters.llama_vision import ImagePrompt
from modelyard.adapters.reasoning import ReasoningBudget
from modelyard.adapters.textstream import find_stop, partial_stop_suffix, utf8_decoder


@dataclass
class Phase:
    """What the sequence samples under: a grammar (or none) and, in the
    free phase, a trigger that switches to the tool-call grammar."""

    grammar: str | None
    trigger: str | None = None
    then: str | None = None  # grammar after the trigger


@dataclass
class Decoded:
    """Text the sequence has produced and not yet handed out."""

    held: str = ""
    decoder: Any = field(default_factory=utf8_decoder)  # a character split over tokens waits for its last byte
    logprobs: list[TokenLogprob] = field(default_factory=list)


class Vocabulary:
    """What a sequence needs of the model's vocabulary, shared by all of them:
    token pieces (cached: a token's bytes never change), end-of-generation
    tokens, tokenizing forced text, and logprobs from a batch row's logits."""

    def __init__(self, lib: Any, vocab: Any, n_vocab: int, tokenize: Callable[[str], list[int]]) -> None:
        import ctypes

        self.lib = lib
        self.vocab = vocab
        self.n_vocab = n_vocab
        self.tokenize = tokenize
        self._pieces: dict[int, bytes] = {}
        self._buffer = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> bytes:
        found = self._pieces.get(token)
        if found is None:
            n = self.lib.llama_token_to_piece(self.vocab, token, self._buffer, len(self._buffer), 0, False)
            found = self._buffer.raw[: max(0, n)]
            self._pieces[token] = found
        return found

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def logprobs(self, ctx: Any, index: int, token: int, top_n: int) -> TokenLogprob:
        import numpy as np

        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())

        def entry(t: int) -> TopLogprob:
            raw = self.piece(t)
            return TopLogprob(raw.decode("utf-8", errors="replace"), float(logprobs[t]), list(raw))

        chosen = entry(token)
        top: list[TopLogprob] = []
        if top_n > 0:
            best = np.argpartition(-logprobs, top_n)[:top_n]
            top = [entry(int(t)) for t in best[np.argsort(-logprobs[best])]]
        return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes, top)


_END = object()  # the queue's last item after a cancel during the prompt


class Sequence:
    """One chat or completion call, from its prompt to its Finished event."""

    def __init__(
        self,
        vocab: Vocabulary,
        prompt: list[int],
        sampling: Sampling,
        stops: list[str],
        phase: Phase,
        samplers: tuple[SamplerChain, SamplerChain | None],  # now, and after the tool-call trigger
        cancelled: threading.Event,
        *,
        n_ctx: int,
        reuse_prefix: bool,
        forced_prefix: str = "",
        budget: ReasoningBudget | None = None,
        shown: str = "",  # text the prompt opened, shown before the answer (a reasoning tag)
        images: ImagePrompt | None = None,  # the prompt's images, whose places in `prompt` hold sentinels
    ) -> None:
        self.vocab = vocab
        self.prompt = prompt
        self.sampling = sampling
        self.stops = [s for s in stops if s]
        self.phase = phase
        self.sampler, self.then_sampler = samplers
        self.cancelled = cancelled
        self.n_ctx = n_ctx
        self.reuse_prefix = reuse_prefix  # whether the engine may serve a cached prefix (not for seeded requests)
        self.budget = budget
        self.images = images
        self.max_tokens = n_ctx - len(prompt) if sampling.max_tokens is None else sampling.max_tokens
        forced = vocab.tokenize(forced_prefix) if forced_prefix else []
        self.context = [*prompt, *forced]  # every token that is or will be in the cache
        self.fed = 0  # how many of `context` the cache holds
        self.forced_prefix = forced_prefix
        self.shown = shown
        self.generated = 0
        self.cached = 0
        self.started = False  # admitted once (a sequence pushed out of the cache is admitted again)
        self.sampled = False  # sampled at least once: it is decoding, not reading its prompt
        self.done = False
        self.abandoned = False  # its reader went away
        self.out = Decoded()
        self.closing = budget.opening() if budget is not None else None
        self.events_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    # --- the engine's side (the decode thread) ----------------------------

    @property
    def pending(self) -> list[int]:
        return self.context[self.fed :]

    def admitted(self, cached: int) -> None:
        """A slot holds the first `cached` tokens of the context; the rest are fed from here."""
        self.fed = cached
        if self.started:
            return
        self.started = True
        self.cached = cached
        self.put(PromptTokens(len(self.prompt), cached))
        if self.shown:
            self.put(TextDelta(self.shown))
        if self.forced_prefix:
            self.put(TextDelta(self.forced_prefix))  # a required tool call: its opening tag is written, not sampled
        if self.closing:
            self._force_closing()

    def stopped(self) -> bool:
        return self.cancelled.is_set() or self.abandoned

    def after_logits(self, ctx: Any, index: int) -> bool:
        """Sample the next token from batch row `index`; False once the sequence has finished."""
        self.sampled = True
        if not (self.generated < self.max_tokens and len(self.context) < self.n_ctx):
            return self.finish("length")
        token = self.sampler.sample(ctx, index)
        if self.vocab.is_eog(token):
            return self.finish("stop")
        self.generated += 1
        out = self.out
        if self.sampling.logprobs is not None:
            out.logprobs.append(self.vocab.logprobs(ctx, index, token, self.sampling.logprobs))
        piece = out.decoder.decode(self.vocab.piece(token))
        out.held += piece
        self.context.append(token)
        phase = self.phase
        if phase.trigger is not None and phase.trigger in out.held:
            # The model opened a tool call: constrain the rest to valid calls.
            self._flush(out.held.index(phase.trigger) + len(phase.trigger))
            self.sampler.close()
            assert self.then_sampler is not None
            self.sampler, self.then_sampler = self.then_sampler, None
            self.phase = phase = Phase(grammar=phase.then)
            self.stops = []  # the grammar decides where a call ends
        hit, matched = find_stop(out.held, self.stops)
        if hit >= 0:
            self._flush(hit)
            out.held = ""
            return self.finish("stop", matched if matched in self.sampling.stop else None)
        keep = max(
            partial_stop_suffix(out.held, self.stops),
            partial_stop_suffix(out.held, [phase.trigger]) if phase.trigger else 0,
        )
        self._flush(len(out.held) - keep)
        if self.budget is not None and phase.grammar is None:
            # Under a grammar (a tool call, structured output) a tag in the
            # text is data: writing an end tag past the grammar would break it.
            self.closing = self.budget.feed(piece)
            if self.closing:
                return self._force_closing()
        return True

    def _force_closing(self) -> bool:
        """The reasoning budget is spent: the end tag is written, not sampled."""
        assert self.closing is not None
        closing, self.closing = self.closing, None
        if not (self.generated < self.max_tokens and len(self.context) < self.n_ctx):
            return self.finish("length")
        forced = self.vocab.tokenize(closing)
        if len(self.context) + len(forced) >= self.n_ctx or self.generated + len(forced) > self.max_tokens:
            return self.finish("length")  # no room left for the tag and an answer: the output ends at its limit
        self.context += forced
        self.generated += len(forced)
        self.out.held += closing
        return True

    def finish(self, reason: str, stop_sequence: str | None = None) -> bool:
        """End the sequence: the rest of its text, then Finished with its usage."""
        self._end()
        # Bytes of a character cut off by max_tokens are dropped, not shown as U+FFFD.
        self.out.decoder.reset()
        self._flush(len(self.out.held))
        self.put(
            Finished(
                reason,
                prompt_tokens=len(self.prompt),
                completion_tokens=self.generated,
                stop_sequence=stop_sequence,
                cached_tokens=self.cached,
            )
        )
        return False

    def cancel(self) -> None:
        """The client left or the deadline passed: stop within this token."""
        if self.done:
            return
        if self.sampled:
            self.finish("length")
            return
        self._end()
        self.put(_END)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._end()
            self.put(error)

    def _end(self) -> None:
        self.done = True
        for sampler in (self.sampler, self.then_sampler):
            if sampler is not None:
                sampler.close()
        if self.images is not None:
            self.images.close()  # on the decode thread, which alone evaluates them

    def put(self, item: Any) -> None:
        self.events_queue.put(item)

    def _flush(self, upto: int) -> None:
        out = self.out
        if upto <= 0 and not out.logprobs:
            return
        text, out.held = out.held[:upto], out.held[upto:]
        if text or out.logprobs:
            self.put(TextDelta(text, out.logprobs or None))
            out.logprobs = []

    # --- the reader's side (the request's thread) -------------------------

    def events(self) -> Iterator[Any]:
        """The sequence's events as the engine makes them, up to Finished."""
        try:
            while True:
                item = self.events_queue.get()
                if item is _END:
                    raise RequestCancelled("cancelled")
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            self.abandoned = True  # the engine drops it at its next step, if it still runs
