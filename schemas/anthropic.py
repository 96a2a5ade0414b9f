"""Anthropic Messages API wire types (POST /v1/messages).

Field order follows Anthropic's API reference. Unknown fields are errors, as
in the OpenAI surfaces; fields declared but not honoured are listed in
docs/compatibility.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from modelyard.schemas.skills import ContainerParams


class Strict(BaseModel):
    # strict: no coercion ("stream": "yes", "top_p": "0.5" and "n": true are
    # 400s, as at OpenAI); JSON integers still count as numbers.
    model_config = ConfigDict(extra="forbid", strict=True)


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class CacheControl(Lenient):
    type: str = "ephemeral"


class TextBlock(Lenient):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class TextSource(Lenient):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class Base64Source(Lenient):
    type: Literal["base64"]
    media_type: str
    data: str


class FileSource(Lenient):
    """A file uploaded with the Files API (client.beta.files)."""

    type: Literal["file"]
    file_id: str


class OtherSource(Lenient):
    """`url`, `content`: refused by the router (this server fetches nothing)."""

    type: str


def source_kinds(*known: str) -> Discriminator:
    """A source's discriminator: its `type` when it is one of `known`, else "other"."""

    def kind_of(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kind if kind in known else "other"

    return Discriminator(kind_of)


DocumentSource = Annotated[
    Annotated[TextSource, Tag("text")]
    | Annotated[Base64Source, Tag("base64")]
    | Annotated[FileSource, Tag("file")]
    | Annotated[OtherSource, Tag("other")],
    source_kinds("text", "base64", "file"),
]


class URLSource(Lenient):
    """An image at a URL, fetched only with `[server] fetch_remote_media`."""

    type: Literal["url"]
    url: str


ImageSource = Annotated[
    Annotated[Base64Source, Tag("base64")]
    | Annotated[URLSource, Tag("url")]
    | Annotated[FileSource, Tag("file")]
    | Annotated[OtherSource, Tag("other")],
    source_kinds("base64", "url", "file"),
]


class ImageBlock(Lenient):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


class Citations(Lenient):
    enabled: bool | None = None


class DocumentBlock(Lenient):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    citations: Citations | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None


class ThinkingBlock(Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Lenient):
    type: Literal["redacted_thinking"]
    data: str


class ServerToolUseBlock(Lenient):
    """A server tool's call in an assistant turn sent back (router/anthropic_server_tools.py reads it)."""

    type: Literal["server_tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ServerToolResultBlock(Lenient):
    """A server tool's result in an assistant turn sent back: `content` is the
    result (a list of web_search_result blocks, a code_execution_result, ...)
    or an error object, as this server or Anthropic's API wrote it."""

    type: Literal[
        "web_search_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
    ]
    tool_use_id: str
    content: list[dict[str, Any]] | dict[str, Any]


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ServerToolUseBlock
    | ServerToolResultBlock,
    Field(discriminator="type"),
]


class MessageParam(Strict):
    # "system": a system message mid-conversation (Claude Code's
    # mid-conversation-system beta); its content is text.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(Lenient):
    """A custom (client) tool: the model calls it, the client runs it."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None  # the input must follow input_schema exactly


class ServerTool(Lenient):
    """A tool of Anthropic's own (`web_search_20250305`, `code_execution_...`,
    `bash_20250124`, ...): any `type` but custom. The web search and code
    execution tools run on this server's agentic runtime
    (router/anthropic_server_tools.py); the others are accepted and left out of
    the prompt with a warning."""

    type: str
    name: str
    # web_search_*: honoured (max_uses caps the searches, the domain lists filter the results); user_location ignored.
    max_uses: int | None = Field(default=None, ge=1)
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None
    user_location: Any = None


def tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "custom" if kind in (None, "custom") else "server"


AnyTool = Annotated[
    Annotated[Tool, Tag("custom")] | Annotated[ServerTool, Tag("server")], Discriminator(tool_kind)
]


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(Strict):
    user_id: str | None = None


class ThinkingEnabled(Lenient):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1)  # Anthropic asks for at least 1024; small local models need less
    display: Literal["summarized", "omitted"] | None = None


class ThinkingAdaptive(Lenient):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(Lenient):
    type: Literal["disabled"]


Thinking = Annotated[ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled, Field(discriminator="type")]


class JSONOutputFormat(Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # accepted, ignored
    format: JSONOutputFormat | None = None


class ThinkingTurns(Strict):
    type: Literal["thinking_turns"]
    value: int = Field(ge=0)


class AllThinkingTurns(Strict):
    type: Literal["all"]


ThinkingKeep = Literal["all"] | Annotated[ThinkingTurns | AllThinkingTurns, Field(discriminator="type")]
_THINKING_KEEP: TypeAdapter[Any] = TypeAdapter(ThinkingKeep)


class ContextEdit(Lenient):
    """One context-management edit. `clear_thinking_*` edits are applied to
    the prompt; the others (`clear_tool_uses_*`, `compact_*`) are accepted
    and ignored."""

    type: str
    # A clear_thinking_* edit's `keep` is checked (ThinkingKeep); other edits
    # have their own (clear_tool_uses_*: {"type": "tool_uses", "value": N}).
    keep: Any = None

    @field_validator("keep")
    @classmethod
    def _thinking_keep(cls, keep: Any, info: ValidationInfo) -> Any:
        if keep is None or not str(info.data.get("type", "")).startswith("clear_thinking_"):
            return keep
        try:
            return _THINKING_KEEP.validate_python(keep)
        except ValidationError as exc:
            raise ValueError("a clear_thinking edit's keep is 'all', {'type': 'all'} or {'type': 'thinking_turns', 'value': N}") from exc


class ContextManagement(Lenient):
    edits: list[ContextEdit] | None = None


class MessagesRequest(Strict):
    model: str | None = None
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    cache_control: CacheControl | None = None
    container: str | ContainerParams | None = None  # an id (the session to run code in again) or the skills to load
    context_management: ContextManagement | None = None
    diagnostics: Any = None
    inference_geo: str | None = None
    mcp_servers: Any = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    # The structured-outputs beta's name for output_config.format.
    output_format: JSONOutputFormat | None = None
    service_tier: str | None = None
    speed: str | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: list[AnyTool] | None = None
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)


class CountTokensRequest(MessagesRequest):
    """The same body as /v1/messages; what only shapes generation
    (max_tokens, stream, sampling) is accepted and has no effect on the count."""

    max_tokens: int | None = Field(default=None, ge=1)  # type: ignore[assignment]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[dict[str, Any]]
    model: str
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"] | None
    stop_sequence: str | None = None
    usage: Usage


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """Anthropic's error body (https://docs.anthropic.com/en/api/errors)."""

    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | None = None
