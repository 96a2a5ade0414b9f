"""Run Coqui TTS where torchaudio cannot be imported.

Coqui TTS (`coqui-tts`, module `TTS`) imports torchaudio at the top of its
model modules and refuses to import when torchaudio (and, from torch 2.9,
torchcodec) is not installed. Yet inference with the common models (VITS,
Glow-TTS, Tacotron, with or without a vocoder) never calls torchaudio: it is
used for training, for reading reference audio and by a few large models.
On PyPI, torchaudio for Linux x86_64 is a CUDA build whose native library
fails to load beside a CPU build of torch (`libc10_cuda.so` missing).

`prepare()` runs in the speech worker before `import TTS`. If the real
torchaudio imports, nothing changes. If not, it registers a small stand-in
module under the name `torchaudio` (and a placeholder `torchcodec` if none is
installed) that offers what inference can touch: `load` and `save` (through
soundfile) and resampling (through scipy). Any other torchaudio feature
raises an error naming the reason, so a model that truly needs torchaudio
(XTTS, Tortoise, Bark) fails to load with a clear message instead of
producing wrong audio. Nothing installed is modified.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from math import gcd
from typing import Any

STANDIN_MARK = "__modelyard_standin__"


class TorchaudioUnavailable(AttributeError):
    """An AttributeError, so that hasattr() and getattr(..., default) still work."""


def _drop(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _module(name: str, reason: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    setattr(module, STANDIN_MARK, reason)

    def missing(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise TorchaudioUnavailable(
            f"{name}.{attr} is not available: torchaudio could not be imported ({reason}), and modelyard's "
            "stand-in only covers what plain text-to-speech inference uses. This model needs a torch and "
            "torchaudio pair that work together (see the README)."
        )

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def resample(waveform: Any, orig_freq: int, new_freq: int, *args: Any, **kwargs: Any) -> Any:
    """Polyphase resampling along the last axis; a tensor in, a tensor out."""
    import torch
    from scipy.signal import resample_poly

    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq == new_freq:
        return waveform
    factor = gcd(orig_freq, new_freq)
    data = waveform.detach().cpu().numpy()
    out = resample_poly(data, new_freq // factor, orig_freq // factor, axis=-1)
    return torch.as_tensor(out, dtype=waveform.dtype, device=waveform.device)


def load(
    uri: Any, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True, channels_first: bool = True, **_: Any
) -> Any:
    import soundfile
    import torch

    data, rate = soundfile.read(uri, start=frame_offset, frames=num_frames, dtype="float32", always_2d=True)
    tensor = torch.from_numpy(data)
    return (tensor.T.contiguous() if channels_first else tensor), rate


def save(
    uri: Any, src: Any, sample_rate: int, channels_first: bool = True, format: str | None = None, **_: Any
) -> None:
    import soundfile

    data = src.detach().cpu().numpy()
    if data.ndim == 2 and channels_first:
        data = data.T
    soundfile.write(uri, data, int(sample_rate), format=format)


def _standin(reason: str) -> dict[str, types.ModuleType]:
    import torch

    class Resample(torch.nn.Module):
        def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, *args: Any, **kwargs: Any) -> None:
            super().__init__()
            self.orig_freq, self.new_freq = orig_freq, new_freq

        def forward(self, waveform: torch.Tensor) -> Any:
            return resample(waveform, self.orig_freq, self.new_freq)

    root = _module("torchaudio", reason)
    functional = _module("torchaudio.functional", reason)
    transforms = _module("torchaudio.transforms", reason)
    functional.resample = resample  # type: ignore[attr-defined]
    transforms.Resample = Resample  # type: ignore[attr-defined]
    root.load = load  # type: ignore[attr-defined]
    root.save = save  # type: ignore[attr-defined]
    root.functional = functional  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    root.__version__ = "0+modelyard.standin"  # type: ignore[attr-defined]
    return {"torchaudio": root, "torchaudio.functional": functional, "torchaudio.transforms": transforms}


def prepare() -> str | None:
    """Make `import TTS` work. None: the real torchaudio is in use; else why
    the stand-in is (also logged by the caller)."""
    existing = sys.modules.get("torchaudio")
    if existing is not None:
        return getattr(existing, STANDIN_MARK, None)
    try:
        import torchaudio  # noqa: F401

        return None
    except Exception as exc:  # ImportError, or OSError from its native library
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if importlib.util.find_spec("torchaudio") is None:
            reason = "torchaudio is not installed"
    _drop("torchaudio")
    sys.modules.update(_standin(reason))
    try:
        has_codec = importlib.util.find_spec("torchcodec") is not None
    except (ImportError, ValueError):
        has_codec = False
    if not has_codec:
        # Coqui only checks that it exists (its audio loading goes through torchaudio).
        sys.modules["torchcodec"] = _module("torchcodec", reason)
    return reason
