"""Build a tiny random-weight Coqui VITS model (two speakers, two languages)
for the speech tests: `python -m tests.tiny_vits OUT_DIR` writes
OUT_DIR/model.pth and OUT_DIR/config.json, in the layout Coqui's own model
downloads use, in a few seconds. Its audio is noise, as random weights give.

Runs in a subprocess so that the test process never imports torch or TTS.
Exit status 3, with the reason on stderr, means Coqui TTS cannot be
imported here.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

SAMPLE_RATE = 16000
SPEAKERS = ["alice", "bob"]
LANGUAGES = ["en", "de"]


def build(out: Path) -> None:
    from modelyard.adapters.coqui_torchaudio import prepare

    prepare()
    try:
        import torch
        from TTS.tts.configs.vits_config import VitsConfig
        from TTS.tts.models.vits import Vits, VitsArgs
    except ImportError as exc:
        print(f"cannot import Coqui TTS: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(3)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    args = VitsArgs(
        hidden_channels=16,
        hidden_channels_ffn_text_encoder=32,
        num_heads_text_encoder=2,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        kernel_size_flow=3,
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_rates_decoder=[8, 8, 4],  # product = the audio hop length, 256
        upsample_initial_channel_decoder=16,
        upsample_kernel_sizes_decoder=[16, 16, 8],
        init_discriminator=False,
        use_sdp=False,  # the deterministic duration predictor: repeatable lengths
        use_speaker_embedding=True,
        speaker_embedding_channels=8,
        use_language_embedding=True,
        embedded_language_dim=4,
    )
    config = VitsConfig(
        model_args=args,
        use_phonemes=False,  # graphemes: no espeak needed
        text_cleaner="english_cleaners",
        speakers=SPEAKERS,
        languages=LANGUAGES,
    )
    config.audio.sample_rate = SAMPLE_RATE
    model = Vits(config)
    with torch.no_grad():
        # Random weights predict about one frame per token, and durations are
        # rounded up: no `speed` above 1 could shorten that. About four frames
        # per token give speed room both ways.
        model.duration_predictor.proj.weight.mul_(0.1)
        model.duration_predictor.proj.bias.fill_(math.log(4.0))
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
