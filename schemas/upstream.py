"""`[models.options]` of `backend = "openai"`: a model served by upstream
OpenAI-compatible servers (vLLM, llama-server, another modelyard, a hosted
API). The router forwards to them itself (router/upstream_handle.py); no
worker process is started for such a model."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from modelyard.schemas.config import Duration
from pydantic import BaseModel, ConfigDict, Field, field_validator


class UpstreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstreams: list[str] = Field(
        min_length=1,
        description='Base URLs of the upstream servers, each ending in /v1 ("http://10.0.0.5:8000/v1"). '
        "Requests go to the healthy one with the fewest requests in flight.",
    )
    model: str | None = Field(default=None, description="The model name the upstreams know it by. Default: the entry's id.")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The name of an environment variable holding the upstreams' API key (never the key itself); "
        "sent as `Authorization: Bearer`. Default: no key.",
    )
    connect_timeout: Duration = Field(default=5.0, description="Time to connect to an upstream.")
    read_timeout: Duration = Field(
        default=120.0,
        description="Longest wait for an upstream's next bytes (its first byte included); past that the request fails with 504.",
    )
    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once on each upstream.")
    native_apis: list[Literal["responses", "messages"]] = Field(
        default_factory=list,
        description='The surfaces the upstreams serve themselves, forwarded as the client sent them: "responses" '
        "(POST /v1/responses, and reading, cancelling or deleting a response made that way) and \"messages\" "
        "(Anthropic's POST /v1/messages). The upstream then keeps Responses' stored state. Any surface not listed "
        "reaches the upstreams as chat completions.",
    )
    health_path: str = Field(
        default="/models",
        pattern=r"^/",
        description="The active health check: GET this path, relative to each upstream base URL; any answer below 500 "
        "is an upstream that is up.",
    )
    health_interval: Duration = Field(
        default=10.0,
        description="Time between active health checks. An upstream taken out by a failed request (a connection "
        "error, a 5xx) comes back when a check passes.",
    )

    @field_validator("upstreams")
    @classmethod
    def _base_urls(cls, value: list[str]) -> list[str]:
        out = []
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
            if parts.query or parts.fragment:
                raise ValueError(f"{url!r}: a base URL takes no query or fragment")
            out.append(url.rstrip("/"))
        if len(set(out)) != len(out):
            raise ValueError("an upstream is listed twice")
        return out
