"""OpenAI Responses API wire types: POST /v1/responses and the objects it
returns (response, output items, stream events' payloads, lists).

Request fields follow the order of OpenAI's API reference. As for chat
completions, unknown top-level fields are a 400 and declared fields this
server does not honour are listed in `NOT_SUPPORTED` (a 400 naming them
when set). Input items are lenient: items copied from an earlier response's
output carry output-only keys (`status`, `annotations`, `logprobs`, ...).
docs/compatibility.md documents the same table.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from modelyard.schemas import responses_hosted as hosted
from modelyard.schemas.openai import Lenient, Strict
from modelyard.schemas.skills import ShellToolParam
from pydantic import BaseModel, Discriminator, Field, Tag, field_validator

# --- input items ------------------------------------------------------------


class InputTextPart(Lenient):
    type: Literal["input_text"]
    text: str


class OutputTextPart(Lenient):
    """An assistant message's text, as an earlier response returned it."""

    type: Literal["output_text"]
    text: str


class RefusalPart(Lenient):
    type: Literal["refusal"]
    refusal: str


class InputFilePart(Lenient):
    """A file: an uploaded file's id, the file inline (a base64 data URL), or
    the URL of this server's /v1/files/{id}/content (other URLs are refused)."""

    type: Literal["input_file"]
    file_id: str | None = None
    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    detail: str | None = None  # accepted, ignored (it is about images in PDFs)


class InputImagePart(Lenient):
    """An image: an uploaded file's id, or image_url (a base64 data URL, or an
    http(s) URL the server fetches only with `[server] fetch_remote_media`)."""

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None  # OpenAI's "low" | "high" | "auto"


class OtherPart(Lenient):
    """input_audio, ...: accepted by the parser, refused by the router."""

    type: str


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("input_text", "output_text", "refusal", "input_file", "input_image") else "other"


