"""A tiny Stable Diffusion pipeline with random weights, built locally.

No package carries real diffusion weights, and this machine reaches no model
hub, so tests and the embedded default build a real diffusers text-to-image
pipeline from small configs: UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, a CLIPTokenizer over a byte-level vocabulary and a DDIM
scheduler. The weights are random (seeded, so every build is the same): the
pipeline runs like any Stable Diffusion model, and its images are noise.
Saved with `save_pretrained`, it is well under 1 MB.

    python -m modelyard.adapters.tiny_sd OUTPUT_DIR

The embedded default config uses `source = "assemble:modelyard.adapters.tiny_sd"`: the
worker calls `assemble(path)`, which builds the folder once into modelyard's
cache folder and reuses it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_NAME = "tiny-random-sd"
# Bump when the configs below change, so that cached builds are rebuilt.
BUILD_VERSION = 1
MARKER = "tiny-random-sd.json"
SEED = 0


def byte_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's byte-level vocabulary: every byte as a symbol, alone and as a
    word end (`</w>`), plus the two special tokens; no merges beyond a few."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>")]
    tokens += ["th", "the</w>", "an", "in", "on</w>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def build(output: Path) -> Path:
    """Build the pipeline and save it into `output` (created; must not exist)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = byte_vocab()
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    # Four VAE blocks: latents are 1/8 of the image size, as in real Stable Diffusion.
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=256,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            max_position_embeddings=77,
            vocab_size=len(vocab),
        )
    )
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    output.mkdir(parents=True)
    pipe.save_pretrained(output)
    (output / MARKER).write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "build_version": BUILD_VERSION,
                "seed": SEED,
                "note": "random weights: a working Stable Diffusion pipeline whose images are noise",
            },
            indent=2,
        )
    )
    return output


def is_built(path: Path) -> bool:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("build_version") == BUILD_VERSION and (path / "model_index.json").is_file())


def assemble(output_path: str | os.PathLike[str]) -> Path:
    """Build the pipeline into `output_path` unless a current build is there.

    The build goes to a temporary sibling folder that is then renamed, so a
    crash or a concurrent build never leaves a half-written folder behind.
    """
    target = Path(output_path)
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(scratch / "pipeline")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # an older build
        try:
            os.rename(scratch / "pipeline", target)
        except OSError:
            if not is_built(target):  # not just another process winning the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m modelyard.adapters.tiny_sd OUTPUT_DIR", file=sys.stderr)
        return 2
    path = assemble(argv[1])
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"{MODEL_NAME}: {path} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
