"""llama-cpp-python: GGUF chat and completion models (embeddings:
adapters/llama_embeddings.py; grammars: adapters/llama_grammar.py).

The chat template comes from `options.chat_template` (a Jinja template, or
"chatml" for the built-in ChatML one) or else the GGUF metadata
(`tokenizer.chat_template`). We format and tokenize the prompt here, on the
request's own thread, and hand it to the engine (adapters/llama_engine.py),
whose one decode thread batches every running request's next token into
one llama_decode (continuous batching over `options.slots` sequences).
Each request is a Sequence (adapters/llama_sequence.py) with its own
sampler chain: exact token counts, stop strings held back until they can no
longer match, logprobs, grammars (structured output, tool calls) that can
switch on mid-generation, and a cancellation check per step.

With `options.mmproj` (a multimodal projector) chat messages may hold
images: the template is rendered with a marker in each image's place and
libmtmd tokenizes the prompt into text and image chunks
(adapters/llama_vision.py); the engine evaluates each image when its
sequence reaches it.

Only public llama-cpp-python API is used: the high-level `Llama` object
(model, tokenizer, metadata), and the low-level C bindings
(`llama_cpp.llama_*`) on its public `model` handle for the engine's own
context and the sampler chains (adapters/llama_sampling.py). The C bindings
follow llama.cpp's fast-moving API, hence the upper bound on
llama-cpp-python in pyproject.toml.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
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
    InvalidRequestError,
    ModelLoadError,
    Sampling,
    TextDelta,
    ToolCalling,
    prompt_too_long,
)
from modelyard.adapters.containment import RequestCancelled
from modelyard.adapters.llama_engine import Engine
from modelyard.adapters.llama_grammar import schema_to_gbnf, tool_call_grammar
from modelyard.adapters.llama_options import LlamaCppEmbeddingOptions, LlamaCppLoadOptions, LlamaCppOptions, open_llama
from modelyard.adapters.llama_sampling import SamplerChain
from modelyard.adapters.llama_sequence import Phase, Sequence, Vocabulary
from modelyard.adapters.llama_vision import ImagePrompt, Projector, flatten_images, typed_content
from modelyard.adapters.reasoning import ReasoningBudget
from modelyard.adapters.sources import SourceError
from modelyard.adapters.sources import resolve as resolve_source
from modelyard.adapters.system_messages import has_late_system, merged_system
from pydantic import BaseModel

# Re-exported: the catalog and the config tests name them here.
__all__ = ["LlamaCppChat", "LlamaCppEmbeddingOptions", "LlamaCppLoadOptions", "LlamaCppOptions", "Phase", "tool_call_grammar"]

log = logging.getLogger("modelyard.worker.llama_cpp")


CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The Llama object only tokenizes and holds the model; the engine makes the
# context that decodes. Its own context is kept this small so that it costs
# next to nothing (llama-cpp-python always makes one).
TOKENIZER_CONTEXT = 256


def stop_if(cancelled: threading.Event | None) -> None:
    """End a call whose client left or whose deadline passed, between stages."""
    if cancelled is not None and cancelled.is_set():
        raise RequestCancelled("cancelled")


class LlamaCppChat(ChatAdapter):
    Options = LlamaCppOptions

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, LlamaCppOptions)
        import llama_cpp
        from llama_cpp import llama_chat_format

        self._lib = llama_cpp
        self.options = options
        self.llm = open_llama(path, options, n_ctx=TOKENIZER_CONTEXT, n_batch=min(64, options.n_batch))
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
        self._typed_content = self._formatter is not None and self._reads_typed_content()
        self.words = Vocabulary(llama_cpp, self.vocab, self.n_vocab, self._tokenize_forced)
        self.projector = self._projector(path, options) if options.mmproj else None
        try:
            self.engine = self._engine(options, model)
        except BaseException:
            if self.projector is not None:
                self.projector.close()
            raise
        self.max_concurrency = options.slots

    def _projector(self, path: Path, options: LlamaCppOptions) -> Projector:
        assert options.mmproj is not None
        # Relative to the model file's folder: an mmproj usually sits beside its model (a hub repo's files too).
        try:
            mmproj = resolve_source(options.mmproj, path if path.is_dir() else path.parent)
        except SourceError as exc:
            raise ModelLoadError(f"options.mmproj: {exc}") from None
        if not mmproj.is_file():
            raise ModelLoadError(f"options.mmproj: {mmproj} is a folder; point it at the mmproj .gguf file")
        return Projector(
            mmproj,
            self.llm.model,
            n_threads=self.llm.n_threads_batch,
            n_batch=options.n_batch,
            flash_attn=options.flash_attn,
            use_gpu=options.n_gpu_layers != 0,
            verbose=options.verbose,
        )

    def _engine(self, options: LlamaCppOptions, model: Any) -> Engine:
        return Engine(
            self._lib,
            model,
            n_ctx=options.n_ctx,
            n_batch=options.n_batch,
            slots=options.slots,
            n_threads=self.llm.n_threads,
            n_threads_batch=self.llm.n_threads_batch,
            prefix_cacheable=self._prefix_cacheable,
            shared_cache=options.kv_cache == "shared",
            flash_attn=options.flash_attn,
            prompt_cache_bytes=options.prompt_cache_mib * 1024 * 1024 if options.reuse_prefix else 0,
            projector=self.projector,
        )

    def takes_images(self) -> bool:
        return self.projector is not None

    @classmethod
    def declares_images(cls, options: BaseModel) -> bool:
        return getattr(options, "mmproj", None) is not None

    def stats(self) -> dict[str, int]:
        return self.engine.stats()

    def _tokenize_forced(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def eog_tokens(self) -> list[int]:
        """The vocabulary's end-of-generation tokens (EOS, EOT, <|im_end|>...), found once."""
        if self._eog is None:
            self._eog = [t for t in range(self.n_vocab) if self._lib.llama_vocab_is_eog(self.vocab, t)]
        return self._eog

    def token_text(self, token: int) -> str:
        return bytes(self._lib.llama_vocab_get_text(self.vocab, token)).decode("utf-8", errors="replace")

    # --- prompts -----------------------------------------------------------

    def _chat_prompt(self, request: ChatRequest, cancelled: threading.Event | None = None) -> tuple[list[int], list[str]]:
        tokens, stop, images = self._chat_input(request, cancelled)
        if images is not None:
            images.close()
        return tokens, stop

    def _chat_input(
        self, request: ChatRequest, cancelled: threading.Event | None = None
    ) -> tuple[list[int], list[str], ImagePrompt | None]:
        """The prompt's tokens (an image's places hold sentinels), the
        template's stop strings, and the prompt's images if it has any."""
        marker = self.projector.marker if self.projector is not None else None
        messages, images = flatten_images(request.messages, marker)
        if request.tools is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
            messages = toolkit.as_plain_messages(messages, request.tools)
        if self._formatter is None:
            raise InvalidRequestError(
                "this model has no chat template, so it cannot take chat requests: use /v1/completions, "
                'or set options.chat_template in the config (a Jinja template, or "chatml")',
                param="model",
            )
        extra = {"enable_thinking": request.reasoning.enabled} if request.reasoning is not None else {}
        result = self._render(messages, extra, marker, typed=self._typed_content)
        if images and marker is not None and result.prompt.count(marker) != len(images):
            if not self._typed_content:
                # Not every marker came through as string content: a template that reads images from typed parts.
                try:
                    result = self._render(messages, extra, marker, typed=True)
                except InvalidRequestError:
                    pass
            placed = result.prompt.count(marker)
            if placed != len(images):
                raise InvalidRequestError(
                    f"the model's chat template placed {placed} of the request's {len(images)} images in the prompt",
                    "messages",
                )
        stop_if(cancelled)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        if not images:
            tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            return tokens, stop, None
        assert self.projector is not None
        prompt = self.projector.tokenize(result.prompt, images, add_special=not result.added_special)
        if prompt.tokens and prompt.tokens[-1] < 0:
            prompt.close()  # the engine samples after a text token; a chat template always ends with one
            raise InvalidRequestError("the rendered prompt ends with an image: nothing follows it to answer from", "messages")
        return prompt.tokens, stop, prompt

    def _reads_typed_content(self) -> bool:
        """Whether the chat template reads a message's content only as typed
        parts (a list of {"type": "text", ...}), as SmolVLM's and other vision
        models' templates do: a string content then renders as nothing.
        Found once by rendering a probe both ways (llama.cpp's chat template
        capabilities do the same)."""
        probe = "modelyard-probe-" + format(random.getrandbits(32), "x")
        messages = [{"role": "user", "content": probe}]
        try:
            if probe in self._formatter(messages=messages).prompt:
                return False
            return probe in self._formatter(messages=typed_content(messages, None)).prompt
        except Exception:  # a template that rejects a lone user message: leave contents as they are
            return False

    def _render(self, messages: list[dict[str, Any]], extra: dict[str, Any], marker: str | None, typed: bool) -> Any:
        """Apply the chat template to messages of string content, given to it
        as typed parts if `typed` (each image marker a part of its own)."""
        assert self._formatter is not None

        def form(plain: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return typed_content(plain, marker) if typed else plain

        try:
            try:
                return self._formatter(messages=form(messages), **extra)
            except Exception:
                if not has_late_system(messages):
                    raise
                return self._formatter(messages=form(merged_system(messages)), **extra)
        except Exception as exc:  # jinja raises on conversations the template rejects
            raise InvalidRequestError(f"the model's chat template rejected the messages: {exc}", "messages") from None

    def _check_fits(self, tokens: list[int], param: str, attached_files: list[str] | None = None) -> None:
        n_ctx = self.engine.n_ctx
        if not tokens:
            raise InvalidRequestError("the prompt is empty: there is nothing to continue from", param)
        if len(tokens) >= n_ctx:
            raise prompt_too_long(len(tokens), n_ctx, param, attached_files)

    # --- the two entry points ------------------------------------------------

    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        tokens, template_stop, images = self._chat_input(request, cancelled)
        try:
            self._check_fits(tokens, "messages", request.attached_files)
            stop_if(cancelled)
            phase, forced_prefix = self._phase(request.constraint, request.tools)
            stop_if(cancelled)
        except BaseException:
            if images is not None:
                images.close()
            raise
        budget = None
        shown = ""
        if request.reasoning is not None:
            # A template that opens the reasoning tag itself (DeepSeek-R1's, say): show the
            # tag, so that what follows is read as reasoning, and count the budget from here.
            opened = self._text([t for t in tokens[-8:] if t >= 0]).rstrip().endswith(request.reasoning.tags[0])
            budget = ReasoningBudget(request.reasoning, inside=opened)
            if opened and not forced_prefix:
                shown = request.reasoning.tags[0]
        yield from self._run(tokens, request.sampling, template_stop, phase, cancelled, forced_prefix, budget, shown, images)

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
        yield from self._run(prompt, request.sampling, [], phase, cancelled)

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

    # --- handing the request to the engine -----------------------------------

    def _run(
        self,
        prompt: list[int],
        sampling: Sampling,
        template_stop: list[str],
        phase: Phase,
        cancelled: threading.Event,
        forced_prefix: str = "",
        budget: ReasoningBudget | None = None,
        shown: str = "",
        images: ImagePrompt | None = None,
    ) -> Iterator[ChatEvent]:
        seed = sampling.seed if sampling.seed is not None else random.randint(0, 2**31 - 2)
        # Built here, before the prompt is accepted: a grammar llama.cpp cannot parse is still a 400.
        try:
            sampler = self._sampler(sampling, phase.grammar, seed)
        except BaseException:
            if images is not None:
                images.close()
            raise
        try:
            then = self._sampler(sampling, phase.then, seed + 1) if phase.trigger is not None else None
        except BaseException:
            sampler.close()
            if images is not None:
                images.close()
            raise
        sequence = Sequence(
            self.words,
            prompt,
            sampling,
            [*sampling.stop, *template_stop],
            phase,
            (sampler, then),
            cancelled,
            n_ctx=self.engine.n_ctx,
            reuse_prefix=self.options.reuse_prefix and sampling.seed is None,
            forced_prefix=forced_prefix,
            budget=budget,
            shown=shown,
            images=images,
        )
        try:
            self.engine.submit(sequence)
        except BaseException:
            sequence.fail(RequestCancelled("not started"))
            raise
        yield from sequence.events()

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

    def close(self) -> None:
        self.engine.close()
        if self.projector is not None:
            self.projector.close()
        self.llm.close()
