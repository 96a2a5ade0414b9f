"""A tiny random-weight GPT-2 in the legacy GGML file format, for the
ctransformers backend's tests.

The layout is the one of ggml's `examples/gpt-2` (and ctransformers'
`models/llms/gpt2.cc`), all tensors in float32:

    uint32 magic 0x67676d6c
    int32  n_vocab, n_ctx, n_embd, n_head, n_layer, ftype
    int32  n_vocab, then per token: uint32 length, bytes
    per tensor: int32 n_dims, int32 name length, int32 type,
                int32 ne[0..n_dims) (ne[0] varies fastest), name, data

The vocabulary is byte-level: token i < 256 is the single byte i, then
`<|endoftext|>` (the EOS token). The output head is written separately from
the input embeddings and arranged so that printable ASCII text (letters,
digits, space, some punctuation) is far more likely than other bytes: the
model babbles readable random text, never emits EOS, and any text
tokenizes to one token per byte.
"""

from __future__ import annotations

import string
import struct
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
EOS = b"<|endoftext|>"
READABLE = set((string.ascii_letters + string.digits + " .,!?").encode())


def vocabulary() -> list[bytes]:
    return [bytes([i]) for i in range(256)] + [EOS]


def write_tiny_gpt2(
    path: Path | str,
    *,
    n_ctx: int = 256,
    n_embd: int = 32,
    n_head: int = 2,
    n_layer: int = 2,
    seed: int = 0,
) -> Path:
    path = Path(path)
    vocab = vocabulary()
    n_vocab = len(vocab)
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Numpy shapes are ggml's ne reversed: a ggml [n_embd, n_vocab] tensor
    # is n_vocab rows of n_embd floats.
    tensors: list[tuple[str, np.ndarray]] = [
        ("model/ln_f/g", np.ones(n_embd, np.float32)),
        ("model/ln_f/b", np.zeros(n_embd, np.float32)),
        ("model/wte", normal(n_vocab, n_embd, scale=1.0)),
        ("model/wpe", normal(n_ctx, n_embd, scale=0.1)),
    ]
    # The final norm's bias points along dimension 0, and only readable
    # tokens have a positive component there: their logits get +10, the
    # others -10. The other dimensions give the (random) preferences.
    tensors[0][1][0] = 0.0
    tensors[1][1][0] = 10.0
    lm_head = normal(n_vocab, n_embd, scale=0.5)
    lm_head[:, 0] = [1.0 if len(token) == 1 and token[0] in READABLE else -1.0 for token in vocab]
    tensors.append(("model/lm_head", lm_head))
    for layer in range(n_layer):
        prefix = f"model/h{layer}"
        tensors += [
            (f"{prefix}/ln_1/g", np.ones(n_embd, np.float32)),
            (f"{prefix}/ln_1/b", np.zeros(n_embd, np.float32)),
            (f"{prefix}/ln_2/g", np.ones(n_embd, np.float32)),
            (f"{prefix}/ln_2/b", np.zeros(n_embd, np.float32)),
            (f"{prefix}/attn/c_attn/w", normal(3 * n_embd, n_embd)),
            (f"{prefix}/attn/c_attn/b", np.zeros(3 * n_embd, np.float32)),
            (f"{prefix}/attn/c_proj/w", normal(n_embd, n_embd)),
            (f"{prefix}/attn/c_proj/b", np.zeros(n_embd, np.float32)),
            (f"{prefix}/mlp/c_fc/w", normal(4 * n_embd, n_embd)),
            (f"{prefix}/mlp/c_fc/b", np.zeros(4 * n_embd, np.float32)),
            (f"{prefix}/mlp/c_proj/w", normal(n_embd, 4 * n_embd)),
            (f"{prefix}/mlp/c_proj/b", np.zeros(n_embd, np.float32)),
        ]

    with path.open("wb") as out:
        ftype = 0  # all float32
        out.write(struct.pack("<I6i", GGML_MAGIC, n_vocab, n_ctx, n_embd, n_head, n_layer, ftype))
        out.write(struct.pack("<i", n_vocab))
        for token in vocab:
            out.write(struct.pack("<I", len(token)) + token)
        for name, data in tensors:
            encoded = name.encode()
            dims = list(reversed(data.shape))
            out.write(struct.pack(f"<3i{len(dims)}i", len(dims), len(encoded), 0, *dims))
            out.write(encoded)
            out.write(data.astype("<f4").tobytes())
    return path


if __name__ == "__main__":
    import sys

    print(write_tiny_gpt2(sys.argv[1] if len(sys.argv) > 1 else "tiny-gpt2.bin"))
