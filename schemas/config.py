"""The schema of config.toml: the one place its keys, defaults and docs live.

The CLI flags of `modelyard serve`, the JSON Schema for editors
(`schemas/config.schema.json`) and the reference docs are all derived from
these models. Backend `options` are checked against each adapter's own
options model by `router/config.py`, which knows the adapters.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator, model_validator

Modality = Literal["chat", "embeddings", "image", "speech"]
MODALITIES: tuple[str, ...] = ("chat", "embeddings", "image", "speech")

# Model ids go into URLs (`/v1/models/{id}`) and metrics labels: keep them to
# a conservative character set. `/` is allowed because hub-style names
# ("org/model") are what users expect to type.
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$"


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class CorsConfig(StrictModel):
    allow_origins: list[str] = Field(
        default_factory=list,
        description='Origins allowed to call the API from a browser. [] sends no CORS headers at all; ["*"] allows any origin.',
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "DELETE", "OPTIONS"],
        description="Methods allowed in cross-origin requests.",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["authorization", "content-type", "x-api-key", "x-request-id"],
        description="Request headers allowed in cross-origin requests.",
    )
    allow_credentials: bool = Field(
        default=False,
        description='Allow cookies and credentials. Cannot be combined with allow_origins = ["*"].',
    )
    max_age: int = Field(default=600, ge=0, description="Seconds a browser may cache a preflight answer.")

    @model_validator(mode="after")
    def _credentials_need_explicit_origins(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError('allow_credentials = true cannot be combined with allow_origins = ["*"]; list the origins')
        return self


class ServerConfig(StrictModel):
    host: str = Field(default="0.0.0.0", description="Address to listen on. Needs a restart to change.")
    port: int = Field(default=1234, ge=1, le=65535, description="Port to listen on. Needs a restart to change.")
    ui: bool = Field(
        default=True,
        description="Serve the web UI at /ui. This version ships no UI yet, so /ui answers 404 either way.",
    )
    body_limit: ByteSize = Field(
        default=ByteSize(50 * 1024 * 1024),
        description='Largest request body accepted, in bytes or as a size string ("50MiB"); larger bodies get 413.',
    )
    cors: CorsConfig = Field(default_factory=CorsConfig, description="Cross-origin resource sharing.")

    @field_validator("body_limit")
    @classmethod
    def _positive(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    format: Literal["text", "json"] = Field(default="text", description="Log line format.")


class ApiKey(StrictModel):
    name: str = Field(min_length=1, description="A name for the key, used in logs (the key itself never is).")
    key: str = Field(min_length=8, description='The secret. Use "${VAR}" to read it from the environment.')
    models: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Model ids, aliases or globs ("minilm*") this key may use.',
    )

    def allows(self, names: list[str]) -> bool:
        """True if any of `names` (a model's id and aliases) matches a pattern."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.models for name in names)


class AuthConfig(StrictModel):
    keys: list[ApiKey] = Field(
        default_factory=list,
        description="API keys. With none, the API is open; with any, every /v1 route needs one.",
    )

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        names = [k.name for k in self.keys]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate key names: {sorted(dup)}")
        secrets = [k.key for k in self.keys]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two keys have the same secret")
        return self


class EmbeddingsSettings(StrictModel):
    """How an embeddings model takes requests (the [models.embeddings] table)."""

    max_inputs: int = Field(default=2048, ge=1, description="Most inputs in one request; more is a 400.")
    max_input_tokens: int | None = Field(
        default=None, ge=1, description="Most tokens in one input (default: the model's own limit); more is a 400 unless truncate."
    )
    truncate: bool = Field(default=False, description="Cut inputs over the token limit instead of refusing them.")
    matryoshka: bool = Field(
        default=False,
        description="The model was trained for shorter vectors: `dimensions` truncates and re-normalises. Otherwise `dimensions` is a 400.",
    )
    coalesce: bool = Field(default=True, description="Gather concurrent requests into one backend batch.")
    batch_size: int = Field(default=64, ge=1, description="Most inputs in one coalesced backend batch.")
    batch_wait_ms: float = Field(
        default=2.0, ge=0, le=1000, description="How long a request may wait for others to join its batch."
    )


class ImageSettings(StrictModel):
    """How an image model takes requests (the [models.image] table)."""

    default_size: str = Field(default="512x512", pattern=r"^\d+x\d+$", description='The size for `size = "auto"`, as "WxH".')
    min_size: int = Field(default=64, ge=8, description="Smallest width or height accepted, in pixels.")
    max_size: int = Field(default=1024, ge=8, description="Largest width or height accepted, in pixels.")
    max_n: int = Field(default=10, ge=1, le=10, description="Most images per request.")
    max_prompt_chars: int = Field(default=4000, ge=1, description="Longest prompt accepted.")
    default_steps: int = Field(default=25, ge=1, description="Denoising steps when the request names no quality.")
    quality_steps: dict[str, int] = Field(
        default_factory=lambda: {"low": 10, "medium": 25, "high": 50, "standard": 25, "hd": 50},
        description="Steps for each OpenAI `quality` value.",
    )
    max_steps: int = Field(default=150, ge=1, description="Most steps a request's num_inference_steps may ask for.")
    url_ttl_seconds: int = Field(default=3600, ge=1, description='How long `response_format = "url"` images stay downloadable.')


class SpeechSettings(StrictModel):
    """How a speech model takes requests (the [models.speech] table)."""

    voices: dict[str, str] = Field(
        default_factory=dict,
        description='OpenAI voice names to the backend\'s speakers, e.g. { alloy = "p225", echo = "p226" }. Empty: the backend\'s own speaker names.',
    )
    default_voice: str | None = Field(
        default=None, description="The voice for requests that send none (the SDK requires one, but curl users may not)."
    )
    max_input_chars: int = Field(default=4096, ge=1, description="Longest input accepted.")


class ModelConfig(StrictModel):
    id: str = Field(pattern=MODEL_ID_PATTERN, description="The name clients send in the `model` field.")
    modality: Modality = Field(description="What the model does: chat, embeddings, image or speech.")
    backend: str = Field(description='The adapter that runs it, e.g. "llama-cpp".')
    source: str = Field(
        min_length=1,
        description=(
            "Where the weights are: a path (relative to the config file), "
            '"package:MODULE/path/in/package" (a file inside an installed distribution), '
            '"hf:org/repo[/file]" (downloaded from the Hugging Face hub), '
            'or "assemble:MODULE" (a package that rebuilds a model from parts; built once into the cache folder).'
        ),
    )
    aliases: list[str] = Field(default_factory=list, description="Other names that route to this model.")
    load: Literal["eager", "lazy"] = Field(
        default="eager", description="eager: load at start-up and on reload; lazy: on the first request."
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in the backend at once. Default: what the adapter supports (1 for llama-cpp).",
    )
    reasoning_tags: list[str] = Field(
        default_factory=lambda: ["<think>", "</think>"],
        description=(
            "Chat models: the tags around a reasoning model's thinking, which is returned as "
            "`reasoning_content` instead of `content`. [] turns this off."
        ),
    )
    embeddings: EmbeddingsSettings = Field(
        default_factory=EmbeddingsSettings, description="Embeddings models: request limits and batching."
    )
    image: ImageSettings = Field(default_factory=ImageSettings, description="Image models: sizes, steps, limits.")
    speech: SpeechSettings = Field(default_factory=SpeechSettings, description="Speech models: voices and limits.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Handed to the backend and validated by its adapter's options model."
    )

    @field_validator("reasoning_tags")
    @classmethod
    def _two_tags(cls, value: list[str]) -> list[str]:
        if value and (len(value) != 2 or not all(value)):
            raise ValueError('give two non-empty tags, e.g. ["<think>", "</think>"], or [] for none')
        return value

    @field_validator("aliases")
    @classmethod
    def _alias_pattern(cls, value: list[str]) -> list[str]:
        import re

        for alias in value:
            if not re.match(MODEL_ID_PATTERN, alias):
                raise ValueError(f"alias {alias!r} must match {MODEL_ID_PATTERN}")
        return value

    def names(self) -> list[str]:
        return [self.id, *self.aliases]


class StorageConfig(StrictModel):
    path: str | None = Field(
        default=None,
        description=(
            "SQLite file for stored Responses (POST /v1/responses with store). Relative to the config file; "
            "default: responses.sqlite3 in modelyard's cache folder ($MODELYARD_CACHE or ~/.cache/modelyard)."
        ),
    )


class Config(StrictModel):
    """The whole of config.toml."""

    default_model: str | None = Field(
        default=None,
        description='The model used when a request names none or says "default". Default: the first model of the endpoint\'s modality.',
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    models: list[ModelConfig] = Field(default_factory=list, description="The models to serve.")

    def cross_check(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks that span several keys, as (key path, reason) pairs.

        Kept out of a pydantic validator so that each error can name the key
        it is about (`models[2].aliases`), which a model-level validator
        cannot.
        """
        errors: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, str] = {}
        for index, model in enumerate(self.models):
            for position, name in enumerate(model.names()):
                loc: tuple[str | int, ...] = ("models", index, "id") if position == 0 else ("models", index, "aliases")
                if name in seen:
                    errors.append((loc, f"the name {name!r} is already used by model {seen[name]!r}"))
                else:
                    seen[name] = model.id
        for index, model in enumerate(self.models):
            for table in ("embeddings", "image", "speech"):
                if table in model.model_fields_set and model.modality != table:
                    errors.append((("models", index, table), f"only {table} models take this table, not {model.modality} ones"))
            if "reasoning_tags" in model.model_fields_set and model.modality != "chat":
                errors.append((("models", index, "reasoning_tags"), "only chat models take reasoning_tags"))
        if self.default_model is not None and self.default_model not in seen:
            errors.append((("default_model",), f"{self.default_model!r} is not the id or alias of any model"))
        return errors
