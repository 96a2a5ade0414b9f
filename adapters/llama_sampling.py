"""A llama.cpp sampler chain built on llama-cpp-python's public C bindings
(`llama_cpp.llama_sampler_*`): what the decode loop in adapters/llama_cpp.py
samples each token with."""

from __future__ import annotations

from typing import Any


class SamplerChain:
    """Owns one `llama_sampler` chain; `close()` frees it (and every sampler added)."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.sampler: Any = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

    def add(self, sampler: Any) -> None:
        self.lib.llama_sampler_chain_add(self.sampler, sampler)

    def add_logit_bias(self, n_vocab: int, logit_bias: dict[int, float]) -> None:
        biases = (self.lib.llama_logit_bias * len(logit_bias))()
        for index, (token, bias) in enumerate(logit_bias.items()):
            biases[index].token = token
            biases[index].bias = bias
        self.add(self.lib.llama_sampler_init_logit_bias(n_vocab, len(logit_bias), biases))

    def add_penalties(self, n_vocab: int, last_n: int, repeat: float, frequency: float, presence: float) -> None:
        self.add(self.lib.llama_sampler_init_penalties(n_vocab, last_n, repeat, frequency, presence))

    def sample(self, ctx: Any, index: int = -1) -> int:
        """Sample (and accept) the next token from the logits at `index` of `ctx`."""
        return int(self.lib.llama_sampler_sample(self.sampler, ctx, index))

    def close(self) -> None:
        if self.sampler is not None:
            self.lib.llama_sampler_free(self.sampler)
            self.sampler = None