ContentPart = Annotated[
    Annotated[InputTextPart, Tag("input_text")]
    | Annotated[OutputTextPart, Tag("output_text")]
    | Annotated[RefusalPart, Tag("refusal")]
    | Annotated[InputFilePart, Tag("input_file")]
    | Annotated[InputImagePart, Tag("input_image")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


class MessageItem(Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    namespace: str | None = None  # set when the function belongs to a namespace tool
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class CustomToolCallItem(Lenient):
    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str
    input: str
    namespace: str | None = None
    id: str | None = None
    status: str | None = None


class CustomToolCallOutputItem(Lenient):
    type: Literal["custom_tool_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None


class LocalShellCallItem(Lenient):
    type: Literal["local_shell_call"]
    call_id: str = Field(min_length=1)
    action: dict[str, Any]
    id: str | None = None
    status: str | None = None


class LocalShellCallOutputItem(Lenient):
    """The output of a local shell call; OpenAI names the call by `id` (older clients) or `call_id`."""

    type: Literal["local_shell_call_output"]
    output: str
    id: str | None = None
    call_id: str | None = None
    status: str | None = None


class ReasoningItem(Lenient):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[Any] = Field(default_factory=list)
    content: list[Any] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class OtherItem(Lenient):
    """Any other item type (item_reference, hosted tool calls, compaction)."""

    type: str


ITEM_TYPES = (
    "message",
    "function_call",
    "function_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
    "local_shell_call",
    "local_shell_call_output",
    "reasoning",
)
# Items of the hosted tools this server runs: written back into the prompt as
# the tool calls and results they were (router/response_input.py).
HOSTED_ITEM_TYPES = hosted.HOSTED_ITEM_TYPES
# History items of tools this server does not run and opaque items it cannot
# read: kept with the response, left out of the prompt.
UNREAD_ITEM_TYPES = (
    "image_generation_call",
    "mcp_call",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "tool_search_call",
    "tool_search_output",
    "file_search_call",
    "compaction",
)


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ITEM_TYPES else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[CustomToolCallItem, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")]
    | Annotated[LocalShellCallItem, Tag("local_shell_call")]
    | Annotated[LocalShellCallOutputItem, Tag("local_shell_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


# --- tools, tool choice, text format ---------------------------------------


class FunctionToolParam(Strict):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    # OpenAI's Responses default: strict unless the caller says otherwise.
    strict: bool | None = True
    # Tools for tool_search to load later; this server shows them to the model at once.
    defer_loading: bool | None = None
    allowed_callers: Any = None


class CustomTextFormat(Strict):
    type: Literal["text"]


class CustomGrammarFormat(Strict):
    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str


class CustomToolParam(Strict):
    """A tool whose input is free-form text (optionally following a grammar), not JSON."""

    type: Literal["custom"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    format: Annotated[CustomTextFormat | CustomGrammarFormat, Field(discriminator="type")] | None = None
    defer_loading: bool | None = None
    allowed_callers: Any = None


class NamespaceToolParam(Strict):
    """Function and custom tools grouped under a name; their calls carry `namespace`."""

    type: Literal["namespace"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    tools: list[Annotated[FunctionToolParam | CustomToolParam, Field(discriminator="type")]] = Field(min_length=1)


class LocalShellToolParam(Strict):
    type: Literal["local_shell"]


class OtherTool(Lenient):
    """Hosted tools this server does not run (mcp, file_search, ...): left out or refused by the router."""

    type: str


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in hosted.WEB_SEARCH_TYPES:
        return "web_search"
    return kind if kind in ("function", "custom", "namespace", "local_shell", "shell", "code_interpreter") else "other"


Tool = Annotated[
    Annotated[FunctionToolParam, Tag("function")]
    | Annotated[CustomToolParam, Tag("custom")]
    | Annotated[NamespaceToolParam, Tag("namespace")]
    | Annotated[LocalShellToolParam, Tag("local_shell")]
    | Annotated[ShellToolParam, Tag("shell")]
    | Annotated[hosted.WebSearchToolParam, Tag("web_search")]
    | Annotated[hosted.CodeInterpreterToolParam, Tag("code_interpreter")]
    | Annotated[OtherTool, Tag("other")],
    Discriminator(_tool_kind),
]


class FunctionToolChoice(Strict):
    type: Literal["function"]
    name: str


class CustomToolChoice(Strict):
    type: Literal["custom"]
    name: str


NamedToolChoice = FunctionToolChoice | CustomToolChoice


class OtherToolChoice(Lenient):
    """allowed_tools, other hosted tool types, mcp: refused by the router."""

    type: str


HOSTED_CHOICE_TYPES = (*hosted.WEB_SEARCH_TYPES, "code_interpreter", "shell")


def _choice_kind(value: Any) -> str:
    if isinstance(value, str):
        return "mode"
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in HOSTED_CHOICE_TYPES:
        return "hosted"
    return kind if kind in ("function", "custom") else "other"


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[FunctionToolChoice, Tag("function")]
    | Annotated[CustomToolChoice, Tag("custom")]
    | Annotated[hosted.HostedToolChoice, Tag("hosted")]
    | Annotated[OtherToolChoice, Tag("other")],
    Discriminator(_choice_kind),
]


class TextFormatText(Strict):
    type: Literal["text"]


class TextFormatJSONObject(Strict):
    type: Literal["json_object"]


class TextFormatJSONSchema(Strict):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJSONObject | TextFormatJSONSchema, Field(discriminator="type")]


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptions(Strict):
    include_obfuscation: bool | None = None


class ReasoningConfig(Lenient):
    """`reasoning`; its values are checked by the router (OpenAI's wording), newer keys are ignored."""

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None
    mode: str | None = None
    context: str | None = None


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
REASONING_SUMMARIES = ("auto", "concise", "detailed")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")


# --- the request ------------------------------------------------------------

LOGPROBS_INCLUDE = "message.output_text.logprobs"
ENCRYPTED_REASONING_INCLUDE = "reasoning.encrypted_content"


class CreateResponseRequest(Strict):
    background: bool | None = False
    # Codex's per-turn ids (window, turn, installation): accepted, not used.
    client_metadata: dict[str, Any] | None = None
    conversation: Any = None
    include: list[str] | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    # Optional here (OpenAI requires it): absent or "default" means the
    # server's default model.
    model: str | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: Any = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: ReasoningConfig | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: bool | None = True
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    text: TextConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=None, ge=0, le=1)
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    # Newer OpenAI fields, declared so that they are refused by name (or ignored).
    access_programs: Any = None
    background_options: Any = None
    context_management: Any = None
    image: Any = None
    moderation: Any = None
    prompt_cache_options: Any = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 key-value pairs")
            if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
                raise ValueError("keys are at most 64 characters and values at most 512")
        return value

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("the input list is empty")
        return value


# Declared fields this server does not honour; setting one to anything but
# its neutral value is a 400 `unsupported_parameter`.
NOT_SUPPORTED: dict[str, Any] = {
    "access_programs": None,
    "background_options": None,
    "context_management": None,
    "conversation": None,
    "moderation": None,
    "prompt": None,
    "truncation": (None, "disabled"),
}


# --- the response object ----------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str = ""


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "in_progress"
    content: list[OutputText] = Field(default_factory=list)


class FunctionCallOutput(BaseModel):
    """A `function_call` output item: the model asks the client to run a function."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    # The namespace tool the function came from; absent (not null) otherwise, as OpenAI's schema has it.
    namespace: str | None = Field(default=None, exclude_if=lambda value: value is None)
    arguments: str = ""
    status: ItemStatus = "in_progress"


class CustomToolCallOutput(BaseModel):
    """A `custom_tool_call` output item: free-form input for a custom tool."""

    id: str
    type: Literal["custom_tool_call"] = "custom_tool_call"
    call_id: str
    name: str
    namespace: str | None = Field(default=None, exclude_if=lambda value: value is None)
    input: str = ""
    status: ItemStatus = "in_progress"


class LocalShellAction(BaseModel):
    type: Literal["exec"] = "exec"
    command: list[str] = Field(default_factory=list)
    timeout_ms: int | None = None
    working_directory: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None


class LocalShellCallOutput(BaseModel):
    """A `local_shell_call` output item: the model asks the client to run a command."""

    id: str
    type: Literal["local_shell_call"] = "local_shell_call"
    call_id: str
    action: LocalShellAction = Field(default_factory=LocalShellAction)
    status: ItemStatus = "in_progress"


class ReasoningOutput(BaseModel):
    """The text inside the model's reasoning tags (`<think>…</think>`)."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)
    # With include ["reasoning.encrypted_content"]: the reasoning, encoded so
    # that a later request's input can hand it back (modelyard.router.reasoning).
    encrypted_content: str | None = None
    status: ItemStatus = "in_progress"


ToolCallItem = FunctionCallOutput | CustomToolCallOutput | LocalShellCallOutput
OutputItem = Annotated[
    OutputMessage
    | FunctionCallOutput
    | CustomToolCallOutput
    | LocalShellCallOutput
    | ReasoningOutput
    | hosted.WebSearchCallOutput
    | hosted.CodeInterpreterCallOutput
    | hosted.ShellCallOutput
    | hosted.ShellResultOutput,
    Field(discriminator="type"),
]


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class FunctionToolEcho(BaseModel):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


Status = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: dict[str, Any] | None = None
    safety_identifier: str | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float | None = 1.0
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}, "verbosity": "medium"})
    tool_choice: Any = "auto"
    tools: list[Any] = Field(default_factory=list)  # as the request declared them (functions as FunctionToolEcho)
    top_logprobs: int | None = None
    top_p: float | None = 1.0
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
