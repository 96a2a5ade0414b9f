"""Anthropic Messages API wire types (POST /v1/messages).

Field order follows Anthropic's API reference. Unknown fields are errors, as
in the OpenAI surfaces; fields declared but not honoured are listed in
docs/compatibility.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class ImageBlock(Lenient):
    type: Literal["image"]
    source: dict[str, Any]


class DocumentBlock(Lenient):
    type: Literal["document"]
    source: dict[str, Any]


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


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(Lenient):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(Strict):
    user_id: str | None = None


class MessagesRequest(Strict):
    model: str | None = None
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    container: Any = None
    mcp_servers: Any = None
    metadata: Metadata | None = None
    service_tier: str | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    thinking: dict[str, Any] | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)


class CountTokensRequest(Strict):
    model: str | None = None
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    thinking: dict[str, Any] | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None


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
