"""ctransformers: GGML models of the 2023 generation (GPT-2, GPT-J, GPT-NeoX,
MPT, StarCoder, Falcon, LLaMA, ...).

The model file carries no chat template, so chat messages are rendered to a
prompt with `options.prompt_template` (a Jinja template, ChatML-like by
default). We tokenize the prompt ourselves so that usage counts are exact,
then evaluate and sample token by token with `LLM.eval` / `LLM.sample`:
stop strings are held back until they can no longer match, and
cancellation is checked per token. ctransformers cannot constrain output,
so structured output and forced tool calls are refused, and so are
logprobs and fill-in-the-middle (a completion suffix).

Note: ctransformers 0.2.27 (2023) is its last release; its llama.cpp predates
most GGUF files of today (a modern GGUF fails to load, or crashes the
worker process, which then counts as a failed load).
"""

from __future__ import annotations

import ctypes
import math
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelyard.adapters import tools as toolkit
from modelyard.adapters.base import (
    ChatAdapter,
    ChatEvent,
    ChatRequest,
    CompletionRequest,
    Constraint,
    Finished,
    InvalidRequestError,
    ModelLoadError,
    PromptTokens,
    Sampling,
    TextDelta,
    prompt_too_long,
)
from modelyard.adapters.system_messages import has_late_system, merged_system
from modelyard.adapters.textstream import TextStream
from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_PROMPT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_STOP = ["<|im_end|>"]
# What a logit is set to to rule its token out (min_p, logit_bias -100).
EXCLUDED = -1e30
# How many recent tokens (prompt included) the repetition penalty looks at.
REPEAT_LAST_N = 64


def _template_environment() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env


class CTransformersOptions(BaseModel):
    """Options of ctransformers chat models."""

    model_config = ConfigDict(extra="forbid")

    model_type: str = Field(
        description='The model architecture as ctransformers names it: "gpt2", "gptj", "gpt_neox", "llama", "mpt", ...'
    )
    model_file: str | None = Field(
        default=None,
        description="When source is a folder: the model file in it (unset: its only .bin or .gguf file).",
    )
    context_length: int = Field(
        default=512,
        ge=1,
        description="Context length in tokens, for the architectures that take one (LLaMA, MPT, Falcon); "
        "the others use the length written in the model file.",
    )
    threads: int | None = Field(default=None, ge=1, description="Threads for evaluation (default: up to 4).")
    batch_size: int = Field(default=8, ge=1, description="How many prompt tokens are evaluated at once.")
    gpu_layers: int = Field(default=0, ge=0, description="Layers to offload to a GPU (needs a CUDA build).")
    prompt_template: str = Field(
        default=DEFAULT_PROMPT_TEMPLATE,
        description="A Jinja template that renders `messages` (and `add_generation_prompt`, always true) to the "
        "prompt text. The default is ChatML.",
    )
    stop: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STOP),
        description="Stop strings added to every chat request's own: the template's end-of-turn marker.",
    )
    top_k: int = Field(default=40, ge=0, description="Default top-k sampling (0 = off); a request's top_k wins.")
    repeat_penalty: float = Field(default=1.1, gt=0, description="Default repetition penalty; a request's wins.")

    @field_validator("prompt_template")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        try:
            env = _template_environment()
        except ImportError:  # checked again when the model loads
            return value
        from jinja2.exceptions import TemplateSyntaxError

        try:
            env.from_string(value)
        except TemplateSyntaxError as exc:
            raise ValueError(f"not a valid Jinja template: {exc}") from None
        return value


def _model_file(path: Path, options: CTransformersOptions) -> Path:
    if path.is_file():
        if options.model_file is not None:
            raise ModelLoadError(f"options.model_file is for a folder source, but {path} is a file")
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{path} does not exist")
    if options.model_file is not None:
        found = path / options.model_file
        if not found.is_file():
            raise ModelLoadError(f"there is no model file {options.model_file!r} in {path}")
        return found
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".bin", ".gguf"))
    if len(candidates) != 1:
        raise ModelLoadError(
            f"{path} is a folder with {len(candidates)} .bin/.gguf files; name one in options.model_file"
        )
    return candidates[0]


