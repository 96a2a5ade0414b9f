"""Request fields → backend-neutral sampling and constraints, shared by the
chat and legacy completion surfaces."""

from __future__ import annotations

import re
from typing import Any

from modelyard.adapters.base import Constraint, Sampling
from modelyard.router.errors import invalid_request
from modelyard.schemas import openai as oa

# A token id in ASCII digits: str.isdigit() also takes "²", and int() of
# thousands of digits raises; no vocabulary has a billion tokens.
TOKEN_ID = re.compile(r"[0-9]{1,9}")


def logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (raw or {}).items():
        if not TOKEN_ID.fullmatch(key):
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise invalid_request(f"logit_bias keys must be token ids (non-negative integers); got {shown!r}.", param="logit_bias")
        out[int(key)] = value
    return out


def sampling_from(
    body: oa.ChatCompletionRequest | oa.CompletionRequest, *, max_tokens: int | None, logprobs: int | None
) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        repeat_penalty=body.repeat_penalty,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=logit_bias(body.logit_bias),
        seed=body.seed,
        stop=body.stop_list(),
        logprobs=logprobs,
        ignore_eos=bool(body.ignore_eos),
    )


def constraint_from(response_format: Any, grammar: str | None) -> Constraint | None:
    fmt = None if response_format is None or response_format.type == "text" else response_format
    if grammar is not None:
        if fmt is not None:
            raise invalid_request("Send either response_format or grammar, not both.", param="grammar")
        return Constraint(gbnf=grammar)
    if fmt is None:
        return None
    if isinstance(fmt, oa.ResponseFormatJSONObject):
        return Constraint(json_schema={"type": "object"})
    assert isinstance(fmt, oa.ResponseFormatJSONSchema)
    schema = fmt.json_schema.schema_
    if schema is None:
        raise invalid_request("response_format.json_schema.schema is required.", param="response_format.json_schema.schema")
    return Constraint(json_schema=schema)


def seed_for_choice(seed: int | None, index: int) -> int | None:
    """n choices from one seeded request: different, and each reproducible."""
    return None if seed is None else seed + index
