"""Generate images and save them to files.

Shows: `client.images.generate` with base64 output (the default) in two
formats, modelyard's `seed` extension, and `response_format="url"`, whose
file is downloaded from modelyard itself (with the API key).

The embedded default config serves `tiny-random-sd`, a tiny Stable
Diffusion pipeline with random weights: the pictures are noise, but they are
real PNG/WebP files made by a real diffusers pipeline. Point a model at a real
pipeline folder for real pictures.

    .venv/bin/python examples/images.py [OUTPUT_DIR]

OUTPUT_DIR defaults to a new temporary folder. Environment:
MODELYARD_BASE_URL (default http://localhost:1234/v1) and MODELYARD_API_KEY
(default "not-needed"; set it when the server has [[auth.keys]]).
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from pathlib import Path

import httpx
import openai

BASE_URL = os.environ.get("MODELYARD_BASE_URL", "http://localhost:1234/v1")
API_KEY = os.environ.get("MODELYARD_API_KEY", "not-needed")
MODEL = "tiny-random-sd"


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="modelyard-images-"))
    out.mkdir(parents=True, exist_ok=True)
    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, timeout=300)

    saved: list[Path] = []
    for fmt in ("png", "webp"):
        result = client.images.generate(
            model=MODEL,
            prompt="a lighthouse on a cliff at sunset",
            n=2,
            size="128x128",
            output_format=fmt,  # type: ignore[arg-type]
            extra_body={"seed": 42, "num_inference_steps": 10},  # modelyard extensions
        )
        for index, image in enumerate(result.data or []):
            assert image.b64_json is not None
            path = out / f"lighthouse-{index}.{fmt}"
            path.write_bytes(base64.b64decode(image.b64_json))
            saved.append(path)

    # response_format="url": the server keeps the file for a while (url_ttl_seconds).
    result = client.images.generate(model=MODEL, prompt="a red bicycle", response_format="url", output_format="jpeg")
    url = (result.data or [])[0].url
    assert url is not None
    print(f"url: {url}")
    response = httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    response.raise_for_status()
    path = out / "bicycle.jpeg"
    path.write_bytes(response.content)
    saved.append(path)

    for path in saved:
        print(f"saved: {path} ({path.stat().st_size} bytes)")
    print(f"images: {len(saved)} in {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as exc:
        sys.exit(f"error: cannot reach modelyard at {BASE_URL} ({exc}); start it with `make serve`")
