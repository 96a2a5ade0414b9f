"""OpenAI wire types: chat completions, models and errors.

Request fields follow the order of OpenAI's API reference. Unknown fields are
rejected with 400, as OpenAI does ("Unrecognized request argument"). Fields
that are declared but not honoured yet are listed in `NOT_SUPPORTED`; a
request that sets one gets a 400 naming it rather than a silent no-op.
docs/compatibility.md documents the same table.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    # strict: no coercion ("stream": "yes", "top_p": "0.5" and "n": true are
    # 400s, as at OpenAI); JSON integers still count as numbers.
    model_config = ConfigDict(extra="forbid", strict=True)


class Lenient(BaseModel):
    """For nested objects whose extra keys OpenAI itself tolerates."""

    model_config = ConfigDict(extra="allow", strict=True)


# --- messages ---------------------------------------------------------------


class TextPart(Lenient):
    type: Literal["text"]
    text: str


class ImageURL(Lenient):
    url: str
    detail: str | None = None


class ImagePart(Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudioPart(Lenient):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FileRef(Lenient):
    """A file part's file: an uploaded file's id, or the file inline (a base64 data URL)."""

    file_id: str | None = None
    filename: str | None = None
    file_data: str | None = None


class FilePart(Lenient):
    type: Literal["file"]
    file: FileRef


class RefusalPart(Lenient):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | InputAudioPart | FilePart | RefusalPart, Field(discriminator="type")]


class FunctionCall(Lenient):
    name: str
    arguments: str


class ToolCall(Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(Strict):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(Strict):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(Strict):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(Strict):
    role: Literal["assistant"]
    content: str | list[TextPart | RefusalPart] | None = None
    refusal: str | None = None
    name: str | None = None
    audio: dict[str, Any] | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    # Not OpenAI's, but what reasoning-model clients send back.
    reasoning_content: str | None = None


class ToolMessage(Strict):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(Strict):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


def _at_most_four(value: str | list[str] | None) -> str | list[str] | None:
    if isinstance(value, list) and len(value) > 4:
        raise ValueError("at most 4 stop sequences")
    return value


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


# Fields the chat and legacy completion requests share.
Stop = Annotated[str | list[str] | None, AfterValidator(_at_most_four)]
TopK = Annotated[int | None, Field(ge=0)]
MinP = Annotated[float | None, Field(ge=0, le=1)]
RepeatPenalty = Annotated[float | None, Field(ge=0)]
Grammar = Annotated[str | None, Field(min_length=1)]


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(Strict):
    messages: list[Message] = Field(min_length=1)
    # Optional here (OpenAI requires it): absent or "default" means the
    # server's default model.
    model: str | None = None
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    function_call: Any = None
    functions: list[Any] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    parallel_tool_calls: bool | None = None
    prediction: Any = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: Stop = None
    store: bool | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[ChatTool] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: str | None = None
    verbosity: str | None = None
    web_search_options: WebSearchOptions | None = None
    # --- modelyard extensions (documented in docs/compatibility.md) ---
    # The agentic runtime (docs/agent.md), as mistral.rs names them.
    max_tool_rounds: int | None = Field(default=None, ge=1)
    session_id: str | None = None
    top_k: TopK = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    grammar: Grammar = None
    # Keep generating past the model's end-of-generation token (llama.cpp's
    # name): until max_tokens, a stop string or the end of the context.
    ignore_eos: bool | None = None

    def stop_list(self) -> list[str]:
        return stop_list(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# Fields declared above that this server does not honour. Setting one to
# anything but its neutral value is a 400, so no client is silently misled.
NOT_SUPPORTED: dict[str, Any] = {
    "audio": None,
    "function_call": None,
    "functions": None,
    "prediction": None,
}


class FunctionDefinition(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class UserLocation(Strict):
    type: Literal["approximate"] = "approximate"
    approximate: dict[str, Any] | None = None


class WebSearchOptions(Strict):
    """Turns on the hosted web_search tool (docs/agent.md); the search is the server's [agent.search]."""

    search_context_size: Literal["low", "medium", "high"] | None = None  # accepted, ignored
    user_location: UserLocation | None = None  # accepted, ignored: providers are not asked by location


class CodeInterpreterContainer(Strict):
    type: Literal["auto"] = "auto"
    file_ids: list[str] | None = None  # accepted; files are given by file_id parts instead
    memory_limit: str | None = None  # accepted, ignored: [agent.sandbox] memory applies


class CodeInterpreterTool(Strict):
    """The hosted code interpreter (mistral.rs and OpenAI's Responses shape, on chat)."""

    type: Literal["code_interpreter"]
    container: CodeInterpreterContainer | str | None = None


class HostedChatTool(Strict):
    """`{"type": "web_search"}` or `{"type": "shell"}`: the other hosted tools, on chat."""

    type: Literal["web_search", "shell"]


ChatTool = Annotated[FunctionTool | CodeInterpreterTool | HostedChatTool, Field(discriminator="type")]


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(Strict):
    type: Literal["text"]


class ResponseFormatJSONObject(Strict):
    type: Literal["json_object"]


class ResponseFormatJSONSchema(Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


# --- responses --------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # reused from the previous request's KV cache (llama-cpp's reuse_prefix)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    annotations: list[Any] = Field(default_factory=list)
    tool_calls: list[ResponseToolCall] | None = None
    # modelyard's (and vLLM's, DeepSeek's) field for a reasoning model's thinking.
    reasoning_content: str | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "modelyard"
    # modelyard's extensions
    modality: str
    backend: str
    status: str
    aliases: list[str] = Field(default_factory=list)
    error: str | None = None
    # What the model does, as Ollama's /api/show lists it: its modality, and "vision" for a chat model that takes
    # image inputs (known once it has loaded: the adapter reports it).
    capabilities: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- legacy completions -----------------------------------------------------


class CompletionRequest(Strict):
    prompt: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=20)
    echo: bool | None = False
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=16, ge=0)
    n: int | None = Field(default=None, ge=1, le=128)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: Stop = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: str | None = None
    # --- modelyard extensions ---
    top_k: TopK = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    grammar: Grammar = None
    # Keep generating past the model's end-of-generation token (llama.cpp's
    # name): until max_tokens, a stop string or the end of the context.
    ignore_eos: bool | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("the prompt list is empty")
        return value

    def stop_list(self) -> list[str]:
        return stop_list(self.stop)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# --- embeddings -------------------------------------------------------------


class EmbeddingRequest(Strict):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
