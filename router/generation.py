"""What every text surface (chat completions, Anthropic Messages,
Responses) does with a model's output: split reasoning from the answer,
parse tool calls, keep logprobs; as OpenAI-chat-shaped deltas, which each
surface translates into its own events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelyard.adapters.base import Finished, TextDelta, TokenLogprob
from modelyard.router.textparse import ParsedCall, ReasoningSplitter, ToolCallParser
from modelyard.schemas import openai as oa


def wire_logprobs(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": e.token,
            "logprob": e.logprob,
            "bytes": e.bytes,
            "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in e.top],
        }
        for e in entries
    ]


@dataclass
class ChoiceBuilder:
    """Turns one choice's text deltas into OpenAI deltas (content, reasoning,
    tool calls) and keeps the whole message for non-streaming answers."""

    index: int
    reasoning_tags: list[str]
    parse_tools: bool
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[ParsedCall] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.splitter = ReasoningSplitter(self.reasoning_tags)
        self.tool_parser = ToolCallParser() if self.parse_tools else None
        self._pending_logprobs: list[dict[str, Any]] = []

    def feed(self, delta: TextDelta) -> list[dict[str, Any]]:
        if delta.logprobs:
            entries = wire_logprobs(delta.logprobs)
            self._pending_logprobs += entries
            self.logprobs = (self.logprobs or []) + entries
        return self._deltas(self.splitter.feed(delta.text))

    def flush(self) -> list[dict[str, Any]]:
        deltas = self._deltas(self.splitter.flush())
        if self.tool_parser is not None:
            deltas += self._content(self.tool_parser.flush())
        return deltas

    def _deltas(self, pieces: list[Any]) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for piece in pieces:
            if piece.kind == "reasoning":
                self.reasoning.append(piece.text)
                deltas.append({"reasoning_content": piece.text})
            elif self.tool_parser is not None:
                deltas += self._content(self.tool_parser.feed(piece.text))
            else:
                deltas += self._content([piece.text])
        return deltas

    def _content(self, parts: list[str | ParsedCall]) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, ParsedCall):
                position = len(self.calls)
                self.calls.append(part)
                deltas.append(
                    {
                        "tool_calls": [
                            {"index": position, "id": part.id, "type": "function", "function": {"name": part.name, "arguments": ""}}
                        ]
                    }
                )
                deltas.append({"tool_calls": [{"index": position, "function": {"arguments": part.arguments}}]})
            elif part:
                self.content.append(part)
                deltas.append({"content": part})
        return deltas

    def take_logprobs(self) -> list[dict[str, Any]]:
        taken, self._pending_logprobs = self._pending_logprobs, []
        return taken

    def finish_reason(self, finished: Finished) -> str:
        return "tool_calls" if self.calls else finished.finish_reason

    def message(self) -> oa.ResponseMessage:
        content = "".join(self.content)
        tool_calls = [
            oa.ResponseToolCall(id=c.id, function=oa.FunctionCall(name=c.name, arguments=c.arguments)) for c in self.calls
        ]
        if tool_calls and not content.strip():
            content = ""
        return oa.ResponseMessage(
            content=content if (content or not tool_calls) else None,
            tool_calls=tool_calls or None,
            reasoning_content="".join(self.reasoning) or None,
        )


