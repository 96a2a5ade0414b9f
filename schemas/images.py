"""OpenAI wire types of POST /v1/images/generations.

Request fields follow the order of OpenAI's API reference; modelyard's
extensions sit in a marked block at the end. Unknown fields are rejected
with 400. Fields listed in `NOT_SUPPORTED` are accepted only with their
neutral value: anything else gets 400 `unsupported_parameter`.
docs/compatibility.md documents the same table.
"""

from __future__ import annotations

from typing import Any, Literal

from modelyard.schemas.openai import Strict
from pydantic import BaseModel, Field


class ImageGenerationRequest(Strict):
    prompt: str
    background: Literal["transparent", "opaque", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    model: str | None = None
    moderation: Literal["low", "auto"] | None = None
    n: int | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    output_format: Literal["png", "jpeg", "webp"] | None = None
    partial_images: int | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    safety_identifier: str | None = None
    size: str | None = None
    stream: bool | None = None
    style: Literal["vivid", "natural"] | None = None
    svg: dict[str, Any] | None = None
    user: str | None = None

    # --- modelyard extensions ---
    negative_prompt: str | None = None
    num_inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)


# Accepted only with these values (a tuple: any of them).
NOT_SUPPORTED: dict[str, Any] = {
    "stream": (None, False),
    "partial_images": (None, 0),
    "frame_count": None,
    "frame_duration_ms": None,
    "svg": None,
}

# The values OpenAI's response schema allows for `size` and `quality`; other
# sizes and qualities are left out of the response rather than break clients
# that check it.
RESPONSE_SIZES = ("1024x1024", "1024x1536", "1536x1024")
RESPONSE_QUALITIES = ("low", "medium", "high")


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: Literal["png", "jpeg", "webp"]
    size: str | None = None
    quality: str | None = None
