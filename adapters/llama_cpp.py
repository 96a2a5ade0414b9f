"""llama-cpp-python: GGUF chat models.

The chat template comes from the GGUF metadata (`tokenizer.chat_template`),
or from `options.chat_template`, or a llama-cpp-python named format
(`options.chat_format`). We format and tokenize the prompt ourselves so that
usage counts are exact, then sample with `Llama.generate` token by token.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.base import (
    ChatAdapter,
    ChatEvent,
    ChatRequest,
    EmbeddingsAdapter,
    EmbedRequest,
    Embeddings,
    Finished,
    InvalidRequestError,
    ModelLoadError,
    TextDelta,
)


class LlamaCppLoadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(default=4096, ge=0, description="Context length in tokens (0 = the model's own).")
    n_threads: int | None = Field(default=None, ge=1, description="Threads for decoding (default: llama.cpp's choice).")
    n_threads_batch: int | None = Field(default=None, ge=1, description="Threads for prompt processing.")
    n_batch: int = Field(default=512, ge=1, description="Prompt processing batch size.")
    n_gpu_layers: int = Field(default=0, ge=-1, description="Layers to offload to a GPU (-1 = all).")
    use_mmap: bool = Field(default=True, description="Map the model file instead of reading it into memory.")
    verbose: bool = Field(default=False, description="Let llama.cpp log to stderr.")


class LlamaCppOptions(LlamaCppLoadOptions):
    """Options of llama-cpp chat models."""

    chat_template: str | None = Field(default=None, description="A Jinja chat template overriding the model's own.")
    chat_format: str | None = Field(
        default=None, description='A llama-cpp-python named chat format ("chatml", "llama-3", ...) for models without a template.'
    )
    top_k: int = Field(default=40, ge=0, description="Default top-k sampling.")
    min_p: float = Field(default=0.05, ge=0, le=1, description="Default min-p sampling.")
    repeat_penalty: float = Field(default=1.0, ge=0, description="Default repetition penalty.")
    reuse_prefix: bool = Field(
        default=False,
        description=(
            "Keep the KV cache of the common prefix with the previous request: faster long multi-turn chats, "
            "but the logits then depend on the previous request, so a seed no longer reproduces the same text."
        ),
    )


class LlamaCppEmbeddingOptions(LlamaCppLoadOptions):
    """Options of llama-cpp embedding models."""

    pooling: Literal["mean", "cls", "last"] = Field(default="mean", description="How token vectors become one vector.")
    normalize: bool = Field(default=True, description="Scale each vector to unit length.")


def _partial_stop_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that begins some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


def _gguf_in(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.gguf"))
    if len(found) != 1:
        raise ModelLoadError(f"{path} is a folder with {len(found)} .gguf files; point source at one of them")
    return found[0]


def open_llama(path: Path, options: LlamaCppLoadOptions, **extra: Any) -> Any:
    import llama_cpp

    model_path = _gguf_in(path)
    try:
        return llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=options.n_ctx,
            n_threads=options.n_threads,
            n_threads_batch=options.n_threads_batch,
            n_batch=options.n_batch,
            n_gpu_layers=options.n_gpu_layers,
            use_mmap=options.use_mmap,
            verbose=options.verbose,
            **extra,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {model_path}: {exc}") from None


class LlamaCppChat(ChatAdapter):
    Options = LlamaCppOptions
    # One llama.cpp context decodes one sequence at a time.
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, LlamaCppOptions)
        from llama_cpp import llama_chat_format

        self.options = options
        self.llm = open_llama(path, options)
        self._formatter: Any = None
        self._handler: Any = None
        template = options.chat_template or self.llm.metadata.get("tokenizer.chat_template")
        if options.chat_format:
            try:
                self._handler = llama_chat_format.get_chat_completion_handler(options.chat_format)
            except ValueError as exc:
                raise ModelLoadError(str(exc)) from None
        elif template:
            eos_id = self.llm.token_eos()
            bos_id = self.llm.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self.llm._model.token_get_text(eos_id) if eos_id >= 0 else "",
                bos_token=self.llm._model.token_get_text(bos_id) if bos_id >= 0 else "",
                stop_token_ids=[eos_id] if eos_id >= 0 else None,
            )

    def _prompt(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        if self._formatter is None:
            raise InvalidRequestError(
                "this model has no chat template; set options.chat_template or options.chat_format in the config",
                param="model",
            )
        try:
            result = self._formatter(messages=messages)
        except Exception as exc:  # jinja raises on conversations the template rejects
            raise InvalidRequestError(f"the model's chat template rejected the messages: {exc}", "messages") from None
        tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        return tokens, stop

    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        if self._handler is not None:
            yield from self._chat_with_handler(request, cancelled)
            return
        tokens, template_stop = self._prompt(request.messages)
        n_ctx = self.llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise InvalidRequestError(
                f"the messages take {len(tokens)} tokens; this model's context holds {n_ctx}", "messages"
            )
        max_tokens = request.max_tokens
        if max_tokens is None or len(tokens) + max_tokens > n_ctx:
            max_tokens = n_ctx - len(tokens)
        yield from self._generate(tokens, max_tokens, request, [*request.stop, *template_stop], cancelled)

    def _generate(
        self, prompt: list[int], max_tokens: int, request: ChatRequest, stop: list[str], cancelled: threading.Event
    ) -> Iterator[ChatEvent]:
        """Sample token by token: exact token counts, stop strings held back
        until they can no longer match, and a cancellation check per token."""
        import llama_cpp

        llm = self.llm
        llm.set_seed(request.seed if request.seed is not None else random.randint(0, 2**31 - 1))
        stop = [s for s in stop if s]
        if not self.options.reuse_prefix:
            # A prompt decoded in one pass gives the same logits every time; a
            # prompt partly served from the cache may differ in the last bits.
            llm.reset()
        completion: list[int] = []
        pending = b""  # bytes of an incomplete UTF-8 character
        held = ""  # text that might be the start of a stop string
        finish_reason = "length"
        tokens = llm.generate(
            prompt,
            temp=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=self.options.top_k,
            min_p=self.options.min_p,
            repeat_penalty=self.options.repeat_penalty,
        )
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    finish_reason = "stop"
                    break
                completion.append(token)
                pending += llm.detokenize([token], prev_tokens=prompt + completion[:-1])
                try:
                    held += pending.decode("utf-8")
                    pending = b""
                except UnicodeDecodeError:
                    if len(pending) >= 4:  # not a character in the making: give up on it
                        held += pending.decode("utf-8", errors="replace")
                        pending = b""
                hit = min((i for i in (held.find(s) for s in stop) if i >= 0), default=-1)
                if hit >= 0:
                    if hit:
                        yield TextDelta(held[:hit])
                    held = ""
                    finish_reason = "stop"
                    break
                keep = _partial_stop_suffix(held, stop)
                if len(held) > keep:
                    yield TextDelta(held[: len(held) - keep])
                    held = held[len(held) - keep :]
                if len(completion) >= max_tokens or cancelled.is_set():
                    break
        finally:
            tokens.close()
        # Bytes of a character cut off by max_tokens are dropped, not shown as U+FFFD.
        tail = held + pending.decode("utf-8", errors="ignore")
        if tail:
            yield TextDelta(tail)
        yield Finished(finish_reason, prompt_tokens=len(prompt), completion_tokens=len(completion))

    def _chat_with_handler(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        # Named formats from llama-cpp-python: it formats and counts for us.
        result = self._handler(
            llama=self.llm,
            messages=request.messages,
            max_tokens=request.max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=self.options.top_k,
            min_p=self.options.min_p,
            repeat_penalty=self.options.repeat_penalty,
            stop=request.stop,
            seed=request.seed,
            stream=False,
        )
        text = result["choices"][0]["message"]["content"] or ""
        if text and not cancelled.is_set():
            yield TextDelta(text)
        usage = result.get("usage", {})
        yield Finished(
            result["choices"][0].get("finish_reason") or "stop",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    def close(self) -> None:
        self.llm.close()


class LlamaCppEmbeddings(EmbeddingsAdapter):
    Options = LlamaCppEmbeddingOptions
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, LlamaCppEmbeddingOptions)
        import llama_cpp

        pooling = {
            "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
            "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
        }[options.pooling]
        self.options = options
        self.llm = open_llama(path, options, embedding=True, pooling_type=pooling)

    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        n_ctx = self.llm.n_ctx()
        vectors: list[list[float]] = []
        counts: list[int] = []
        for index, item in enumerate(request.inputs):
            if cancelled.is_set():
                break
            tokens = item if isinstance(item, list) else self.llm.tokenize(item.encode("utf-8"), add_bos=True, special=False)
            if len(tokens) > n_ctx:
                raise InvalidRequestError(f"input[{index}] has {len(tokens)} tokens; this model takes at most {n_ctx}", "input")
            text = item if isinstance(item, str) else self.llm.detokenize(item).decode("utf-8", errors="replace")
            vectors.append(self.llm.embed(text, normalize=self.options.normalize))
            counts.append(len(tokens))
        return Embeddings(vectors, counts)
