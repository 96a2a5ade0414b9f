"""Incremental parsers for generated text: reasoning blocks and tool calls.

Both take text as it streams, a delta at a time, and hold back only what
could still be the start of a tag, so streamed output stays prompt.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from modelyard.adapters.base import TOOL_CALL_END, TOOL_CALL_START
from modelyard.adapters.textstream import partial_stop_suffix


@dataclass
class Piece:
    kind: str  # "content" | "reasoning"
    text: str


class ReasoningSplitter:
    """Separates text inside <think>…</think> (or the model's configured tags)."""

    def __init__(self, tags: list[str]) -> None:
        self.start, self.end = (tags[0], tags[1]) if tags else ("", "")
        self.inside = False
        self.buffer = ""
        self.after_end = False  # newlines right after the end tag are dropped

    def feed(self, text: str) -> list[Piece]:
        if not self.start:
            return [Piece("content", text)] if text else []
        self.buffer += text
        pieces: list[Piece] = []
        while True:
            if self.after_end:
                # Models put a newline or two after </think>; they are not the answer.
                self.buffer = self.buffer.lstrip("\n")
                if not self.buffer:
                    return pieces
                self.after_end = False
            tag = self.end if self.inside else self.start
            kind = "reasoning" if self.inside else "content"
            at = self.buffer.find(tag)
            if at >= 0:
                if at:
                    pieces.append(Piece(kind, self.buffer[:at]))
                self.buffer = self.buffer[at + len(tag) :]
                self.inside = not self.inside
                self.after_end = not self.inside
                continue
            keep = partial_stop_suffix(self.buffer, [tag])
            ready = self.buffer[: len(self.buffer) - keep]
            if ready:
                pieces.append(Piece(kind, ready))
            self.buffer = self.buffer[len(self.buffer) - keep :]
            return pieces

    def flush(self) -> list[Piece]:
        text, self.buffer = self.buffer, ""
        return [Piece("reasoning" if self.inside else "content", text)] if text else []


@dataclass
class ParsedCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text


# How far past an end tag inside a JSON string a call's text is held back
# waiting for the string to close: a call's JSON closes within a few
# characters of such a tag ({"query": "a</tool_call>"}}), a non-call never.
HELD_PAST_AN_END_TAG = 512


class ToolCallParser:
    """Finds `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks
    in content; what is not a well-formed call stays content."""

    def __init__(self) -> None:
        self.inside = False
        self.buffer = ""
        self.gap = ""
        self.calls = 0
        # Where the search for the end tag has got to in a call's body, and
        # whether that point is inside a JSON string: an end tag inside a
        # string ({"query": "a</tool_call>"}) is the call's text, not its end.
        self.scanned = 0
        self.in_string = False
        self.escaped = False
        self.end_in_string = -1  # the first such end tag: the end after all, if the body is no call

    def feed(self, text: str) -> list[str | ParsedCall]:
        self.buffer += text
        out: list[str | ParsedCall] = []
        while True:
            if not self.inside:
                at = self.buffer.find(TOOL_CALL_START)
                if at >= 0:
                    before = self.buffer[:at]
                    if before.strip():
                        out.append(before)
                        self.gap = ""
                    else:
                        self.gap = before  # dropped if a well-formed call follows
                    self.buffer = self.buffer[at + len(TOOL_CALL_START) :]
                    self.inside = True
                    continue
                keep = partial_stop_suffix(self.buffer, [TOOL_CALL_START])
                ready = self.buffer[: len(self.buffer) - keep]
                # White space may be what a model writes between two calls:
                # hold it until something that is not white space follows.
                if ready.strip():
                    out.append(ready)
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                return out
            at = self._end_tag()
            if at < 0:
                if self.end_in_string < 0 or len(self.buffer) - self.end_in_string <= HELD_PAST_AN_END_TAG:
                    return out
                at = self.end_in_string  # a string that does not close: no call after all, stop holding the text back
            parsed = self._parse(self.buffer[:at])
            if isinstance(parsed, str) and self.end_in_string >= 0:
                at = self.end_in_string  # not JSON after all: its first end tag ends it, as text
                parsed = self._parse(self.buffer[:at])
            self.buffer = self.buffer[at + len(TOOL_CALL_END) :]
            self._leave()
            out.append(parsed)

    def _leave(self) -> None:
        self.inside = False
        self.scanned, self.in_string, self.escaped, self.end_in_string = 0, False, False, -1

    def _end_tag(self) -> int:
        """Where the end tag outside any JSON string starts in the body held, or -1 (not yet)."""
        buffer = self.buffer
        at = self.scanned
        while at < len(buffer):
            char = buffer[at]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                elif char == "<" and self.end_in_string < 0:
                    if buffer.startswith(TOOL_CALL_END, at):
                        self.end_in_string = at
                    elif TOOL_CALL_END.startswith(buffer[at:]):
                        break
            elif char == "<":
                if buffer.startswith(TOOL_CALL_END, at):
                    return at
                if TOOL_CALL_END.startswith(buffer[at:]):
                    break  # maybe an end tag cut off: look again when more text comes
            elif char == '"':
                self.in_string = True
            at += 1
        self.scanned = at
        return -1

    def flush(self, truncated: bool = False) -> list[str | ParsedCall]:
        """What is still held when the text ends. `truncated`: the text was
        cut off (max_tokens), so an unfinished call is dropped rather than
        shown as markup: a call cut off after its JSON is whole is still a
        call; one cut off mid-JSON, or a start tag cut off mid-tag, is gone.
        Text that ended on its own keeps an unfinished call as the text it was."""
        out: list[str | ParsedCall] = []
        while True:
            body, self.buffer = self.buffer, ""
            if not self.inside:
                if truncated:
                    body = body[: len(body) - partial_stop_suffix(body, [TOOL_CALL_START])]
                return out + ([body] if body and (body.strip() or not self.calls) else [])
            end_in_string = self.end_in_string
            self._leave()
            parsed = self._parse(body[: len(body) - partial_stop_suffix(body, [TOOL_CALL_END])])
            if isinstance(parsed, ParsedCall):
                return [*out, parsed]
            if end_in_string < 0:
                return out if truncated else [*out, self.gap + TOOL_CALL_START + body]
            # An unfinished string held the rest back: the first end tag ended a non-call; read on after it.
            out.append(self._parse(body[:end_in_string]))
            out += self.feed(body[end_in_string + len(TOOL_CALL_END) :])

    def _parse(self, body: str) -> str | ParsedCall:
        try:
            data = json.loads(body, strict=False)  # a raw newline in a string (code) is what the model meant
            name = data["name"]
            arguments = data.get("arguments", data.get("parameters", {}))
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self.gap + TOOL_CALL_START + body + TOOL_CALL_END
        self.calls += 1
        return ParsedCall(f"call_{uuid.uuid4().hex[:24]}", name, json.dumps(arguments, ensure_ascii=False))
