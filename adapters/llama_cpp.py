"""llama-cpp-python: GGUF chat and completion models (embeddings:
adapters/llama_embeddings.py; grammars: adapters/llama_grammar.py).

The chat template comes from `options.chat_template` (a Jinja template, or
"chatml" for the built-in ChatML one) or else the GGUF metadata
(`tokenizer.chat_template`). We format and tokenize the prompt ourselves and run
the decode loop here, with our own sampler chain: exact token counts, stop
strings held back until they can no longer match, logprobs, grammars
(structured output, tool calls) that can switch on mid-generation, and a
cancellation check per token, per prompt batch and between the stages
(template, tokenizer, grammar) of a request.

Only public llama-cpp-python API is used: the high-level `Llama` object,
and the low-level C bindings (`llama_cpp.llama_*`) on its public `model`
and `ctx` handles (the sampler chain: adapters/llama_sampling.py). The C
bindings follow llama.cpp's fast-moving API, hence the upper bound on
llama-cpp-python in pyproject.toml.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.adapters import tools as toolkit
from modelyard.adapters.base import (
    TOOL_CALL_START,
    ChatAdapter,
    ChatEvent,
    ChatRequest,
    CompletionRequest,
    Constraint,
    Finished,
    InvalidRequestError,
    PromptTokens,
    Sampling,
    TextDelta,
    TokenLogprob,
    ToolCalling,
    TopLogprob,
)
from modelyard.adapters.containment import RequestCancelled
from modelyard.adapters.llama_grammar import schema_to_gbnf, tool_call_grammar
from modelyard.adapters.llama_options import LlamaCppEmbeddingOptions, LlamaCppLoadOptions, LlamaCppOptions, open_llama
from modelyard.adapters.llama_sampling import SamplerChain
from modelyard.adapters.reasoning import ReasoningBudget
from modelyard.adapters.system_messages import has_late_system, merged_system
from modelyard.adapters.textstream import find_stop, partial_stop_suffix, utf8_decoder
from pydantic import BaseModel

# Re-exported: the catalog and the config tests name them here.
__all__ = ["LlamaCppChat", "LlamaCppEmbeddingOptions", "LlamaCppLoadOptions", "LlamaCppOptions", "Phase", "tool_call_grammar"]

log = logging.getLogger("modelyard.worker.llama_cpp")


CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def stop_if(cancelled: threading.Event | None) -> None:
    """End a call whose client left or whose deadline passed, between stages."""
    if cancelled is not None and cancelled.is_set():
        raise RequestCancelled("cancelled")


@dataclass
class Phase:
    """What the decode loop samples under: a grammar (or none) and, in the
    free phase, a trigger that switches to the tool-call grammar."""

    grammar: str | None
    trigger: str | None = None
    then: str | None = None  # grammar after the trigger


@dataclass
class Decoded:
    """Text the loop has produced and not yet handed out."""

    held: str = ""
    decoder: Any = field(default_factory=utf8_decoder)  # a character split over tokens waits for its last byte
    logprobs: list[TokenLogprob] = field(default_factory=list)


class LlamaCppChat(ChatAdapter):
    Options = LlamaCppOptions
    # One llama.cpp context decodes one sequence at a time.
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, LlamaCppOptions)
        import llama_cpp
        from llama_cpp import llama_chat_format

        self._lib = llama_cpp
        self.options = options
        self.llm = open_llama(path, options)
        self.n_vocab = self.llm.n_vocab()
        self._formatter: Any = None
        self._eog: list[int] | None = None
        template = options.chat_template or self.llm.metadata.get("tokenizer.chat_template")
        if template == "chatml":
            template = CHATML_TEMPLATE
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        # A cache that can be cut back to a prefix: not the state of a
        # recurrent or hybrid model (Mamba, Jamba, LFM2), nor a sliding-window
        # cache (Gemma 2/3), which drops cells older than its window that a
        # shorter prefix would still need. llama-server re-reads those in full too.
        model = self.llm.model
        self._prefix_cacheable = not (
            llama_cpp.llama_model_is_recurrent(model)
            or llama_cpp.llama_model_is_hybrid(model)
            or llama_cpp.llama_model_n_swa(model) > 0
        )
        if template:
            eos_id = self.llm.token_eos()
            bos_id = self.llm.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self.token_text(eos_id) if eos_id >= 0 else "",
                bos_token=self.token_text(bos_id) if bos_id >= 0 else "",
                stop_token_ids=[eos_id] if eos_id >= 0 else None,
            )
        self.has_chat_template = self._formatter is not None

    def eog_tokens(self) -> list[int]:
        """The vocabulary's end-of-generation tokens (EOS, EOT, <|im_end|>...), found once."""
        if self._eog is None:
            self._eog = [t for t in range(self.n_vocab) if self._lib.llama_vocab_is_eog(self.vocab, t)]
        return self._eog

    def token_text(self, token: int) -> str:
        return bytes(self._lib.llama_vocab_get_text(self.vocab, token)).decode("utf-8", errors="replace")

    # --- prompts -----------------------------------------------------------

    def _chat_prompt(self, request: ChatRequest, cancelled: threading.Event | None = None) -> tuple[list[int], list[str]]:
        messages = request.messages
        if request.tools is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
            messages = toolkit.as_plain_messages(messages, request.tools)
        if self._formatter is None:
            raise InvalidRequestError(
                "this model has no chat template, so it cannot take chat requests: use /v1/completions, "
                'or set options.chat_template in the config (a Jinja template, or "chatml")',
                param="model",
            )
        extra = {"enable_thinking": request.reasoning.enabled} if request.reasoning is not None else {}
        try:
            try:
                result = self._formatter(messages=messages, **extra)
            except Exception:
                if not has_late_system(messages):
                    raise
                result = self._formatter(messages=merged_system(messages), **extra)
        except Exception as exc:  # jinja raises on conversations the template rejects
            raise InvalidRequestError(f"the model's chat template rejected the messages: {exc}", "messages") from None
        stop_if(cancelled)
        tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return tokens, stop

    def _check_fits(self, tokens: list[int], param: str) -> None:
        n_ctx = self.llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise InvalidRequestError(
                f"the prompt takes {len(tokens)} tokens; this model's context holds {n_ctx}",
                param,
            )

    # --- the two entry points ------------------------------------------------

    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        tokens, template_stop = self._chat_prompt(request, cancelled)
        self._check_fits(tokens, "messages")
        stop_if(cancelled)
        phase, forced_prefix = self._phase(request.constraint, request.tools)
        stop_if(cancelled)
        budget = None
        shown = ""
        if request.reasoning is not None:
            # A template that opens the reasoning tag itself (DeepSeek-R1's, say): show the
            # tag, so that what follows is read as reasoning, and count the budget from here.
            opened = self._text(tokens[-8:]).rstrip().endswith(request.reasoning.tags[0])
            budget = ReasoningBudget(request.reasoning, inside=opened)
            if opened and not forced_prefix:
                shown = request.reasoning.tags[0]
        yield from self._generate(tokens, request.sampling, template_stop, phase, forced_prefix, cancelled, budget, shown)

    def count_tokens(self, request: ChatRequest, cancelled: threading.Event) -> int:
        tokens, _ = self._chat_prompt(request, cancelled)
        return len(tokens)

    def complete(self, request: CompletionRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        if isinstance(request.prompt, str):
            prompt = self.llm.tokenize(request.prompt.encode("utf-8"), add_bos=True, special=False)
        else:
            prompt = list(request.prompt)
            bad = [t for t in prompt if not 0 <= t < self.n_vocab]
            if bad:
                raise InvalidRequestError(f"token id {bad[0]} is outside this model's vocabulary (0-{self.n_vocab - 1})", "prompt")
        if request.suffix is not None:
            prompt = self._fill_in_the_middle(prompt, request.suffix)
        self._check_fits(prompt, "prompt")
        stop_if(cancelled)
        if request.echo:
            text = request.prompt if isinstance(request.prompt, str) else self._text(prompt)
            if text:
                yield TextDelta(text)
        phase, _ = self._phase(request.constraint, None)
        stop_if(cancelled)
        yield from self._generate(prompt, request.sampling, [], phase, "", cancelled)

    def _fill_in_the_middle(self, prefix: list[int], suffix: str) -> list[int]:
        vocab = self.vocab
        pre, suf, mid = (self._lib.llama_vocab_fim_pre(vocab), self._lib.llama_vocab_fim_suf(vocab), self._lib.llama_vocab_fim_mid(vocab))
        if min(pre, suf, mid) < 0:
            raise InvalidRequestError("this model has no fill-in-the-middle tokens, so it cannot take a suffix", "suffix")
        bos = [prefix[0]] if prefix and prefix[0] == self.llm.token_bos() else []
        body = prefix[len(bos) :]
        return bos + [pre] + body + [suf] + self.llm.tokenize(suffix.encode("utf-8"), add_bos=False, special=False) + [mid]

    def _phase(self, constraint: Constraint | None, tools: ToolCalling | None) -> tuple[Phase, str]:
        forced = tools is not None and tools.mode in ("required", "named")
        if constraint is not None:
            if forced:
                raise InvalidRequestError("response_format cannot be combined with a required tool call", "response_format")
            if constraint.gbnf is not None:
                return Phase(grammar=constraint.gbnf), ""
            assert constraint.json_schema is not None
            return Phase(grammar=schema_to_gbnf(constraint.json_schema, "response_format", "response_format")), ""
        if tools is None or not tools.tools:
            return Phase(grammar=None), ""
        calls = tool_call_grammar(tools)
        if forced:
            return Phase(grammar=calls), TOOL_CALL_START + "\n"
        return Phase(grammar=None, trigger=TOOL_CALL_START, then=calls), ""

    # --- the decode loop -----------------------------------------------------

    def _sampler(self, sampling: Sampling, grammar: str | None, seed: int) -> SamplerChain:
        lib = self._lib
        chain = SamplerChain(lib)
        bias = sampling.logit_bias
        if sampling.ignore_eos and grammar is None:
            # As llama-server does it: end-of-generation tokens can never be
            # sampled. Not under a grammar, which admits only them once it is
            # complete (sampling from nothing would fail).
            bias = {**bias, **dict.fromkeys(self.eog_tokens(), float("-inf"))}
        if bias:
            chain.add_logit_bias(self.n_vocab, bias)
        repeat = self.options.repeat_penalty if sampling.repeat_penalty is None else sampling.repeat_penalty
        if repeat != 1.0 or sampling.frequency_penalty or sampling.presence_penalty:
            chain.add_penalties(
                self.n_vocab, self.options.penalty_last_n, repeat, sampling.frequency_penalty, sampling.presence_penalty
            )
        if grammar is not None:
            handle = lib.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
            if not handle:
                chain.close()
                raise InvalidRequestError("the grammar could not be parsed (see the server log for where)", "grammar")
            chain.add(handle)
        temperature = 1.0 if sampling.temperature is None else sampling.temperature
        if temperature <= 0:
            chain.add(lib.llama_sampler_init_greedy())
        else:
            top_k = self.options.top_k if sampling.top_k is None else sampling.top_k
            if top_k > 0:
                chain.add(lib.llama_sampler_init_top_k(top_k))
            chain.add(lib.llama_sampler_init_top_p(1.0 if sampling.top_p is None else sampling.top_p, 1))
            chain.add(lib.llama_sampler_init_min_p(self.options.min_p if sampling.min_p is None else sampling.min_p, 1))
            chain.add(lib.llama_sampler_init_temp(temperature))
            chain.add(lib.llama_sampler_init_dist(seed))
        return chain

    def _text(self, tokens: list[int], prev: list[int] | None = None) -> str:
        return bytes(self.llm.detokenize(tokens, prev_tokens=prev)).decode("utf-8", errors="replace")

    def _logprobs(self, token: int, top_n: int) -> TokenLogprob:
        import numpy as np

        lib = self._lib
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logsumexp = np.log(np.exp(shifted).sum())
        logprobs = shifted - logsumexp

        def entry(t: int) -> TopLogprob:
            raw = bytes(self.llm.detokenize([t]))
            return TopLogprob(raw.decode("utf-8", errors="replace"), float(logprobs[t]), list(raw))

        chosen = entry(token)
        top: list[TopLogprob] = []
        if top_n > 0:
            best = np.argpartition(-logprobs, top_n)[:top_n]
            top = [entry(int(t)) for t in best[np.argsort(-logprobs[best])]]
        return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes, top)

    def _reusable_prefix(self, prompt: list[int], sampling: Sampling) -> int:
        """How many leading tokens of `prompt` the context holds already (from
        the previous request's prompt and answer), with `reuse_prefix` on.

        A request with a seed gets none, so that its seed reproduces its text:
        logits over a reused cache can differ in the last bits from a fresh
        evaluation. At least two tokens are evaluated anew: the logits must come
        from this evaluation, and llama.cpp rounds a one-token batch differently
        from a longer one; with two, a repeated request gets a fresh
        evaluation's logits (on CPU; tokens the model generated, which were
        evaluated one at a time, still differ when a later prompt reuses them)."""
        if not self.options.reuse_prefix or not self._prefix_cacheable or sampling.seed is not None:
            return 0
        llm = self.llm
        keep = 0
        for cached, new in zip(llm.input_ids[: llm.n_tokens], prompt[: max(0, len(prompt) - 2)]):
            if cached != new:
                break
            keep += 1
        if keep and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            return 0  # the cache cannot be cut back there: the prompt is read in full
        return keep

    def _start(self, prompt: list[int], keep: int, cancelled: threading.Event) -> None:
        """Put the prompt in the context after its first `keep` tokens (already
        there), one batch at a time so that a cancel stops a long prompt
        between batches. The last batch is never a single token (see
        _reusable_prefix), so a prompt is evaluated the same way whatever its length."""
        llm = self.llm
        llm.n_tokens = keep  # eval() drops the cache past this point
        batch = max(1, llm.n_batch)
        starts = list(range(keep, len(prompt), batch))
        if batch > 1 and len(starts) > 1 and len(prompt) - starts[-1] == 1:
            starts[-1] -= 1
        for index, start in enumerate(starts):
            if cancelled.is_set():
                log.debug("prompt stopped after %d of %d tokens (%d reused): cancelled", start, len(prompt), keep)
                raise RequestCancelled("cancelled")
            end = starts[index + 1] if index + 1 < len(starts) else len(prompt)
            llm.eval(prompt[start:end])
        log.debug("prompt of %d tokens: %d reused from the cache, %d evaluated", len(prompt), keep, len(prompt) - keep)

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        template_stop: list[str],
        phase: Phase,
        forced_prefix: str,
        cancelled: threading.Event,
        budget: ReasoningBudget | None = None,
        shown: str = "",  # text the prompt opened, shown before the answer (a reasoning tag)
    ) -> Iterator[ChatEvent]:
        lib, llm = self._lib, self.llm
        vocab = self.vocab
        seed = sampling.seed if sampling.seed is not None else random.randint(0, 2**31 - 1)
        stops = [s for s in [*sampling.stop, *template_stop] if s]
        n_ctx = llm.n_ctx()
        max_tokens = n_ctx - len(prompt) if sampling.max_tokens is None else sampling.max_tokens
        # Built before the prompt is accepted: a grammar llama.cpp cannot parse is still a 400.
        sampler = self._sampler(sampling, phase.grammar, seed)
        generated = 0
        finish_reason = "length"
        stop_sequence: str | None = None
        out = Decoded()
        closing = budget.opening() if budget is not None else None
        try:
            reused = self._reusable_prefix(prompt, sampling)
            yield PromptTokens(len(prompt), reused)
            if shown:
                yield TextDelta(shown)
            self._start(prompt, reused, cancelled)
            context = list(prompt)
            if forced_prefix:
                # A required tool call: the opening tag is written, not sampled.
                forced = llm.tokenize(forced_prefix.encode("utf-8"), add_bos=False, special=True)
                llm.eval(forced)
                context += forced
                yield TextDelta(forced_prefix)
            stop_if(cancelled)
            while generated < max_tokens and len(context) < n_ctx:
                if closing:
                    # The reasoning budget is spent: the end tag is written, not sampled.
                    forced = llm.tokenize(closing.encode("utf-8"), add_bos=False, special=True)
                    if len(context) + len(forced) >= n_ctx or generated + len(forced) > max_tokens:
                        break  # no room left for the tag and an answer: the output ends at its limit
                    llm.eval(forced)
                    context += forced
                    generated += len(forced)
                    out.held += closing
                    closing = None
                    continue
                token = sampler.sample(llm.ctx, -1)
                if lib.llama_vocab_is_eog(vocab, token):
                    finish_reason = "stop"
                    break
                generated += 1
                if sampling.logprobs is not None:
                    out.logprobs.append(self._logprobs(token, sampling.logprobs))
                piece = out.decoder.decode(bytes(llm.detokenize([token], prev_tokens=context)))
                out.held += piece
                context.append(token)
                if phase.trigger is not None and phase.trigger in out.held:
                    # The model opened a tool call: constrain the rest to valid calls.
                    yield from self._flush(out, out.held.index(phase.trigger) + len(phase.trigger))
                    sampler.close()
                    sampler = self._sampler(sampling, phase.then, seed + generated)
                    phase = Phase(grammar=phase.then)
                    stops = []  # the grammar decides where a call ends
                hit, matched = find_stop(out.held, stops)
                if hit >= 0:
                    yield from self._flush(out, hit)
                    out.held = ""
                    finish_reason = "stop"
                    stop_sequence = matched if matched in sampling.stop else None
                    break
                keep = max(
                    partial_stop_suffix(out.held, stops),
                    partial_stop_suffix(out.held, [phase.trigger]) if phase.trigger else 0,
                )
                yield from self._flush(out, len(out.held) - keep)
                if cancelled.is_set():
                    break
                llm.eval([token])
                if budget is not None and phase.grammar is None:
                    # Under a grammar (a tool call, structured output) a tag in the
                    # text is data: writing an end tag past the grammar would break it.
                    closing = budget.feed(piece)
        finally:
            sampler.close()
        # Bytes of a character cut off by max_tokens are dropped, not shown as U+FFFD.
        out.decoder.reset()
        yield from self._flush(out, len(out.held))
        yield Finished(
            finish_reason, prompt_tokens=len(prompt), completion_tokens=generated, stop_sequence=stop_sequence, cached_tokens=reused
        )

    @staticmethod
    def _flush(out: Decoded, upto: int) -> Iterator[TextDelta]:
        if upto <= 0 and not out.logprobs:
            return
        text, out.held = out.held[:upto], out.held[upto:]
        if text or out.logprobs:
            yield TextDelta(text, out.logprobs or None)
            out.logprobs = []

    def close(self) -> None:
        self.llm.close()
