"""Images as inputs on the three text APIs, through the official SDKs.

Shows: a chat `image_url` part (a data URL), a Responses `input_image`, an
Anthropic `image` block (base64), the prompt's token count growing by the
image's tokens, /v1/models' `capabilities` ("vision"), and the 400 a model
without vision answers, naming the part.

The embedded default config serves `smollm2-vision`: SmolLM2 with a tiny
projector of random weights, so the image takes the real path but what the
model says about it is noise (configure a real pair, e.g. SmolVLM, for
answers; docs/config.md, "Images: mmproj"). Pass an image file to send it
instead of the drawn one:

    .venv/bin/python examples/vision.py [IMAGE_FILE]

Environment: MODELYARD_BASE_URL (default http://localhost:1234/v1),
MODELYARD_API_KEY (default "not-needed"), MODELYARD_VISION_MODEL (default
smollm2-vision), MODELYARD_TEXT_MODEL (default smollm2).
"""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

import anthropic
import httpx
import openai
from PIL import Image, ImageDraw

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
VISION_MODEL = os.environ.get("MODELYARD_VISION_MODEL", "smollm2-vision")
TEXT_MODEL = os.environ.get("MODELYARD_TEXT_MODEL", "smollm2")
QUESTION = "What is in this picture? Answer in one sentence."


def picture() -> tuple[bytes, str]:
    """The image to send, and its media type: the file named on the command line, or a drawn one."""
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
        media = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}
        return path.read_bytes(), media.get(path.suffix.lower(), "image/png")
    image = Image.new("RGB", (128, 96), "skyblue")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 70, 128, 96), fill="forestgreen")
    draw.ellipse((90, 8, 118, 36), fill="gold")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), "image/png"


def main() -> int:
    data, media_type = picture()
    encoded = base64.b64encode(data).decode()
    data_url = f"data:{media_type};base64,{encoded}"
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=300)

    listed = httpx.get(f"{BASE_URL}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).json()
    for model in listed["data"]:
        if model["id"] in (VISION_MODEL, TEXT_MODEL):
            print(f"{model['id']}: capabilities {model.get('capabilities')}")

    text_only = client.chat.completions.create(
        model=VISION_MODEL, max_tokens=32, messages=[{"role": "user", "content": QUESTION}]
    )
    with_image = client.chat.completions.create(
        model=VISION_MODEL,
        max_tokens=32,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
        ]}],
    )
    assert text_only.usage is not None and with_image.usage is not None
    print(f"chat: {with_image.choices[0].message.content!r}")
    grown = with_image.usage.prompt_tokens - text_only.usage.prompt_tokens
    print(f"prompt tokens: {text_only.usage.prompt_tokens} without the image, "
          f"{with_image.usage.prompt_tokens} with it (+{grown})")

    response = client.responses.create(
        model=VISION_MODEL,
        max_output_tokens=32,
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": QUESTION},
            {"type": "input_image", "image_url": data_url, "detail": "auto"},
        ]}],
    )
    print(f"responses: {response.output_text!r} input_tokens={response.usage.input_tokens if response.usage else None}")

    claude = anthropic.Anthropic(base_url=BASE_URL.removesuffix("/v1"), api_key=API_KEY, timeout=300)
    message = claude.messages.create(
        model=VISION_MODEL,
        max_tokens=32,
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": encoded}},
            {"type": "text", "text": QUESTION},
        ]}],
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    print(f"messages: {text!r} input_tokens={message.usage.input_tokens}")

    try:
        client.chat.completions.create(
            model=TEXT_MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}]}],
        )
        print(f"{TEXT_MODEL} took the image")
        return 1
    except openai.BadRequestError as exc:
        print(f"{TEXT_MODEL} refused: {exc.status_code} {exc.body.get('message') if isinstance(exc.body, dict) else exc}")
    return 0 if grown > 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        print(f"cannot reach {BASE_URL}: {exc}. Start the server with `make serve`.", file=sys.stderr)
        sys.exit(1)
