"""diffusers: text-to-image pipelines (a local `save_pretrained` folder, or `hf:`).

The pipeline runs in a helper thread so that this generator can hand out an
`ImageProgress` per denoising step (diffusers reports steps through a
callback, which cannot yield). The callback also ends a cancelled
generation: it raises, which stops the pipeline at once. (diffusers' own
`pipe._interrupt = True` only skips the remaining steps: the latents are
still decoded by the VAE, seconds of work for an image nobody will see.)
Images are made one after another, image *i* from seed `seed + i`, and
encoded here in the requested format.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelyard.adapters.base import (
    GeneratedImage,
    ImageAdapter,
    ImageProgress,
    ImageRequest,
    InvalidRequestError,
    ModelLoadError,
)
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("modelyard.diffusers")

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class DiffusersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(
        default="auto",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            '"auto": AutoPipelineForText2Image, falling back to DiffusionPipeline (the class named in '
            'model_index.json); or the name of a diffusers pipeline class, e.g. "StableDiffusionPipeline".'
        ),
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description='Weight precision. "auto": float16 on cuda, float32 on cpu.'
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description='"auto" (cuda when present, else cpu), "cpu", "cuda", "cuda:1" or "mps".',
    )
    scheduler: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*Scheduler$",
        description=(
            'A diffusers scheduler class to use instead of the pipeline\'s own, e.g. "EulerDiscreteScheduler"; '
            "it is built from the pipeline's scheduler config."
        ),
    )
    guidance_scale: float | None = Field(
        default=None,
        ge=0,
        description="Classifier-free guidance when a request sends none (unset: the pipeline's default, 7.5 for Stable Diffusion).",
    )
    safety_checker: bool = Field(
        default=False,
        description="Run the pipeline's NSFW safety checker (it blacks out flagged images). The pipeline must include one.",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (default: torch's choice).")


@dataclass
class _Finished:
    image: Any  # a PIL image, or None when the run was stopped


@dataclass
class _Failed:
    error: BaseException


class _Stop(Exception):
    """Raised from the step callback to end a cancelled generation."""


def encode(image: Any, output_format: str, compression: int | None) -> bytes:
    """A PIL image as png, jpeg or webp bytes. `compression` is OpenAI's
    output_compression, used as the jpeg/webp quality (default 100, as OpenAI's)."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    else:
        quality = 100 if compression is None else compression
        image.convert("RGB").save(buffer, format=PIL_FORMATS[output_format], quality=quality)
    return buffer.getvalue()


class DiffusersImage(ImageAdapter):
    Options = DiffusersOptions
    max_concurrency = 1

    def __init__(self, path: Path, options: BaseModel) -> None:
        assert isinstance(options, DiffusersOptions)
        self.options = options
        try:
            import diffusers
            import torch
            from PIL import features
        except ImportError as exc:
            raise ModelLoadError(f"the diffusers backend needs {exc.name}: pip install 'modelyard[image]'") from None

        if options.threads is not None:
            torch.set_num_threads(options.threads)
        # Progress bars on the worker's stderr would flood the server log.
        diffusers.utils.logging.disable_progress_bar()
        try:
            import transformers

            transformers.utils.logging.disable_progress_bar()
        except ImportError:
            pass  # only pipelines with transformers components need it
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = options.dtype
        if dtype_name == "auto":
            dtype_name = "float32" if device == "cpu" else "float16"
        self.device = device
        self.webp = bool(features.check("webp"))

        index_path = path / "model_index.json"
        if not index_path.is_file():
            raise ModelLoadError(f"{path} is not a diffusers pipeline folder (it has no model_index.json)")
        try:
            index = json.loads(index_path.read_text())
        except ValueError as exc:
            raise ModelLoadError(f"{index_path} is not valid JSON: {exc}") from None

        kwargs: dict[str, Any] = {"local_files_only": True}
        # diffusers renamed `torch_dtype` to `dtype` (the old name warns).
        deprecation = getattr(diffusers.utils, "deprecation_utils", None)
        dtype_key = "dtype" if hasattr(deprecation, "_resolve_dtype") else "torch_dtype"
        kwargs[dtype_key] = getattr(torch, dtype_name)
        has_checker = (index.get("safety_checker") or [None])[0] is not None
        if options.safety_checker and not has_checker:
            raise ModelLoadError(f"safety_checker = true, but the pipeline in {path} has no safety checker")
        if "safety_checker" in index and not options.safety_checker:
            kwargs["safety_checker"] = None
            kwargs["requires_safety_checker"] = False

        self.pipe = self._load_pipeline(diffusers, path, kwargs)
        if options.scheduler is not None:
            self._swap_scheduler(diffusers, options.scheduler)
        try:
            self.pipe.to(device)
        except Exception as exc:
            raise ModelLoadError(f"cannot move the pipeline to {device!r}: {type(exc).__name__}: {exc}") from None
        self.pipe.set_progress_bar_config(disable=True)

        params = inspect.signature(self.pipe.__call__).parameters
        missing = [
            name for name in ("prompt", "height", "width", "num_inference_steps", "generator") if name not in params
        ]
        if missing:
            raise ModelLoadError(
                f"{type(self.pipe).__name__} is not a text-to-image pipeline this backend can drive (its call lacks {missing})"
            )
        self.params = set(params)
        self.step_callbacks = "callback_on_step_end" in params
        # Schedulers spread the steps over their training timesteps; with an
        # offset (Stable Diffusion's is 1), the last few counts run past the end.
        config = self.pipe.scheduler.config
        train_steps = int(getattr(config, "num_train_timesteps", 0) or 0)
        self.max_steps = train_steps - int(getattr(config, "steps_offset", 0) or 0) if train_steps else None
        log.info("loaded %s from %s on %s (%s)", type(self.pipe).__name__, path, device, dtype_name)

    def _load_pipeline(self, diffusers: Any, path: Path, kwargs: dict[str, Any]) -> Any:
        name = self.options.pipeline
        try:
            if name != "auto":
                cls = getattr(diffusers, name, None)
                if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
                    raise ModelLoadError(f"pipeline = {name!r} is not a diffusers pipeline class")
                return cls.from_pretrained(path, **kwargs)
            try:
                return diffusers.AutoPipelineForText2Image.from_pretrained(path, **kwargs)
            except ValueError as exc:  # a pipeline class AutoPipeline does not map
                log.info("AutoPipelineForText2Image cannot load %s (%s); trying DiffusionPipeline", path, exc)
                return diffusers.DiffusionPipeline.from_pretrained(path, **kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:  # missing files, bad configs, missing libraries
            raise ModelLoadError(f"diffusers could not load {path}: {type(exc).__name__}: {exc}") from None

    def _swap_scheduler(self, diffusers: Any, name: str) -> None:
        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            compatible = sorted(c.__name__ for c in getattr(self.pipe.scheduler, "compatibles", []))
            raise ModelLoadError(
                f"scheduler = {name!r} is not a diffusers scheduler class"
                + (f"; this pipeline's scheduler is compatible with: {', '.join(compatible)}" if compatible else "")
            )
        try:
            self.pipe.scheduler = cls.from_config(self.pipe.scheduler.config)
        except Exception as exc:
            raise ModelLoadError(f"cannot build {name} from the pipeline's scheduler config: {exc}") from None

    def generate(self, request: ImageRequest, cancelled: threading.Event) -> Iterator[ImageProgress | GeneratedImage]:
        import torch

        self._check(request)
        base_seed = request.seed if request.seed is not None else random.randrange(2**32)
        steps = request.steps or 50
        for index in range(request.n):
            seed = base_seed + index
            call: dict[str, Any] = {
                "prompt": request.prompt,
                "height": request.height,
                "width": request.width,
                "num_inference_steps": steps,
                "generator": torch.Generator(device="cpu" if self.device == "mps" else self.device).manual_seed(seed),
            }
            if request.negative_prompt is not None:
                call["negative_prompt"] = request.negative_prompt
            guidance = request.guidance if request.guidance is not None else self.options.guidance_scale
            if guidance is not None and "guidance_scale" in self.params:
                call["guidance_scale"] = guidance
            started = time.monotonic()
            image = None
            run = self._run(call, index, steps, cancelled)
            try:
                for item in run:
                    if isinstance(item, ImageProgress):
                        yield item
                    else:
                        image = item
            finally:
                run.close()  # on an early close: stop the pipeline and wait for it
            if image is None:  # cancelled
                log.info("image %d/%d cancelled", index + 1, request.n)
                return
            data = encode(image, request.output_format, request.output_compression)
            log.info(
                "image %d/%d: %dx%d, %d steps, seed %d, %.2fs",
                index + 1, request.n, image.width, image.height, steps, seed, time.monotonic() - started,
            )  # fmt: skip
            yield GeneratedImage(data=data, width=image.width, height=image.height, seed=seed)

    def _check(self, request: ImageRequest) -> None:
        if request.output_format not in PIL_FORMATS:
            raise InvalidRequestError(f"output_format {request.output_format!r} is not supported.", "output_format")
        if request.output_format == "webp" and not self.webp:
            raise InvalidRequestError("This server's Pillow was built without WebP support.", "output_format")
        if request.negative_prompt is not None and "negative_prompt" not in self.params:
            raise InvalidRequestError(f"{type(self.pipe).__name__} takes no negative_prompt.", "negative_prompt")
        if request.guidance is not None and "guidance_scale" not in self.params:
            raise InvalidRequestError(f"{type(self.pipe).__name__} takes no guidance_scale.", "guidance_scale")
        if request.steps is not None and self.max_steps is not None and request.steps > self.max_steps:
            raise InvalidRequestError(
                f"This model's scheduler allows at most {self.max_steps} steps; got {request.steps}.",
                "num_inference_steps",
            )

    def _run(self, call: dict[str, Any], index: int, steps: int, cancelled: threading.Event) -> Iterator[Any]:
        """Run the pipeline once in a helper thread; yield ImageProgress per
        step, then the PIL image (nothing more when the run was stopped).
        Closing this generator stops the pipeline at its next step and waits
        for it, so the model is free when the close returns."""
        events: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = int(getattr(pipe, "num_timesteps", None) or steps)
            log.debug("image %d: step %d/%d", index + 1, step + 1, total)
            events.put(ImageProgress(image=index, step=step + 1, steps=total))
            if cancelled.is_set() or stop.is_set():
                raise _Stop
            return {}

        def run() -> None:
            try:
                if self.step_callbacks:
                    extra: dict[str, Any] = {"callback_on_step_end": on_step_end}
                    if "callback_on_step_end_tensor_inputs" in self.params:
                        extra["callback_on_step_end_tensor_inputs"] = []  # the callback reads no tensors
                    result = self.pipe(**call, **extra)
                else:  # no per-step progress; a cancel takes effect between images
                    result = self.pipe(**call)
                events.put(_Finished(result.images[0]))
            except _Stop:
                events.put(_Finished(None))
            except BaseException as exc:
                events.put(_Failed(exc))

        thread = threading.Thread(target=run, name="diffusers-pipeline", daemon=True)
        thread.start()
        try:
            while True:
                event = events.get()
                if isinstance(event, ImageProgress):
                    yield event
                elif isinstance(event, _Finished):
                    if event.image is not None and not cancelled.is_set():
                        yield event.image
                    return
                else:
                    raise event.error
        finally:
            stop.set()
            thread.join()
