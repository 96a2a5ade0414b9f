"""sentence-transformers: text embedding models (a local folder, or `hf:`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from modelyard.adapters.base import Embeddings, EmbeddingsAdapter, EmbedRequest, ModelLoadError
from pydantic import BaseModel, ConfigDict, Field


class SentenceTransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field(default="auto", description='"auto" (cuda when present, else cpu), "cpu", "cuda", "cuda:1", "mps"...')
    normalize: bool = Field(default=True, description="Scale each vector to unit length.")
    batch_size: int = Field(default=64, ge=1, description="Inputs per forward pass.")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (default: torch's choice).")
    trust_remote_code: bool = Field(default=False, description="Allow model code from the model folder to run.")


class SentenceTransformersEmbeddings(EmbeddingsAdapter):
    Options = SentenceTransformersOptions
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, SentenceTransformersOptions)
        import torch
        from sentence_transformers import SentenceTransformer

        if options.threads is not None:
            torch.set_num_threads(options.threads)
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.options = options
        try:
            self.model: Any = SentenceTransformer(
                str(path), device=device, trust_remote_code=options.trust_remote_code, local_files_only=True
            )
        except Exception as exc:  # missing files, bad config, wrong folder
            raise ModelLoadError(f"sentence-transformers could not load {path}: {type(exc).__name__}: {exc}") from None
        self.max_seq_length = int(self.model.max_seq_length or 512)

    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        limit = self.max_seq_length if request.max_tokens is None else min(request.max_tokens, self.max_seq_length)
        result = Embeddings([None] * len(request.inputs), [0] * len(request.inputs), [None] * len(request.inputs))
        texts: list[str] = []
        positions: list[int] = []
        for index, item in enumerate(request.inputs):
            if not isinstance(item, str):
                result.errors[index] = "this model takes text, not token arrays"
                continue
            count = len(self.model.tokenizer(item, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
            if count > limit and not request.truncate:
                result.errors[index] = f"input[{index}] has {count} tokens; this model takes at most {limit}"
                result.token_counts[index] = count
                continue
            result.token_counts[index] = min(count, limit)
            texts.append(item)
            positions.append(index)
        if texts and not cancelled.is_set():
            previous = self.model.max_seq_length
            self.model.max_seq_length = limit
            try:
                vectors = self.model.encode(
                    texts,
                    batch_size=self.options.batch_size,
                    normalize_embeddings=self.options.normalize,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                self.model.max_seq_length = previous
            for index, vector in zip(positions, vectors):
                result.vectors[index] = vector.astype("<f4").tobytes()
        return result
