"""POST /v1/embeddings, with request coalescing (router/coalescer.py).

Concurrent requests to one embeddings model are gathered into one backend
batch and split back per request. The adapter reports a bad input per input, so one request's bad
input fails only that request. Token arrays sent to a model that takes only text are decoded as
OpenAI's cl100k_base ids (router/openai_tokens.py).
"""

from __future__ import annotations

import array
import asyncio
import base64
import math
import sys
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import EmbedRequest
from modelyard.router import openai_tokens
from modelyard.router.coalescer import embed_once
from modelyard.router.deps import get_yard, resolve_model
from modelyard.router.errors import invalid_request
from modelyard.router.limits import reject_lone_surrogates
from modelyard.router.streaming import ClientGone, until_disconnected
from modelyard.schemas import openai as oa

router = APIRouter()
ENDPOINT = "/v1/embeddings"


def inputs_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


def as_text(inputs: list[str | list[int]]) -> list[str | list[int]]:
    """Token arrays read as OpenAI's cl100k_base ids (what OpenAI's embeddings
    models and so LangChain's OpenAIEmbeddings use), for a model that takes
    text. Blocking the first time (the encoding loads): run it in a thread."""
    try:
        tokens = openai_tokens.decoder()
    except openai_tokens.EncodingUnavailable as exc:
        raise invalid_request(
            f"This model takes text, and token arrays are read as OpenAI's cl100k_base token ids, but {exc}. "
            "Or send the input as text.",
            param="input",
            code="encoding_unavailable",
        ) from None
    out: list[str | list[int]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(tokens.decode(item))
        except KeyError as missing:
            raise invalid_request(
                f"input[{index}] has the token id {missing.args[0]}, which is not in cl100k_base (this model takes "
                "text: token arrays are read as OpenAI's cl100k_base ids).",
                param="input",
            ) from None
    return out


def floats(vector: bytes) -> array.array[float]:
    """Little-endian float32 bytes (as workers send them) as floats, on any machine."""
    values = array.array("f")
    values.frombytes(vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def shortened(vector: bytes, dimensions: int) -> bytes:
    """The first `dimensions` values, re-normalised (Matryoshka truncation)."""
    values = floats(vector[: dimensions * 4])
    norm = math.sqrt(sum(v * v for v in values))
    if norm:
        values = array.array("f", (v / norm for v in values))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def wire_vector(vector: bytes, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector).decode("ascii")
    return floats(vector).tolist()


@router.post(ENDPOINT, response_model=oa.EmbeddingList, responses={400: {"model": oa.ErrorResponse}})
async def create_embeddings(body: oa.EmbeddingRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "embeddings", ENDPOINT)
    settings = entry.model.embeddings
    reject_lone_surrogates(body)
    inputs = inputs_of(body.input)
    if not inputs:
        raise invalid_request("input must not be empty.", param="input")
    for index, item in enumerate(inputs):
        if item == "" or item == []:
            raise invalid_request(f"input[{index}] is empty.", param="input")
    if len(inputs) > settings.max_inputs:
        raise invalid_request(f"This model takes at most {settings.max_inputs} inputs per request; got {len(inputs)}.", param="input")
    if body.dimensions is not None and not settings.matryoshka:
        raise invalid_request(
            f"The model '{entry.id}' cannot shorten its vectors: 'dimensions' is only for models configured with "
            "embeddings.matryoshka = true.",
            param="dimensions",
        )
    try:
        if any(isinstance(item, list) for item in inputs):
            # Whether the model takes token ids is known once it has loaded.
            await until_disconnected(request, entry.load())
            if not entry.takes_token_ids():
                inputs = await until_disconnected(request, asyncio.to_thread(as_text, inputs))
        if settings.coalesce:
            result = await until_disconnected(request, get_yard(request).coalescer(entry).embed(inputs))
        else:
            result = await until_disconnected(request, embed_once(entry, EmbedRequest(inputs, settings.max_input_tokens, settings.truncate)))
    except ClientGone:
        return Response(status_code=499)
    errors = [e for e in result.errors if e]
    if errors:
        raise invalid_request(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more)", param="input")
    vectors: list[bytes] = [v for v in result.vectors if v is not None]
    native = len(vectors[0]) // 4
    if body.dimensions is not None:
        if body.dimensions > native:
            raise invalid_request(f"dimensions must be at most {native} for this model.", param="dimensions")
        vectors = [shortened(v, body.dimensions) for v in vectors]
    tokens = sum(result.token_counts)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": wire_vector(v, body.encoding_format or "float")} for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {"object": "list", "data": data, "model": entry.id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )
