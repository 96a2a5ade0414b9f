"""The small interfaces every backend implements, one per modality, and the
typed errors adapters raise.

Adapters run inside a worker process (see `adapters/worker.py`); their
methods are plain blocking calls. Streaming methods are generators that the
worker pulls one item at a time, checking for cancellation between items.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class AdapterError(Exception):
    """Base of errors an adapter raises on purpose. `kind` picks the HTTP status."""

    kind: ClassVar[str] = "backend_error"


class InvalidRequestError(AdapterError):
    """The request cannot be served by this model as asked (answered with 400)."""

    kind = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def prompt_too_long(tokens: int, n_ctx: int, param: str | None, attached_files: list[str] | None = None) -> InvalidRequestError:
    """The error for a prompt that does not fit the model's context, naming
    the files attached to the request (ChatRequest.attached_files), whose text
    is part of the prompt."""
    message = f"the prompt takes {tokens} tokens; this model's context holds {n_ctx}"
    if attached_files:
        names = ", ".join(f"'{name}'" for name in attached_files)
        message += (
            f". The prompt includes the attached file{'s' if len(attached_files) > 1 else ''} {names}: "
            "attach less of them, or lower the server's [limits] max_file_chars"
        )
    return InvalidRequestError(message, param)


class ModelLoadError(AdapterError):
    """The model could not be loaded: missing file, bad format, missing extra."""

    kind = "load_failed"


class BackendError(AdapterError):
    """The backend failed while serving a request."""

    kind = "backend_error"


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Sampling:
    """How to sample. None means the adapter's default (OpenAI's where it has one)."""

    max_tokens: int | None = None
    temperature: float | None = None  # None → 1.0; 0 → greedy
    top_p: float | None = None  # None → 1.0
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id → bias
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # None: no logprobs. N ≥ 0: each token's logprob and its N most likely alternatives.
    logprobs: int | None = None
    # Never end at the model's end-of-generation token(s): run on until max_tokens,
    # a stop string or a full context. Not while a grammar constrains the output.
    ignore_eos: bool = False


@dataclass
class Constraint:
    """Output must follow this. Adapters that cannot constrain raise InvalidRequestError."""

    json_schema: dict[str, Any] | None = None  # output is JSON valid against it
    gbnf: str | None = None  # a llama.cpp grammar


# Tool calls travel from adapters to the router as text in the Hermes format
# (what Qwen, Hermes and many other templates use), which the router parses:
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"


@dataclass
class ToolCalling:
    """OpenAI function tools and how the model must use them.

    mode "auto": the model may answer or call; "required": it must call one
    of `tools`; "named": it must call `name`. An adapter enforces "required"
    and "named" by constraining generation, and constrains every call's JSON
    once the model opens one; `strict` functions get their parameters schema.
    """

    tools: list[dict[str, Any]]  # [{"type": "function", "function": {name, description, parameters, strict}}]
    mode: str = "auto"
    name: str | None = None
    parallel: bool = True
    # Functions whose calls the grammar lets take any JSON object as arguments:
    # non-strict tools whose parameters are over the server's [limits].
    free_arguments: list[str] = field(default_factory=list)


@dataclass
class Reasoning:
    """How a model with reasoning tags may think (Anthropic's `thinking`).

    `enabled` goes to the chat template as `enable_thinking` (Qwen3's and
    others' switch; templates without it ignore it). Once the model has
    written `budget_tokens` tokens inside its tags, the adapter writes the
    end tag for it and the model goes on with its answer; 0 closes the tag
    as soon as it opens.
    """

    tags: tuple[str, str]  # e.g. ("<think>", "</think>")
    enabled: bool = True
    budget_tokens: int | None = None  # None: no limit


@dataclass
class ImageInput:
    """An image in a chat message. The router has fetched it, decoded it with
    Pillow under its pixel cap and re-encoded it as PNG, which every engine
    reads; the engine scales it to its own input size."""

    png: bytes
    width: int
    height: int
    detail: str = "auto"  # OpenAI's "low" | "high" | "auto": a hint an engine of one resolution ignores


@dataclass
class ChatRequest:
    """A chat request in backend-neutral terms (already validated by the router).

    A message's "content" is a string, or, when it holds images, a list of
    parts in order: {"type": "text", "text": str} and {"type": "image",
    "image": ImageInput}. Only an adapter whose takes_images() is true is
    sent image parts; the router refuses them for any other model."""

    messages: list[dict[str, Any]]
    sampling: Sampling = field(default_factory=Sampling)
    constraint: Constraint | None = None
    tools: ToolCalling | None = None
    reasoning: Reasoning | None = None  # None: the model reasons as its template and weights make it
    # The names of the files attached to the request (their text is in `messages`), for errors.
    attached_files: list[str] = field(default_factory=list)


@dataclass
class CompletionRequest:
    """A legacy completion: raw prompt text or token ids, no template."""

    prompt: str | list[int]
    sampling: Sampling = field(default_factory=Sampling)
    echo: bool = False
    suffix: str | None = None
    constraint: Constraint | None = None


@dataclass
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[TopLogprob] = field(default_factory=list)


@dataclass
class TextDelta:
    text: str
    # One entry per token behind `text`, when logprobs were asked for.
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Finished:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    stop_sequence: str | None = None  # the request's stop string that ended the text, if one did
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (as in PromptTokens)


@dataclass
class PromptTokens:
    """A chat or completion call's first event: the prompt is tokenized and
    checked, and its evaluation starts now. A stream can start, naming the
    prompt's size (Anthropic's message_start reports it), before a long
    prompt has been processed."""

    count: int
    cached: int = 0  # of those, how many were reused from the previous request's KV cache


ChatEvent = PromptTokens | TextDelta | Finished


@dataclass
class EmbedRequest:
    """Texts, or token arrays where the backend can take tokens."""

    inputs: list[str | list[int]]
    max_tokens: int | None = None  # per input; None: the model's own limit
    truncate: bool = False  # cut inputs over the limit instead of refusing them


@dataclass
class Embeddings:
    """One entry per input, in input order. An input that cannot be embedded
    has no vector and an error, so that one bad input in a coalesced batch
    fails only the request it came from."""

    vectors: list[bytes | None]  # little-endian float32
    token_counts: list[int]
    errors: list[str | None]


@dataclass
class ImageRequest:
    prompt: str
    width: int
    height: int
    n: int = 1
    steps: int | None = None  # None: the model's default
    guidance: float | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    output_format: str = "png"  # png | jpeg | webp
    output_compression: int | None = None  # 0-100 for jpeg/webp


@dataclass
class ImageProgress:
    """Sent after each denoising step, so a long generation shows progress
    and a disconnected client stops it at the next step."""

    image: int  # which of the n images
    step: int
    steps: int


@dataclass
class GeneratedImage:
    data: bytes  # encoded in the request's output_format
    width: int
    height: int
    seed: int


@dataclass
class SpeechRequest:
    text: str
    voice: str  # the backend's own speaker name or id (the router maps OpenAI voice names)
    response_format: str = "mp3"  # mp3 | opus | aac | flac | wav | pcm
    speed: float = 1.0
    instructions: str | None = None
    stream: bool = False  # send audio as it is made


@dataclass
class AudioChunk:
    """Encoded audio in the request's format; a stream's chunks concatenated
    make the whole file."""

    data: bytes
    sample_rate: int


TRANSCRIPTION_SAMPLE_RATE = 16000  # what the router decodes uploads to: Whisper's rate


@dataclass
class TranscriptionRequest:
    """Speech to text. The router has decoded the upload (any container and
    codec PyAV reads), mixed it to mono and resampled it, and held it to the
    [limits] size and duration before sending it."""

    samples: bytes  # little-endian float32, mono, TRANSCRIPTION_SAMPLE_RATE Hz, in [-1, 1]
    task: str = "transcribe"  # "transcribe" (text in the spoken language) | "translate" (English text)
    language: str | None = None  # ISO-639-1 ("en"); None: detected from the audio
    prompt: str | None = None  # text the model continues from: spelling, style, earlier context
    temperature: float = 0.0  # 0: greedy, raised on a failed segment as Whisper does
    word_timestamps: bool = False
    # The answer shows segment times (srt, vtt, verbose_json); False: its text
    # alone is shown, which lets an upstream be asked for plain json.
    timestamps: bool = True


@dataclass
class TranscriptionInfo:
    """A transcription's first event: what the model found before the first
    segment (the language, detected from the first 30 s unless the request named it)."""

    language: str  # ISO-639-1
    duration: float  # seconds of audio


@dataclass
class TranscribedWord:
    word: str  # with its leading space, as the segment's text has it
    start: float
    end: float
    probability: float


@dataclass
class TranscribedSegment:
    """One segment of the transcript, sent as soon as it is decoded."""

    id: int
    seek: int  # the frame offset of the 30 s window it came from
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[TranscribedWord] | None = None  # with TranscriptionRequest.word_timestamps


TranscriptionEvent = TranscriptionInfo | TranscribedSegment


class Adapter(ABC):
    """What every adapter has: its options model, its concurrency and close()."""

    #: The pydantic model that validates `[models.options]` for this backend.
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: How many requests the loaded model can serve at once (an instance may
    #: set its own from its options, as llama-cpp's `slots`).
    max_concurrency: int = 1

    @abstractmethod
    def __init__(self, path: Path, options: BaseModel) -> None: ...

    def stats(self) -> dict[str, int]:
        """The engine's state for /health and /metrics (slots in use, KV cells...),
        read from the worker's reader thread while calls run; {} when there is none."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model. The worker process exits afterwards anyway."""


class ChatAdapter(Adapter):
    """Text generation: chat (through the model's template) and raw completions."""

    @abstractmethod
    def chat(self, request: ChatRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        """Yield PromptTokens once the request is checked (errors found before it
        still get their status code; the first token may take long after it),
        then text deltas, then exactly one Finished. Stop early when `cancelled` is set."""

    @abstractmethod
    def complete(self, request: CompletionRequest, cancelled: threading.Event) -> Iterator[ChatEvent]:
        """Like chat(), for a raw prompt."""

    def count_tokens(self, request: ChatRequest, cancelled: threading.Event) -> int:
        """Tokens the rendered prompt of a chat request takes."""
        raise InvalidRequestError("this backend cannot count tokens")

    def takes_images(self) -> bool:
        """True if chat messages may hold image parts (ImageInput) for this
        model, e.g. a llama-cpp model loaded with its multimodal projector.
        Reported once, when the model loads."""
        return False

    @classmethod
    def declares_images(cls, options: BaseModel) -> bool:
        """What takes_images() will say, judged from the options alone, for
        /v1/models before the model has loaded (read in the router: no
        backend library may be touched here)."""
        return False


class EmbeddingsAdapter(Adapter):
    def takes_token_ids(self) -> bool:
        """True if `embed` takes token arrays in the model's own vocabulary
        (reported once, when the model loads). A model that takes only text
        gets token arrays decoded by the router, as OpenAI's (cl100k_base) ids."""
        return False

    @abstractmethod
    def embed(self, request: EmbedRequest, cancelled: threading.Event) -> Embeddings:
        """One vector per input, in input order."""


class ImageAdapter(Adapter):
    @abstractmethod
    def generate(self, request: ImageRequest, cancelled: threading.Event) -> Iterator[ImageProgress | GeneratedImage]:
        """Yield progress and, in order, n images. Stop at the next step when `cancelled` is set."""


class SpeechAdapter(Adapter):
    def speakers(self) -> list[str]:
        """The backend's speaker names (reported once, when the model loads),
        for GET /v1/audio/voices and voice checks. [] if it does not list them."""
        return []

    @abstractmethod
    def synthesize(self, request: SpeechRequest, cancelled: threading.Event) -> Iterator[AudioChunk]:
        """Yield encoded audio. With request.stream, yield pieces as soon as they are made."""


class TranscriptionAdapter(Adapter):
    """Speech to text (Whisper and kin)."""

    @abstractmethod
    def transcribe(self, request: TranscriptionRequest, cancelled: threading.Event) -> Iterator[TranscriptionEvent]:
        """Yield one TranscriptionInfo, then the segments in order as each is
        decoded. The worker stops pulling once `cancelled` is set, so a
        disconnected client stops the work at the next segment."""
