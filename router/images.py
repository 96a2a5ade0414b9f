"""POST /v1/images/generations, and GET /v1/images/files/{id}.{ext} for the
images of `response_format = "url"`.

URL images are files of the file store (router/file_store.py), purpose
`vision`, owned by the key that asked for them and counted in its
`[storage] max_bytes_per_key`: each expires after its model's
`image.url_ttl_seconds`. They are served here and, like any file, at
/v1/files/{id}/content; to another key they do not exist.
"""

from __future__ import annotations

import base64
import logging
import re
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import GeneratedImage, ImageProgress, ImageRequest
from modelyard.router.deps import resolve_model
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.file_store import TooLarge
from modelyard.router.files import file_response, store_of
from modelyard.router.limits import reject_lone_surrogates
from modelyard.router.registry import ModelEntry
from modelyard.router.responses import owner_of
from modelyard.router.streaming import ClientGone, until_disconnected
from modelyard.schemas import images as wire
from modelyard.schemas import openai as oa
from modelyard.schemas.config import ImageSettings

log = logging.getLogger("modelyard.images")
router = APIRouter()
ENDPOINT = "/v1/images/generations"
FILES = "/v1/images/files"
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
PURPOSE = "vision"
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
FILE_NAME = re.compile(r"^(file-[0-9a-f]{16,64})\.(png|jpeg|webp)$")


def reject_unsupported(body: wire.ImageGenerationRequest) -> None:
    for name, neutral in wire.NOT_SUPPORTED.items():
        allowed = neutral if isinstance(neutral, tuple) else (neutral,)
        if getattr(body, name) not in allowed:
            raise invalid_request(
                f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter"
            )


def parse_size(value: str | None, settings: ImageSettings) -> tuple[int, int]:
    text = settings.default_size if value in (None, "auto") else value
    assert text is not None
    match = SIZE.match(text)
    if match is None:
        raise invalid_request(
            f"Invalid size '{text}': give 'auto' or 'WIDTHxHEIGHT', e.g. '{settings.default_size}'.", param="size"
        )
    width, height = int(match[1]), int(match[2])
    if width % 8 or height % 8:
        raise invalid_request(f"Invalid size '{text}': width and height must be multiples of 8.", param="size")
    for side in (width, height):
        if not settings.min_size <= side <= settings.max_size:
            raise invalid_request(
                f"Invalid size '{text}': width and height must be between {settings.min_size} and {settings.max_size} "
                "pixels for this model.",
                param="size",
            )
    return width, height


def steps_for(body: wire.ImageGenerationRequest, settings: ImageSettings) -> int:
    if body.num_inference_steps is not None:
        if body.num_inference_steps > settings.max_steps:
            raise invalid_request(
                f"num_inference_steps must be at most {settings.max_steps} for this model; got {body.num_inference_steps}.",
                param="num_inference_steps",
            )
        return body.num_inference_steps
    if body.quality in (None, "auto"):
        return settings.default_steps
    assert body.quality is not None
    if body.quality not in settings.quality_steps:
        accepted = ", ".join(["auto", *settings.quality_steps])
        raise invalid_request(f"Invalid quality '{body.quality}': this model accepts {accepted}.", param="quality")
    return settings.quality_steps[body.quality]


def backend_request(body: wire.ImageGenerationRequest, settings: ImageSettings) -> ImageRequest:
    if not body.prompt.strip():
        raise invalid_request("prompt must not be empty.", param="prompt")
    if len(body.prompt) > settings.max_prompt_chars:
        raise invalid_request(
            f"prompt is {len(body.prompt)} characters long; this model takes at most {settings.max_prompt_chars}.",
            param="prompt",
        )
    n = 1 if body.n is None else body.n
    if not 1 <= n <= settings.max_n:
        raise invalid_request(f"n must be between 1 and {settings.max_n} for this model; got {n}.", param="n")
    width, height = parse_size(body.size, settings)
    return ImageRequest(
        prompt=body.prompt,
        width=width,
        height=height,
        n=n,
        steps=steps_for(body, settings),
        guidance=body.guidance_scale,
        negative_prompt=body.negative_prompt,
        seed=body.seed,
        output_format=body.output_format or "png",
        output_compression=body.output_compression,
    )


async def generate(entry: ModelEntry, image_request: ImageRequest) -> list[GeneratedImage]:
    images: list[GeneratedImage] = []
    async for item in entry.stream("generate", image_request):
        if isinstance(item, GeneratedImage):
            images.append(item)
        elif isinstance(item, ImageProgress) and item.step == item.steps:
            log.debug("model %s: image %d/%d denoised", entry.id, item.image + 1, image_request.n)
    if len(images) != image_request.n:
        raise APIError(
            500, f"The model '{entry.id}' returned {len(images)} of {image_request.n} images.", code="backend_error"
        )
    return images


@router.post(ENDPOINT, response_model=wire.ImagesResponse, responses={400: {"model": oa.ErrorResponse}})
async def create_image(body: wire.ImageGenerationRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "image", ENDPOINT)
    settings = entry.model.image
    reject_unsupported(body)
    reject_lone_surrogates(body)
    image_request = backend_request(body, settings)
    try:
        images = await until_disconnected(request, generate(entry, image_request))
    except ClientGone:
        return Response(status_code=499)
    fmt = image_request.output_format
    data: list[dict[str, str]] = []
    for index, image in enumerate(images):
        if body.response_format == "url":
            try:
                stored = await store_of(request).put_bytes(
                    owner_of(request), image.data, f"image-{index + 1}.{fmt}", PURPOSE, settings.url_ttl_seconds
                )
            except TooLarge as exc:
                raise APIError(
                    413, f"{exc} Or ask for response_format 'b64_json'.", code="storage_limit_exceeded"
                ) from None
            data.append({"url": f"{str(request.base_url).rstrip('/')}{FILES}/{stored.id}.{fmt}"})
        else:
            data.append({"b64_json": base64.b64encode(image.data).decode("ascii")})
    response: dict[str, object] = {"created": int(time.time()), "data": data, "output_format": fmt}
    size = f"{image_request.width}x{image_request.height}"
    if size in wire.RESPONSE_SIZES:
        response["size"] = size
    if body.quality in wire.RESPONSE_QUALITIES and body.num_inference_steps is None:
        response["quality"] = body.quality
    return JSONResponse(response)


@router.get(FILES + "/{name}", include_in_schema=True, response_class=Response)
async def get_image_file(name: str, request: Request) -> Response:
    missing = APIError(404, f"The image '{name}' does not exist or has expired.", code="image_not_found")
    match = FILE_NAME.match(name)
    if match is None:
        raise missing
    stored = await store_of(request).get(owner_of(request), match[1])
    if stored is None or stored.content_type != MEDIA_TYPES[match[2]]:
        raise missing
    remaining = max(0, (stored.expires_at or 0) - int(time.time()))
    return await file_response(request, owner_of(request), match[1], {"cache-control": f"private, max-age={remaining}"}, missing)
