"""What configures a llama-cpp model (the `[models.options]` of its chat
and embedding models) and how its GGUF file is opened."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from modelyard.adapters.base import ModelLoadError
from pydantic import BaseModel, ConfigDict, Field


class LlamaCppLoadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(default=4096, ge=0, description="Context length in tokens (0 = the model's own).")
    n_threads: int | None = Field(default=None, ge=1, description="Threads for decoding (default: llama.cpp's choice).")
    n_threads_batch: int | None = Field(default=None, ge=1, description="Threads for prompt processing.")
    n_batch: int = Field(default=512, ge=1, description="Prompt processing batch size.")
    n_gpu_layers: int = Field(default=0, ge=-1, description="Layers to offload to a GPU (-1 = all).")
    use_mmap: bool = Field(default=True, description="Map the model file instead of reading it into memory.")
    verbose: bool = Field(default=False, description="Let llama.cpp log to stderr.")
    extra_buffers: bool | None = Field(
        default=None,
        description="Let llama.cpp repack the weights into its extra CPU buffer types (AMX, CPU_REPACK) for faster "
        "matrix products. Default: on, except on CPUs with AMX (Sapphire Rapids and later), where the AMX kernels "
        "of the llama.cpp that llama-cpp-python 0.3.36 builds crash the worker with SIGSEGV on the first decode "
        "(ggml-org/llama.cpp#20824).",
    )


class LlamaCppOptions(LlamaCppLoadOptions):
    """Options of llama-cpp chat models."""

    n_ctx: int = Field(
        default=4096,
        ge=0,
        description="Context length in tokens (0 = the model's own): the longest prompt and answer one request "
        "may have. With `kv_cache = \"per-slot\"` each slot has this many KV cells (memory for n_ctx x slots); "
        "with `\"shared\"` all slots share this many.",
    )

    chat_template: str | None = Field(
        default=None,
        description='A Jinja chat template overriding the model\'s own, or "chatml" for the built-in ChatML template.',
    )
    mmproj: str | None = Field(
        default=None,
        description=(
            "The model's multimodal projector, an mmproj GGUF (llama-server's `--mmproj`): with it, chat messages "
            "may hold images. A path (relative to the folder of the model's file), `package:MODULE/path` or "
            "`hf:org/repo/file` as in `source`, fetched by the worker when the model loads; a missing or unreadable "
            "file fails the load. Each image takes as many context tokens as the projector makes embeddings for it "
            "(counted in the prompt's usage), evaluated whole, and a cached prompt is reused past an image only for "
            "the same image bytes. Projectors of models with M-RoPE positions (Qwen2-VL and later Qwen VL models) "
            "are refused."
        ),
    )
    top_k: int = Field(default=40, ge=0, description="Default top-k sampling (0 = off); a request's top_k wins.")
    min_p: float = Field(default=0.05, ge=0, le=1, description="Default min-p sampling; a request's min_p wins.")
    repeat_penalty: float = Field(default=1.0, ge=0, description="Default repetition penalty; a request's wins.")
    penalty_last_n: int = Field(default=64, ge=0, description="How many recent tokens the penalties look at.")
    slots: int = Field(
        default=4,
        ge=1,
        le=256,
        description=(
            "Sequences decoded together in one llama.cpp context (continuous batching): each step puts the next "
            "token of every running request, and chunks of newly admitted prompts, into one batch. The "
            "model's `max_concurrency` defaults to this."
        ),
    )
    kv_cache: Literal["per-slot", "shared"] = Field(
        default="per-slot",
        description=(
            "per-slot: each slot has its own `n_ctx` KV cells, so a request's answer does not depend, to the last "
            "bit, on what runs beside it (greedy and seeded answers are the same alone or batched), at the cost of "
            "memory for n_ctx x slots tokens. shared: one pool of `n_ctx` cells for all slots (llama.cpp's unified "
            "cache, llama-server's default): less memory, and any one request may use the whole pool, but a prompt "
            "that does not fit beside the running requests waits for room, the newest running request is pushed "
            "out and read in again when answers outgrow the pool, and logits differ in the last bits with what "
            "else is cached or running (a greedy answer can change where two tokens are nearly tied)."
        ),
    )
    flash_attn: bool = Field(
        default=True,
        description=(
            "Use llama.cpp's flash attention kernels (on in llama-server too). With them a request's logprobs "
            "are the same alone or batched with others (within 0.001 for SmolLM2-135M; without them up to 0.16 "
            "apart, though greedy text still matched); on CPU the speed is about the same (SmolLM2-135M, 1 "
            "thread, llama-bench: 46.6 tokens/s on, 45.3 off). Turning it off changes the last bits of the "
            "logits, and so greedy answers where two tokens are nearly tied."
        ),
    )
    prompt_cache_mib: int = Field(
        default=1024,
        ge=0,
        description=(
            "Host memory (MiB) for prompts that lost their slot (llama-server's `--cache-ram`): when a request "
            "takes a slot whose cache it mostly cannot use, what the slot held is copied to memory, and a later "
            "request starting with it has it copied back and evaluates only the rest, so more conversations than "
            "slots keep their prompt cache. Least recently saved go first past the bound; 0 turns it off. Used "
            "with `reuse_prefix` and `kv_cache = \"per-slot\"` (SmolLM2-135M: about 23 KB a token)."
        ),
    )
    reuse_prefix: bool = Field(
        default=True,
        description=(
            "Keep each slot's KV cache after its request (its prompt and answer) and give a new request the slot "
            "sharing the longest prefix with it (when that saves at least as many tokens as taking the slot "
            "drops), evaluating only the rest: a coding agent that re-sends its whole "
            "conversation each turn waits only for the new tail. Usage reports the reused tokens as cached. The cost: logits over a reused cache can "
            "differ in the last bits from a fresh evaluation, so an unseeded answer (greedy ones too) may differ "
            "from the one a fresh server gives; a request with a seed is always evaluated in full, so that its "
            "seed reproduces its text. Recurrent, hybrid and sliding-window models (Mamba, LFM2, Gemma 2/3), whose "
            "cache cannot be cut back to a prefix, always read the prompt in full."
        ),
    )


class LlamaCppEmbeddingOptions(LlamaCppLoadOptions):
    """Options of llama-cpp embedding models."""

    pooling: Literal["mean", "cls", "last"] = Field(default="mean", description="How token vectors become one vector.")
    normalize: bool = Field(default=True, description="Scale each vector to unit length.")


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
    settings: dict[str, Any] = {
        "n_ctx": options.n_ctx,
        "n_threads": options.n_threads,
        "n_threads_batch": options.n_threads_batch,
        "n_batch": options.n_batch,
        "n_gpu_layers": options.n_gpu_layers,
        "use_mmap": options.use_mmap,
        "verbose": options.verbose,
    }
    try:
        with extra_buffers(options.extra_buffers):
            return llama_cpp.Llama(model_path=str(model_path), **(settings | extra))
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {model_path}: {exc}") from None


def has_amx() -> bool:
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextlib.contextmanager
def extra_buffers(wanted: bool | None) -> Iterator[None]:
    """Load with llama.cpp's `use_extra_bufts` as `wanted` (None: off on AMX CPUs). llama_cpp.Llama takes no
    argument for it and reads `llama_model_default_params()` while it loads, so that function is swapped for the
    load (a worker loads one model at a time)."""
    from llama_cpp import llama_cpp as bindings

    use = (not has_amx()) if wanted is None else wanted
    defaults = bindings.llama_model_default_params
    if use:
        yield
        return

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults
