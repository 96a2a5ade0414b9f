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
        self.llm = open_llama(path, options, embedding=True, pooling_type=pooling)

    def takes_token_ids(self) -> bool:
        return True

    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        import numpy as np

        limit = self.llm.n_ctx() if request.max_tokens is None else min(request.max_tokens, self.llm.n_ctx())
        result = Embeddings([], [], [])
        for index, item in enumerate(request.inputs):
            if cancelled.is_set():
                break
            if isinstance(item, list):
                tokens = list(item)
                if any(not 0 <= t < self.llm.n_vocab() for t in tokens):
                    result.vectors.append(None)
                    result.token_counts.append(0)
                    result.errors.append(f"input[{index}] has a token id outside this model's vocabulary")
                    continue
            else:
                tokens = self.llm.tokenize(item.encode("utf-8"), add_bos=True, special=False)
            if len(tokens) > limit:
                if not request.truncate:
                    result.vectors.append(None)
                    result.token_counts.append(len(tokens))
                    result.errors.append(f"input[{index}] has {len(tokens)} tokens; this model takes at most {limit}")
                    continue
                tokens = tokens[:limit]
                item = tokens
            # llama-cpp-python embeds text: token arrays (and truncated inputs)
            # go back through the detokenizer, which round-trips the model's own tokens.
            text = item if isinstance(item, str) else bytes(self.llm.detokenize(tokens)).decode("utf-8", "replace")
            vector = np.array(self.llm.embed(text, normalize=False, truncate=True), dtype=np.float32).reshape(-1)
            if self.options.normalize:
                norm = float(np.linalg.norm(vector))
                vector = vector / norm if norm else vector
            result.vectors.append(vector.astype("<f4").tobytes())
            result.token_counts.append(len(tokens))
            result.errors.append(None)
        return result

    def close(self) -> None:
        self.llm.close()