class CTransformersChat(ChatAdapter):
    Options = CTransformersOptions
    # One ctransformers model holds one sequence's state.
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, CTransformersOptions)
        from ctransformers import AutoModelForCausalLM

        self.options = options
        model_path = _model_file(path, options)
        try:
            self.llm = AutoModelForCausalLM.from_pretrained(
                str(model_path),
                model_type=options.model_type,
                local_files_only=True,
                context_length=options.context_length,
                threads=options.threads if options.threads is not None else -1,
                batch_size=options.batch_size,
                gpu_layers=options.gpu_layers,
            )
        except Exception as exc:  # ctransformers raises ValueError, RuntimeError, OSError...
            # Its RuntimeError only says "Failed to create LLM"; the reason, if
            # any, went to the worker's stderr (the server log).
            detail = "" if isinstance(exc, RuntimeError) else f": {exc}"
            raise ModelLoadError(
                f"ctransformers could not load {model_path} as model_type {options.model_type!r}{detail} "
                "(it reads GGML files of 2023 and early GGUF ones; see the server log for its own message)"
            ) from None
        self.template = _template_environment().from_string(options.prompt_template)
        self.n_ctx: int = self.llm.context_length
        self.n_vocab: int = self.llm.vocab_size
        self.add_bos = self.llm.model_type == "llama"

    # --- prompts -----------------------------------------------------------

    def _tokenize(self, text: str, add_bos: bool) -> list[int]:
        # LLM.tokenize sizes its output buffer by characters, not bytes, and
        # a byte-level vocabulary makes more tokens than characters: give the
        # library a buffer that always fits (a token covers at least a byte).
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 8))()
        count = self.llm.ctransformers_llm_tokenize(data, add_bos, out)
        return list(out[:count])

    def _render(self, request: ChatRequest) -> str:
        messages = toolkit.as_plain_messages(request.messages, request.tools)
        try:
            try:
                return str(self.template.render(messages=messages, add_generation_prompt=True))
            except Exception:
                if not has_late_system(messages):
                    raise
                return str(self.template.render(messages=merged_system(messages), add_generation_prompt=True))
        except Exception as exc:  # jinja raises on conversations the template rejects
            raise InvalidRequestError(f"the model's prompt template rejected the messages: {exc}", "messages") from None

    def _check_fits(self, tokens: list[int], param: str, attached_files: list[str] | None = None) -> None:
        if len(tokens) >= self.n_ctx:
            raise prompt_too_long(len(tokens), self.n_ctx, param, attached_files)

    @staticmethod
    def _refuse_unsupported(sampling: Sampling, constraint: Constraint | None) -> None:
        if constraint is not None:
            param = "grammar" if constraint.gbnf is not None else "response_format"
            raise InvalidRequestError(
                f"the ctransformers backend cannot constrain output, so {param} is not supported for this model", param
            )
        if sampling.logprobs is not None:
            raise InvalidRequestError("logprobs are not supported by the ctransformers backend", "logprobs")

    # --- the two entry points ------------------------------------------------

    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        if request.tools is not None and request.tools.mode in ("required", "named"):
            raise InvalidRequestError(
                "the ctransformers backend cannot constrain output, so it cannot force a tool call: "
                'use tool_choice "auto" or "none" with this model',
                "tool_choice",
            )
        self._refuse_unsupported(request.sampling, request.constraint)
        prompt = self._tokenize(self._render(request), self.add_bos)
        self._check_fits(prompt, "messages", request.attached_files)
        yield from self._generate(prompt, request.sampling, self.options.stop, cancelled)

    def count_tokens(self, request: ChatRequest, cancelled: threading.Event) -> int:
        return len(self._tokenize(self._render(request), self.add_bos))

    def complete(self, request: CompletionRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        if request.suffix is not None:
            raise InvalidRequestError("suffix is not supported by the ctransformers backend", "suffix")
        self._refuse_unsupported(request.sampling, request.constraint)
        if isinstance(request.prompt, str):
            prompt = self._tokenize(request.prompt, self.add_bos)
        else:
            prompt = list(request.prompt)
            bad = [t for t in prompt if not 0 <= t < self.n_vocab]
            if bad:
                raise InvalidRequestError(
                    f"token id {bad[0]} is outside this model's vocabulary (0-{self.n_vocab - 1})", "prompt"
                )
        if not prompt:
            raise InvalidRequestError("the prompt is empty: this model needs at least one token to continue", "prompt")
        self._check_fits(prompt, "prompt")
        if request.echo:
            text = request.prompt if isinstance(request.prompt, str) else self._text(prompt)
            if text:
                yield TextDelta(text)
        yield from self._generate(prompt, request.sampling, [], cancelled)

    def _text(self, tokens: list[int]) -> str:
        return bytes(self.llm.detokenize(tokens, decode=False)).decode("utf-8", errors="replace")

    # --- the decode loop -----------------------------------------------------

    def _adjust_logits(self, sampling: Sampling, repeat: float, generated: Counter[int], temperature: float) -> None:
        """Penalties and filters applied to the logits in place, in llama.cpp's
        order: logit_bias, the repetition penalty (over the last 64 tokens, as
        ctransformers does it), presence and frequency penalties, min_p.
        ctransformers' own sampler then does temperature, top-k and top-p.
        (Its repetition penalty would come after min_p, hence here.)"""
        min_p = sampling.min_p or 0.0
        penalize = sampling.presence_penalty or sampling.frequency_penalty
        if not (sampling.logit_bias or repeat != 1.0 or penalize or min_p > 0):
            return
        size = self.llm.ctransformers_llm_logits_size()
        pointer = self.llm.ctransformers_llm_logits_data()
        logits = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float * size)).contents
        base = size - self.n_vocab  # the last token's logits
        for token, bias in sampling.logit_bias.items():
            if 0 <= token < self.n_vocab:
                logits[base + token] = EXCLUDED if bias <= -100 else logits[base + token] + bias
        if repeat != 1.0:
            for token in set(self.llm._context[-REPEAT_LAST_N:]):
                value = logits[base + token]
                logits[base + token] = value * repeat if value <= 0 else value / repeat
        if penalize:
            for token, count in generated.items():
                logits[base + token] -= sampling.presence_penalty + sampling.frequency_penalty * count
        if min_p > 0:
            values = logits[base:size]
            # p(t) ≥ min_p · p(best)  ⇔  logit(t) ≥ logit(best) + T · ln(min_p)
            threshold = max(values) + temperature * math.log(min_p)
            for token, value in enumerate(values):
                if value < threshold:
                    logits[base + token] = EXCLUDED

    def _generate(
        self, prompt: list[int], sampling: Sampling, extra_stop: list[str], cancelled: threading.Event
    ) -> Iterator[ChatEvent]:
        llm = self.llm
        if sampling.ignore_eos:
            # The end-of-sequence token can never be sampled (a bias of -100 excludes a token).
            sampling = replace(sampling, logit_bias={**sampling.logit_bias, llm.eos_token_id: -100.0})
        base_seed = sampling.seed if sampling.seed is not None else random.randint(0, 2**31 - 1)
        temperature = 1.0 if sampling.temperature is None else sampling.temperature
        if temperature <= 0:
            # ctransformers divides the logits by the temperature: greedy is top-k 1.
            top_k, top_p, temperature = 1, 1.0, 1.0
        else:
            top_k = self.options.top_k if sampling.top_k is None else sampling.top_k
            top_k = self.n_vocab if top_k <= 0 else min(top_k, self.n_vocab)
            top_p = 1.0 if sampling.top_p is None else sampling.top_p
        repeat = self.options.repeat_penalty if sampling.repeat_penalty is None else sampling.repeat_penalty
        room = self.n_ctx - len(prompt)
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)

        # Evaluate the whole prompt every time: a KV cache reused from the
        # previous request could make the logits, and so a seeded sample, differ.
        yield PromptTokens(len(prompt))  # before the evaluation: a stream starts now
        llm._context.clear()
        llm.eval(prompt)
        stream = TextStream([*sampling.stop, *extra_stop])
        generated: Counter[int] = Counter()
        count = 0
        finish_reason = "length"
        while count < max_tokens:
            self._adjust_logits(sampling, repeat, generated, temperature)
            # ctransformers seeds a fresh generator for every sample: vary the
            # seed per token, or every draw would be the same.
            token = llm.sample(
                top_k=top_k,
                top_p=top_p,
                temperature=temperature,
                repetition_penalty=1.0,  # applied above
                seed=(base_seed + count) % 2**31,
            )
            if llm.is_eos_token(token):
                finish_reason = "stop"
                break
            count += 1
            generated[token] += 1
            text = stream.feed(bytes(llm.detokenize([token], decode=False)))
            if text:
                yield TextDelta(text)
            if stream.stopped:
                finish_reason = "stop"
                break
            if cancelled.is_set() or count >= max_tokens:
                break
            llm.eval([token])
        tail = stream.finish()
        if tail:
            yield TextDelta(tail)
        # Only a request's own stop string is reported, not the template's.
        stop_sequence = stream.stop_string if stream.stop_string in sampling.stop else None
        yield Finished(finish_reason, prompt_tokens=len(prompt), completion_tokens=count, stop_sequence=stop_sequence)

    def close(self) -> None:
        self.llm = None
