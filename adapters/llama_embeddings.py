"""llama-cpp-python embedding models (GGUF): one pooled vector per input."""

from __future__ import annotations

import threading
from pathlib import Path

from modelyard.adapters.base import Embeddings, EmbeddingsAdapter, EmbedRequest
from modelyard.adapters.llama_options import LlamaCppEmbeddingOptions, open_llama
from pydantic import BaseModel


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
        # The batch as large as the context: an input is decoded in one batch, so
        # a smaller one would cut inputs short (non-causal models need all their tokens at once).
        batch = max(options.n_batch, options.n_ctx)
        self.llm = open_llama(path, options, embedding=True, pooling_type=pooling, n_batch=batch, n_ubatch=batch)

    def takes_token_ids(self) -> bool:
        return True

    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        # One input's tokens are decoded in one batch, so the batch bounds an input too.
        most = min(self.llm.n_ctx(), self.llm.n_batch)
        limit = most if request.max_tokens is None else min(request.max_tokens, most)
        result = Embeddings([None] * len(request.inputs), [0] * len(request.inputs), [None] * len(request.inputs))
        texts: list[tuple[int, str, int]] = []  # (input index, text, tokens)
        for index, item in enumerate(request.inputs):
            if isinstance(item, list):
                tokens = list(item)
                if any(not 0 <= t < self.llm.n_vocab() for t in tokens):
                    result.errors[index] = f"input[{index}] has a token id outside this model's vocabulary"
                    continue
            else:
                tokens = self.llm.tokenize(item.encode("utf-8"), add_bos=True, special=False)
            result.token_counts[index] = len(tokens)
            if len(tokens) > limit:
                if not request.truncate:
                    result.errors[index] = f"input[{index}] has {len(tokens)} tokens; this model takes at most {limit}"
                    continue
                tokens = tokens[:limit]
                item = tokens
                result.token_counts[index] = len(tokens)
            # llama-cpp-python embeds text: token arrays (and truncated inputs)
            # go back through the detokenizer, which round-trips the model's own tokens.
            text = item if isinstance(item, str) else bytes(self.llm.detokenize(tokens)).decode("utf-8", "replace")
            texts.append((index, text, len(tokens)))
        for group in batches(texts, self.llm.n_batch, self.llm.context_params.n_seq_max):
            if cancelled.is_set():
                break
            # Several inputs per llama_decode, one sequence id each (llama-cpp-python's embed batches a list).
            vectors = self.llm.embed([text for _, text, _ in group], normalize=False, truncate=True)
            for (index, _, _), values in zip(group, vectors):
                result.vectors[index] = self._vector(values)
        return result

    def _vector(self, values: list[float]) -> bytes:
        import numpy as np

        vector = np.array(values, dtype=np.float32).reshape(-1)
        if self.options.normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm else vector
        return vector.astype("<f4").tobytes()

    def close(self) -> None:
        self.llm.close()


def batches(texts: list[tuple[int, str, int]], n_batch: int, n_seq_max: int) -> list[list[tuple[int, str, int]]]:
    """Inputs grouped as llama-cpp-python's embed() decodes them (tokens within
    n_batch, at most n_seq_max sequences), so that a cancel is seen between decodes."""
    groups: list[list[tuple[int, str, int]]] = []
    tokens = 0
    for text in texts:
        if not groups or tokens + text[2] > n_batch or len(groups[-1]) >= n_seq_max:
            groups.append([])
            tokens = 0
        groups[-1].append(text)
        tokens += text[2]
    return groups
