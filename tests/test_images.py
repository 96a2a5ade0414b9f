"""/v1/images/generations on a real diffusers pipeline through a real server:
the tiny random Stable Diffusion pipeline of adapters/tiny_sd.py, built into
a temporary folder. Formats, sizes, url images (behind an API key, with
expiry), seeds, bad input, and a disconnect that frees the model."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import REPO, openai_validator

pytestmark = pytest.mark.real_model

KEY = "images-test-key-1"
TTL = 3


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built in a subprocess: the test process itself never imports torch.
    path = tmp_path_factory.mktemp("tiny-sd") / "tiny-random-sd"
    result = subprocess.run(
        [sys.executable, "-m", "modelyard.adapters.tiny_sd", str(path)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 1024 * 1024, f"the tiny pipeline takes {size} bytes"
    return path


@pytest.fixture(scope="module")
def server(server_factory: Any, pipeline_dir: Path) -> Any:
    config = f"""
[[auth.keys]]
name = "tester"
key = "{KEY}"
metrics = true

[[models]]
id = "tiny-sd"
modality = "image"
backend = "diffusers"
source = "{pipeline_dir}"
aliases = ["dall-e-2"]
[models.options]
threads = 1
[models.image]
default_size = "64x64"
min_size = 32
max_size = 256
max_n = 4
max_prompt_chars = 200
default_steps = 3
quality_steps = {{ low = 2, medium = 3, high = 4 }}
max_steps = 990
url_ttl_seconds = {TTL}
"""
    server = server_factory(config, env={"HF_HUB_OFFLINE": "1"}, wait=False, health_key=KEY)
    server.wait_for(
        lambda h: h["models"]["tiny-sd"]["status"] in ("loaded", "failed"), timeout=180, what="the image model to load"
    )
    assert server.health()["models"]["tiny-sd"]["status"] == "loaded", server.log()
    return server


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0, timeout=120) as client:
        yield client


def post(server: Any, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=timeout,
    )


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def test_models_lists_the_image_model(client: openai.OpenAI) -> None:
    card = client.models.retrieve("tiny-sd")
    assert card.model_extra is not None
    assert card.model_extra["modality"] == "image" and card.model_extra["backend"] == "diffusers"
    assert card.model_extra["status"] == "loaded"
    assert "tiny-sd" in [m.id for m in client.models.list()]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_two_images_in_each_format(client: openai.OpenAI, fmt: str) -> None:
    raw = client.images.with_raw_response.generate(
        model="tiny-sd",
        prompt="a red fox in the snow",
        n=2,
        size="64x48",
        output_format=fmt,  # type: ignore[arg-type]
    )
    body = raw.http_response.json()
    errors = [e.message for e in openai_validator("ImagesResponse").iter_errors(body)]
    assert not errors, errors
    result = raw.parse()
    assert result.output_format == fmt
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.b64_json and item.url is None
        image = decode(item.b64_json)
        assert image.format == fmt.upper()
        assert image.size == (64, 48)


def test_size_auto_and_quality(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-2", prompt="a boat", size="auto", quality="low")
    assert result.data is not None and len(result.data) == 1
    assert result.data[0].b64_json is not None
    assert decode(result.data[0].b64_json).size == (64, 64)  # default_size
    assert result.quality == "low"
    assert result.size is None  # 64x64 is not one of the sizes OpenAI's schema allows in a response


def test_url_images_need_the_key_and_expire(client: openai.OpenAI, server: Any) -> None:
    raw = client.images.with_raw_response.generate(prompt="a lighthouse", response_format="url", output_format="jpeg")
    body = raw.http_response.json()
    assert not list(openai_validator("ImagesResponse").iter_errors(body))
    url = body["data"][0]["url"]
    assert url.startswith(f"{server.base_url}/v1/images/files/") and url.endswith(".jpeg"), url
    assert "b64_json" not in body["data"][0]

    assert httpx.get(url).status_code == 401  # keys are on: /v1 needs one
    response = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)

    time.sleep(TTL + 0.5)
    gone = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"})
    assert gone.status_code == 404
    error = gone.json()["error"]
    assert error["type"] == "not_found_error" and error["code"] == "image_not_found"
    unknown = httpx.get(f"{server.base_url}/v1/images/files/nope.png", headers={"Authorization": f"Bearer {KEY}"})
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_same_seed_same_image(client: openai.OpenAI) -> None:
    def image(seed: int, n: int = 1) -> list[str]:
        result = client.images.generate(prompt="a castle", n=n, extra_body={"seed": seed, "num_inference_steps": 3})
        assert result.data is not None
        return [item.b64_json or "" for item in result.data]

    first = image(7)
    assert image(7) == first
    assert image(8) != first
    # Image i of a request is made from seed + i.
    assert image(7, n=2) == [first[0], image(8)[0]]
    # Other extensions are honoured too (and change the picture).
    other = client.images.generate(
        prompt="a castle",
        extra_body={"seed": 7, "num_inference_steps": 3, "negative_prompt": "fog", "guidance_scale": 2.0},
    )
    assert other.data is not None and other.data[0].b64_json != first[0]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"size": "65x64"}, "size"),
        ({"size": "big"}, "size"),
        ({"size": "16x16"}, "size"),
        ({"size": "512x512"}, "size"),
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 201}, "prompt"),
        ({"num_inference_steps": 991}, "num_inference_steps"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"quality": "ultra"}, "quality"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_compression": 101}, "output_compression"),
        ({"response_format": "file"}, "response_format"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
        ({"colour": "blue"}, "colour"),
        ({"model": "nope"}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_param(server: Any, body: dict[str, Any], param: str) -> None:
    response = post(server, {"prompt": "a cat", **body})
    expected = 404 if param == "model" else 400
    assert response.status_code == expected, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["message"]


def test_ignored_fields_are_accepted(server: Any) -> None:
    response = post(
        server,
        {
            "prompt": "a cat",
            "background": "opaque",
            "moderation": "low",
            "style": "vivid",
            "user": "u1",
            "safety_identifier": "s",
        },
    )
    assert response.status_code == 200, response.text


def test_disconnect_frees_the_model(server: Any) -> None:
    # States, not seconds: 990 steps take minutes; the worker must stop at the
    # next step once the client is gone (the cancel is acknowledged, nothing
    # in flight) without being killed and replaced (same pid, no restart).
    before = server.health()["models"]["tiny-sd"]
    with pytest.raises(httpx.TimeoutException):
        post(server, {"prompt": "a slow one", "size": "256x256", "num_inference_steps": 990}, timeout=2)
    after = server.wait_for(
        lambda h: h["models"]["tiny-sd"]["inflight"] == 0 and h["models"]["tiny-sd"]["stopping"] == 0,
        60,
        "the cancelled generation to stop",
    )["models"]["tiny-sd"]
    assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"], after
    response = post(server, {"prompt": "the next one", "num_inference_steps": 2}, timeout=60)
    assert response.status_code == 200, response.text
    assert server.health()["models"]["tiny-sd"]["status"] == "loaded"
    assert "Traceback" not in server.log(), server.log()
