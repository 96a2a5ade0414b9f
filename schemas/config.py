"""The schema of config.toml: the one place its keys, defaults and docs live.

The CLI flags of `modelyard serve`, the JSON Schema for editors
(`schemas/config.schema.json`) and the reference docs are all derived from
these models. Backend `options` are checked against each adapter's own
options model by `router/config.py`, which knows the adapters.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, field_validator, model_validator

Modality = Literal["chat", "embeddings", "image", "speech", "transcription"]
MODALITIES: tuple[str, ...] = ("chat", "embeddings", "image", "speech", "transcription")

# Model ids go into URLs (`/v1/models/{id}`) and metrics labels: keep them to
# a conservative character set. `/` is allowed because hub-style names
# ("org/model") are what users expect to type.
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$"


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string like "90s", "10m", "1h", "500ms"."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if not match:
            raise ValueError('expected seconds or a duration like "30s", "10m", "1h"')
        return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

# Aliases may be globs (fnmatch, case-sensitive): `*`, `?` and `[...]`.
GLOB_CHARACTERS = "*?["
NAME_CHARACTERS = re.compile(r"[A-Za-z0-9._:/+-]+")


def is_glob(name: str) -> bool:
    return any(c in name for c in GLOB_CHARACTERS)


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable alias glob, or None. Outside the glob
    syntax it takes the characters of a model id; `[` needs its `]`."""
    literal = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "*?":
            i += 1
        elif ch == "[":
            start = i + 1 + (pattern[i + 1 : i + 2] == "!")
            end = pattern.find("]", start + 1)  # a "]" first in a class is one of its characters
            if end < 0:
                return "its '[' has no closing ']'"
            literal += pattern[start:end]
            i = end + 1
        elif ch == "]":
            return "it has a ']' with no '[' before it"
        else:
            literal += ch
            i += 1
    if literal and not NAME_CHARACTERS.fullmatch(literal):
        return "it may only hold the characters of a model id (A-Z a-z 0-9 . _ : / + -) and the glob characters * ? [ ]"
    return None


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
    ui: bool = Field(default=True, description="Serve the web UI at /ui (and redirect / to it). Needs a restart to change.")
    body_limit: ByteSize = Field(
        default=ByteSize(50 * 1024 * 1024),
        description='Largest request body accepted, in bytes or as a size string ("50MiB"); larger bodies get 413.',
    )
    cors: CorsConfig = Field(default_factory=CorsConfig, description="Cross-origin resource sharing.")
    max_loaded_models: int | None = Field(
        default=None,
        ge=1,
        description="Most models loaded at once in this machine's workers; loading one more unloads the least recently "
        "used idle one. Models served by upstreams or as Ray Serve deployments are not counted.",
    )
    memory_budget: ByteSize | None = Field(
        default=None,
        description='Memory the model workers may use together ("12GiB"), measured from their resident memory; '
        "loading a model that would pass it first unloads least recently used idle models.",
    )
    shutdown_grace: Duration = Field(
        default=30.0, description="On SIGTERM/SIGINT, how long in-flight requests may take to finish before workers are stopped."
    )
    header_timeout: Duration = Field(
        default=10.0,
        description="A connection must send a request's complete headers within this many seconds (counted from "
        "when it opens or its previous response ends); slower ones are closed. Needs a restart to change.",
    )
    keep_alive_timeout: Duration = Field(
        default=5.0, description="An idle keep-alive connection is closed after this many seconds. Needs a restart to change."
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description="Most client connections open at once; a connection past that gets 503 and is closed. "
        "Needs a restart to change.",
    )
    public_metrics: bool = Field(
        default=False,
        description="With API keys configured, let anyone read /metrics and the details of /health and /ready. "
        "Otherwise they need a key with admin or metrics = true.",
    )
    stream_keepalive: Duration = Field(
        default=10.0,
        description="While a stream waits for the model (a long prompt being evaluated), a keep-alive goes out "
        "every this many seconds: an SSE comment line (`: keep-alive`) on the OpenAI APIs, a `ping` event on "
        "/v1/messages. It keeps proxies and clients with idle timeouts from dropping the stream.",
    )
    fetch_remote_media: bool = Field(
        default=False,
        description="Fetch images that requests name by http(s) URL (a chat `image_url`, a Responses `input_image`, "
        "a Messages `url` image source). Off: such a request gets 400 and only data URLs, base64 and file ids are "
        "taken. On: each fetch goes through the web_search tool's address guard (private, loopback and link-local "
        "addresses are refused, also after a redirect), follows at most 5 redirects, and is held to "
        "remote_media_timeout and `[limits] max_image_bytes`.",
    )
    remote_media_timeout: Duration = Field(
        default=10.0, description="Time one fetch of a remote image (with its redirects) may take; then the request gets 400."
    )
    reload_settle: Duration = Field(
        default=0.5,
        description="A changed config file is applied only once its content has stayed the same this long "
        "(four times as long when it got smaller and lost tables, as a file cut off while being written does).",
    )

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
    admin: bool = Field(default=False, description="May load and unload models and reload the config (admin routes).")
    metrics: bool = Field(default=False, description="May read /metrics and the details of /health and /ready (admin keys may too).")
    rpm: int | None = Field(
        default=None, ge=1, description="Most requests per minute with this key (a token bucket); past that, 429 with Retry-After."
    )
    max_parallel: int | None = Field(
        default=None, ge=1, description="Most requests in progress at once with this key; past that, 429 with Retry-After."
    )
    agent: bool = Field(default=True, description="May use the hosted tools of [agent] (web search, code, shell); false: they are refused with a 403.")

    def allows(self, names: list[str]) -> bool:
        """True if any of `names` (a model's id and aliases) matches a pattern."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.models for name in names)


class AuthConfig(StrictModel):
    keys: list[ApiKey] = Field(
        default_factory=list,
        description="API keys. With none, the API is open; with any, every /v1 route needs one. "
        "A reload that would remove every key needs `keys = []` written in the file.",
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

    @field_validator("quality_steps")
    @classmethod
    def _positive_steps(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(name for name, steps in value.items() if steps < 1)
        if bad:
            raise ValueError(f"steps must be at least 1 (check {', '.join(bad)})")
        if "auto" in value:
            raise ValueError('"auto" always means default_steps; it cannot be mapped here')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImageSettings:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is larger than max_size ({self.max_size})")
        width, height = (int(part) for part in self.default_size.split("x"))
        for side in (width, height):
            if side % 8 or not self.min_size <= side <= self.max_size:
                raise ValueError(
                    f"default_size {self.default_size} must have sides that are multiples of 8 "
                    f"between min_size ({self.min_size}) and max_size ({self.max_size})"
                )
        over = sorted(name for name, steps in self.quality_steps.items() if steps > self.max_steps)
        if self.default_steps > self.max_steps:
            over.insert(0, "default_steps")
        if over:
            raise ValueError(f"{', '.join(over)} ask for more steps than max_steps ({self.max_steps})")
        return self


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

    @field_validator("voices")
    @classmethod
    def _named_voices(cls, value: dict[str, str]) -> dict[str, str]:
        for name, speaker in value.items():
            if not name.strip() or not speaker.strip():
                raise ValueError(f"voice names and speakers must not be empty (got {name!r} = {speaker!r})")
        return value

    @field_validator("default_voice")
    @classmethod
    def _non_empty_default(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty; leave it out for the model's first voice")
        return value


class ReplicaAutoscaling(StrictModel):
    """Ray Serve's autoscaling of one model's deployment."""

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (0 lets an idle model scale to none).")
    max_replicas: int = Field(default=2, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, description="Requests per replica Ray Serve aims for; more adds replicas, fewer removes them."
    )

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is more than max_replicas ({self.max_replicas})")
        return self


class ModelClusterSettings(StrictModel):
    """How a model runs as a Ray Serve deployment (read when [cluster] engine = "ray")."""

    num_cpus: float = Field(default=1.0, ge=0, description="CPUs Ray reserves for each replica.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs Ray reserves for each replica.")
    memory: ByteSize | None = Field(default=None, description="Memory Ray reserves for each replica (a scheduling figure, not a limit).")
    autoscaling: ReplicaAutoscaling | None = Field(
        default=None, description="Scale the replicas with the load; without it the model runs `replicas` replicas."
    )


class ModelConfig(StrictModel):
    id: str = Field(pattern=MODEL_ID_PATTERN, description="The name clients send in the `model` field.")
    modality: Modality = Field(description="What the model does: chat, embeddings, image, speech or transcription (speech to text).")
    backend: str = Field(description='The adapter that runs it, e.g. "llama-cpp".')
    source: str | None = Field(
        default=None,
        min_length=1,
        description=(
            'Required, except for backend = "openai" (which takes none). '
            "Where the weights are: a path (relative to the config file), "
            '"package:MODULE/path/in/package" (a file inside an installed distribution), '
            '"hf:org/repo[/file]" (downloaded from the Hugging Face hub), '
            '"assemble:MODULE" (a package that rebuilds a model from parts; built once into the cache folder), '
            'or "join:MODULE/folder+MODULE/folder" (a model folder split over packages: their files gathered, '
            "`NAME.partN` files joined into `NAME`; built once into the cache folder)."
        ),
    )
    aliases: list[str] = Field(
        default_factory=list,
        description=(
            'Other names that route to this model. An alias may be a glob (`*`, `?`, `[...]`, case-sensitive), '
            'e.g. ["claude-*", "gpt-5*"], so that the default model names of agents and SDKs reach a configured '
            "model. An exact id or alias always wins over a glob; a name that several globs match goes to the "
            "first of them in file order (models top to bottom, each model's aliases left to right). "
            "GET /v1/models lists model ids, not the names globs match."
        ),
    )
    load: Literal["eager", "lazy"] = Field(
        default="eager", description="eager: load at start-up and on reload; lazy: on the first request."
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in the backend at once. Default: what the adapter supports (llama-cpp chat: its "
        "options.slots; most others 1).",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes for this model, each with its own copy; requests go to the least busy one. "
        "More throughput on several cores, at the cost of memory.",
    )
    max_queue: int | None = Field(
        default=None, ge=0, description="Requests that may wait for a free slot; past that, 429 with Retry-After. Default: no limit."
    )
    request_timeout: Duration | None = Field(
        default=None, description='Longest a request may take, waiting included ("120s"); past that, 504 and the generation stops.'
    )
    idle_timeout: Duration | None = Field(
        default=None, description='Unload the model after this long without requests ("10m"). Default: never.'
    )
    memory_limit: Literal["auto", "none"] | ByteSize = Field(
        default="auto",
        description=(
            'Memory each worker process of this model may reserve ("2GiB"), set with setrlimit; a request that needs '
            "more fails with a 500 and at worst kills only this worker. llama-cpp gets an address-space limit "
            "(RLIMIT_AS), other backends a data limit (RLIMIT_DATA: heap and anonymous memory, not mapped files). "
            '"auto": for llama-cpp, the address space the loaded model uses + 1 GiB + the model file\'s size, set once '
            'it has loaded; no limit for the other backends. "none": no limit.'
        ),
    )
    heartbeat_timeout: Duration | None = Field(
        default=30.0,
        description="A worker that does not answer the router's heartbeat for this long is marked unhealthy, killed "
        "(failing its requests) and replaced.",
    )
    cancel_grace: Duration = Field(
        default=5.0,
        description="How long a worker may take to stop a request whose client left or whose request_timeout passed; "
        "past that it is killed (failing only its own requests) and replaced.",
    )
    max_output_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Chat models: the default and the ceiling of the tokens one answer may take. A request that sets no "
            "limit gets this one; a request that asks for more is capped to it, not refused (chat completions' "
            "max_tokens / max_completion_tokens, completions' max_tokens, Messages' max_tokens, Responses' "
            "max_output_tokens); an answer cut off there ends as any other that reached its limit (finish_reason "
            '"length", stop_reason "max_tokens", status "incomplete"). For agents that ask a small model for '
            "32,000 tokens. Default: no ceiling (a request without a limit may fill the context)."
        ),
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
    cluster: ModelClusterSettings = Field(
        default_factory=ModelClusterSettings, description='Ray Serve deployment settings, used when [cluster] engine = "ray".'
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Handed to the backend and validated by its adapter's options model."
    )

    @field_validator("memory_limit")
    @classmethod
    def _sane_memory_limit(cls, value: Any) -> Any:
        if not isinstance(value, str) and value < 64 * 1024 * 1024:
            raise ValueError('must be at least 64MiB (a worker cannot even start in less), "auto" or "none"')
        return value

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
            if is_glob(alias):
                problem = glob_problem(alias)
                if problem is not None:
                    raise ValueError(f"alias {alias!r} is not a valid glob: {problem}")
            elif not re.match(MODEL_ID_PATTERN, alias):
                raise ValueError(f"alias {alias!r} must match {MODEL_ID_PATTERN}")
        return value

    def names(self) -> list[str]:
        return [self.id, *self.aliases]


class StorageConfig(StrictModel):
    path: str | None = Field(
        default=None,
        description=(
            "SQLite file for stored Responses (POST /v1/responses with store). Relative to the config file; "
            "default: responses.sqlite3 in modelyard's cache folder ($MODELYARD_CACHE or ~/.cache/modelyard). "
            "The Files API keeps its metadata in the same database."
        ),
    )
    skills_dir: str | None = Field(
        default=None,
        description=(
            "Folder for the zips of uploaded skills (/v1/skills); their metadata is in the `path` database. "
            "Relative to the config file; default: `skills` beside the database file. Read at startup."
        ),
    )
    skill_max_bytes: ByteSize = Field(
        default=ByteSize(30 * 1024 * 1024),
        description="Largest skill upload (the zip, or all the files of a folder upload), in bytes or as a size string.",
    )
    skill_max_uncompressed_bytes: ByteSize = Field(
        default=ByteSize(100 * 1024 * 1024),
        description="Largest total size of a skill's files once unzipped (both the sizes the zip declares and the bytes "
        "really read are counted).",
    )
    skill_max_entries: int = Field(default=500, ge=1, description="Most files (zip entries) in one skill.")
    skill_max_compression_ratio: int = Field(
        default=100,
        ge=1,
        description="Largest ratio of a zip entry's size to its compressed size (entries over 1 MiB); a zip bomb is "
        "far over it.",
    )
    files_dir: str | None = Field(
        default=None,
        description=(
            "Folder of the files uploaded with POST /v1/files (and of generated images served by URL). "
            "Relative to the config file; default: a `files` folder beside the SQLite file of `path`."
        ),
    )
    max_file_bytes: ByteSize = Field(
        default=ByteSize(512 * 1024 * 1024),
        description="Largest file one upload to POST /v1/files may carry (413 above it), in bytes or as a size string. "
        "Uploads are not held to `[server] body_limit`.",
    )
    max_bytes_per_key: ByteSize = Field(
        default=ByteSize(10 * 1024 * 1024 * 1024),
        description="Total bytes of the files one API key (or, with keys off, everyone) may keep stored; "
        "an upload that would go over is refused (413) and nothing of it is kept.",
    )
    min_file_ttl_seconds: int = Field(
        default=3600,
        ge=1,
        description="Smallest `expires_after[seconds]` (OpenAI) or `expires_in_seconds` (Anthropic) an upload "
        "may ask for; both APIs document 3600. Lower it to test expiry without waiting an hour.",
    )
    default_file_ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Expiry of uploads that do not ask for one; default: kept until deleted.",
    )

    @field_validator("skill_max_bytes", "skill_max_uncompressed_bytes", "max_file_bytes", "max_bytes_per_key")
    @classmethod
    def _positive(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


class LimitsConfig(StrictModel):
    """Bounds every request is checked against in the router, before a
    grammar is built, a prompt is tokenized, audio is decoded or a worker
    sees the request. Each chat default was measured with llama-cpp-python
    on SmolLM2-135M, one thread (bench/limits_cost.py; the numbers are in
    docs/config.md)."""

    max_repeat: int = Field(
        default=1000,
        ge=1,
        description="Largest maxLength, minLength, maxItems, minItems (and min/maxProperties) in a structured-output or "
        "tool schema, and largest {m,n} bound in a `grammar` or a schema's `pattern`. The JSON Schema compiler writes a "
        "bound of n as n nested grammar groups: llama.cpp refuses more than 1,000 and crashes at about 20,000; 10^9 "
        "used 21 GB.",
    )
    max_schema_depth: int = Field(
        default=64,
        ge=1,
        description="Deepest nesting of objects and arrays in a JSON Schema document (a subschema under properties is "
        "two levels). Deeper schemas exhaust Python's recursion in the grammar compiler and on the way to the worker "
        "(300 levels did).",
    )
    max_schema_nodes: int = Field(
        default=2000,
        ge=1,
        description="Most (sub)schemas in one request: the structured-output schema, or all tools' parameters together "
        "(they become one grammar). Compile time grows with it (40 tools of 15 subschemas: 30 ms).",
    )
    max_object_properties: int = Field(
        default=200,
        ge=1,
        description="Most properties in one object schema. The compiler's rules for optional properties grow with the "
        "square of their number (200: 0.15 s, 600: 1.4 s, about 1,000: a recursion error).",
    )
    max_enum_values: int = Field(
        default=500,
        ge=1,
        description="Most values in one enum. Each value is a grammar alternative the sampler checks at every token "
        "(500 values: about 0.25 s a token; 100,000 took 113 s). A schema's enum and const values together are also "
        "held to max_grammar_bytes.",
    )
    max_grammar_bytes: int = Field(
        default=32 * 1024,
        ge=1,
        description="Largest `grammar` (GBNF) in UTF-8 bytes. Sampling time grows with the alternatives a grammar keeps "
        "open (64 KiB of alternatives: 1.7 s a token; a 1.6 MB grammar kept a worker busy 362 s).",
    )
    max_grammar_rules: int = Field(
        default=1000,
        ge=1,
        description="Most rules (`name ::= ...`) in a `grammar` (1,000 rules: 16 ms to build).",
    )
    max_grammar_depth: int = Field(
        default=1000,
        ge=1,
        description="Deepest nesting of parentheses in a `grammar`; llama.cpp's grammar parser recurses once per level "
        "(10,000 levels: 25 ms; 20,000 crashed the worker with SIGSEGV).",
    )
    max_messages: int = Field(
        default=2000,
        ge=1,
        description="Most messages in one request (chat messages, Anthropic messages, Responses input items with the "
        "history of previous_response_id, completion prompts), checked before the chat template is rendered "
        "(2,000 messages: 1.2 s; 10,000: 15 s; it grows faster than the count).",
    )
    max_prompt_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="Most characters of text in one request's prompt (all messages, instructions and tool "
        "definitions; a token id counts as one), checked before tokenization (1,000,000 characters: 3.5 s).",
    )
    max_file_chars: int = Field(
        default=50_000,
        ge=0,
        description="Most characters of one attached file (a chat `file` part, a Responses `input_file`, a Messages "
        "`document`) shown to the model: text, JSON, CSV, Markdown, source code, and the text of a PDF. A longer file "
        "is cut here and its preview says it was truncated; binary files reach the model as their name, type and size only.",
    )
    max_file_chars_per_request: int = Field(
        default=200_000,
        ge=0,
        description="Most characters of all attached files of one request together (previous turns' files included). "
        "Files past it are shown by name only, with a note that they were left out.",
    )
    max_audio_bytes: ByteSize = Field(
        default=ByteSize(25 * 1024 * 1024),
        description="Largest audio file one POST /v1/audio/transcriptions or /v1/audio/translations upload may carry "
        "(413 above it; OpenAI's limit is 25 MB), in bytes or as a size string. These uploads are held to this, not to "
        "`[server] body_limit`.",
    )
    max_audio_seconds: Duration = Field(
        default=1500.0,
        description="Longest audio a transcription or translation takes (400 above it), checked while the file is "
        "decoded, before the model sees it: a small compressed file can hold hours (25 MB of 8 kbit/s Opus is about "
        "7 hours, 1.6 GB once decoded). Whisper base (int8) on one CPU thread decodes about 12 seconds of speech a second (bench/transcription_speed.py: 25 s in 2 s; a 6 s sentence, padded to Whisper's 30 s window, in 0.9 s).",
    )

    @field_validator("max_audio_bytes")
    @classmethod
    def _positive_audio_bytes(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="Most pixels (width x height) of one image input, read from the image's header before it is "
        "decoded: a decompression bomb (a small file that claims 30000x30000) is refused with 400, not expanded. "
        "Decoding 50 million pixels takes about 200 MB. Images with an edge over 2048 pixels are then scaled down to "
        "2048 on their longest edge.",
    )
    max_image_bytes: ByteSize = Field(
        default=ByteSize(20 * 1024 * 1024),
        description="Largest image input (its encoded bytes: a data URL's or base64 source's data, a stored file, a "
        "fetched URL), in bytes or as a size string.",
    )
    max_images_per_request: int = Field(
        default=16,
        ge=0,
        description="Most image inputs in one request (previous turns' images included); each is decoded and sent to "
        "the model.",
    )

    @field_validator("max_image_bytes")
    @classmethod
    def _positive_bytes(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


class SandboxConfig(StrictModel):
    """How the agentic runtime runs model-written code and shell commands.
    See docs/agent.md for what is isolated and what is not."""

    mode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="`on`: run code only inside bubblewrap (`bwrap`, Debian package `bubblewrap`): no network, no "
        "view of the host's files but /usr and the run's working folder; startup fails, naming what is missing, if "
        "bwrap does not work. `auto`: use bubblewrap if it works, else log a WARNING and run with the resource limits "
        "and a clean environment only. `off`: never use bubblewrap (the limits below still apply).",
    )
    cpu_seconds: int = Field(default=10, ge=1, description="CPU time one process of a run may use (RLIMIT_CPU); each "
                             "process a run starts has its own allowance.")
    memory: ByteSize = Field(default=ByteSize(512 * 1024 * 1024),
                             description="Address space one process of a run may map (RLIMIT_AS), in bytes or as a size string.")
    max_processes: int = Field(
        default=64,
        ge=1,
        description="Most processes a run may have (RLIMIT_NPROC). The kernel counts every process of the host user "
        "the code runs as: with the server as root, each session runs as a host user of its own (uid 2000000000 + n), "
        "so one session's processes do not count against another's; otherwise every run shares the server user's count.",
    )
    max_open_files: int = Field(default=256, ge=16, description="Most open file descriptors per process (RLIMIT_NOFILE).")
    max_file_bytes: ByteSize = Field(default=ByteSize(64 * 1024 * 1024),
                                     description="Largest file a run may write (RLIMIT_FSIZE), in bytes or as a size string.")
    timeout: Duration = Field(default=30.0, description="Wall-clock time of one run; then its whole process group is killed.")
    max_output_bytes: ByteSize = Field(default=ByteSize(1024 * 1024),
                                       description="Most bytes kept of a run's stdout, and of its stderr; the rest is "
                                       "read and dropped, and the result says it was truncated.")
    seccomp: bool = Field(
        default=True,
        description="Under bubblewrap, load a seccomp filter before the code runs (router/seccomp.py, x86-64): new "
        "namespaces, mounts, ptrace, kernel modules, bpf, perf events, userfaultfd, the keyring and other kernel "
        "surface code has no use for answer EPERM.",
    )
    network: bool = Field(
        default=False,
        description="Give runs the host's network (bubblewrap's --share-net). Code then reaches everything the "
        "server can: localhost services (this server included), the LAN, cloud metadata endpoints. Off by default.",
    )

    @field_validator("memory", "max_file_bytes", "max_output_bytes")
    @classmethod
    def _positive(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


AGENT_TOOLS = ("web_search", "code_interpreter", "shell")
AgentTool = Literal["web_search", "code_interpreter", "shell"]


class SearchConfig(StrictModel):
    """Where the `web_search` tool looks. See docs/agent.md."""

    provider: Literal["local", "searxng", "brave"] | None = Field(
        default=None,
        description="`local`: a folder of documents (Markdown, text, HTML) indexed with SQLite FTS5 at start-up and "
        "when they change (offline). `searxng`: a SearXNG instance's JSON API at `url`. `brave`: the Brave Search API, "
        "its key read from the environment variable `api_key_env`.",
    )
    folder: str | None = Field(default=None, description="`local`: the folder of documents, relative to the config file.")
    url: str | None = Field(default=None, description="`searxng`: the instance's base URL (its `/search?format=json` is asked).")
    api_key_env: str = Field(default="BRAVE_API_KEY", description="`brave`: the environment variable holding the API key (never the key itself).")
    max_results: int = Field(default=5, ge=1, le=20, description="Most results one search returns to the model.")
    timeout: Duration = Field(default=10.0, description="Time one search (and each page fetch) may take.")
    fetch_pages: int = Field(
        default=0, ge=0, le=5,
        description="How many of a web search's top results are fetched and reduced to text for the model (0: the "
        "provider's snippets only).",
    )
    fetch_max_bytes: ByteSize = Field(default=ByteSize(2 * 1024 * 1024), description="Largest page a fetch reads; the rest is dropped.")
    max_page_chars: int = Field(default=4000, ge=100, description="Most characters of one result's text shown to the model.")
    allow_private_addresses: bool = Field(
        default=False,
        description="Let page fetches reach loopback, private, link-local and other non-public addresses (off: no "
        "server-side request forgery into the host's network). The SearXNG `url` itself is always allowed.",
    )


class AgentConfig(StrictModel):
    """The agentic runtime: hosted tools (web search, code interpreter, shell) that the server runs for the model,
    feeding the results back until it answers. See docs/agent.md."""

    tools: list[AgentTool] = Field(
        default_factory=list,
        description="The hosted tools requests may use: `web_search`, `code_interpreter`, `shell` (none: every hosted "
        "tool is refused). A request can use fewer, never more; `serve --agent` turns on all three (web_search only "
        "with a search provider).",
    )
    default_tool_rounds: int = Field(default=4, ge=1, description="Tool rounds of a request that does not say `max_tool_rounds`.")
    max_tool_rounds: int = Field(
        default=8, ge=1, description="Most tool rounds a request may ask for; after the last, the model must answer without tools."
    )
    max_tool_output_chars: int = Field(
        default=8000, ge=100, description="Most characters of one tool call's result shown to the model (the rest is cut, and it says so)."
    )
    session_idle: Duration = Field(
        default=1800.0, description="A session (`session_id`: its working folder, Python state and history) expires this long after its last use."
    )
    max_sessions: int = Field(default=64, ge=1, description="Most live sessions in all; past it, the key holding the most sessions loses its least recently used idle one.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="The `web_search` tool's provider.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig,
                                   description="Limits and isolation of model-written code and shell commands.")

    @model_validator(mode="after")
    def _rounds(self) -> AgentConfig:
        if self.default_tool_rounds > self.max_tool_rounds:
            raise ValueError(f"default_tool_rounds ({self.default_tool_rounds}) is more than max_tool_rounds ({self.max_tool_rounds})")
        if len(set(self.tools)) != len(self.tools):
            raise ValueError("tools lists a tool twice")
        return self

    def cross_check(self) -> list[tuple[tuple[str | int, ...], str]]:
        errors: list[tuple[tuple[str | int, ...], str]] = []
        search = self.search
        if "web_search" in self.tools and search.provider is None:
            errors.append((("agent", "search", "provider"), "web_search is in [agent] tools but no search provider is set"))
        if search.provider == "local" and not search.folder:
            errors.append((("agent", "search", "folder"), 'provider = "local" needs a folder of documents'))
        if search.provider == "searxng" and not search.url:
            errors.append((("agent", "search", "url"), 'provider = "searxng" needs the instance\'s url'))
        return errors


class ClusterConfig(StrictModel):
    """Where local models run: worker processes on this machine, or Ray Serve deployments."""

    engine: Literal["local", "ray"] = Field(
        default="local",
        description='local: each model runs in worker processes here; ray: each local model is a Ray Serve deployment '
        "on the cluster at `address` (needs `pip install 'modelyard[ray]'`). Models of backend \"openai\" stay here.",
    )
    address: str = Field(
        default="auto", description='The Ray cluster: "auto" (the one `ray start` runs on this machine) or a "ray://host:port" URL.'
    )
    namespace: str = Field(default="modelyard", min_length=1, description="The Ray namespace this server's driver joins.")
    app_prefix: str = Field(
        default="modelyard",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Prefix of the Serve application names (`<prefix>-<model id>-<hash>`), so that servers sharing a cluster keep apart.",
    )
    deploy_timeout: Duration = Field(
        default=600.0, description="Longest a deployment may take to become ready (a replica Ray cannot place waits forever)."
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
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="Bounds on schemas, grammars and prompts, checked before any model work."
    )
    agent: AgentConfig = Field(default_factory=AgentConfig, description="The agentic runtime: hosted tools the server runs for the model.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Where local models run: here, or on a Ray cluster.")
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
            for key in ("reasoning_tags", "max_output_tokens"):
                if key in model.model_fields_set and model.modality != "chat":
                    errors.append((("models", index, key), f"only chat models take {key}"))
        if self.default_model is not None and is_glob(self.default_model):
            errors.append((("default_model",), f"{self.default_model!r} is a glob; name a model's id or an exact alias"))
        elif self.default_model is not None and self.default_model not in seen:
            errors.append((("default_model",), f"{self.default_model!r} is not the id or alias of any model"))
        return errors + self.agent.cross_check()
