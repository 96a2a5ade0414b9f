"""What a text model says, as typed events: the one vocabulary between the
model's output (parsed by `modelyard.router.generation`) and the API
surfaces, each of which renders these events into its own wire format.

Every event names the choice it belongs to (`choice`, for chat's `n`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.adapters.base import TokenLogprob

if TYPE_CHECKING:
    from modelyard.router.agent_tools import HostedTool, Outcome


@dataclass(frozen=True)
class TokenLogprobs:
    """Logprobs of the tokens behind the text that follows (asked for with logprobs)."""

    entries: tuple[TokenLogprob, ...]
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class ContentDelta:
    """Answer text."""

    text: str
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class ReasoningDelta:
    """Text inside the model's reasoning block (<think>…</think>)."""

    text: str
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class ToolCallOpened:
    """A tool call starts; its arguments follow as ToolArgumentsDelta."""

    index: int  # the call's position within the choice
    id: str
    name: str
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class ToolArgumentsDelta:
    index: int
    arguments: str  # a piece of the JSON arguments
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class PromptSize:
    """The model took the prompt and is evaluating it: how many tokens it
    takes. A choice's first event, before its first token (which a long
    prompt delays); streams open with it (Anthropic's message_start reports it)."""

    tokens: int
    cached: int = 0  # of those, how many were reused from the previous request's cache
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class Finish:
    """The choice ended."""

    prompt_tokens: int
    completion_tokens: int
    stop_reason: str  # what the model reported: "stop" | "length"
    stop_sequence: str | None = None  # the request's stop string that ended the text, if one did
    tool_calls: int = 0  # how many tool calls the choice made
    cached_tokens: int = 0  # prompt tokens reused from the previous request's cache
    choice: int = field(default=0, kw_only=True)

    @property
    def finish_reason(self) -> str:
        """OpenAI's finish_reason: "tool_calls" once the model called a tool."""
        return "tool_calls" if self.tool_calls else self.stop_reason


@dataclass(frozen=True)
class HostedCallStarted:
    """The agent loop (router/agent_loop.py) starts running a hosted tool the model called.

    It comes after the round's model output (the model's text of that round,
    if any, went out before) and before the tool runs; HostedCallDone follows."""

    round: int  # 1-based: the model's first answer is round 1
    call_id: str  # the model's call id (unique within the request)
    tool: HostedTool
    arguments: dict[str, Any]  # checked: {"query"} | {"code"} | {"commands"}; {} when they were bad
    choice: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class HostedCallDone:
    """A hosted tool call ended (ran, failed, or was refused): what it produced."""

    round: int
    call_id: str
    tool: HostedTool
    arguments: dict[str, Any]
    outcome: Outcome  # SearchOutcome | CodeOutcome | ShellOutcome (router/agent_tools.py)
    choice: int = field(default=0, kw_only=True)


Event = (
    TokenLogprobs
    | ContentDelta
    | ReasoningDelta
    | ToolCallOpened
    | ToolArgumentsDelta
    | PromptSize
    | Finish
    | HostedCallStarted
    | HostedCallDone
)
