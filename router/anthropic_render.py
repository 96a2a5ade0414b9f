"""Anthropic's Messages as a stream of events or a whole message (MessageRenderer)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from modelyard.router.errors import APIError
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    PromptSize,
    ReasoningDelta,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.router.surface import Frame
from modelyard.schemas import anthropic as an

ENDPOINT = "/v1/messages"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def usage_of(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, int]:
    """Anthropic's usage: input_tokens counts the prompt tokens not read from the cache."""
    return {
        "input_tokens": prompt_tokens - cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached_tokens,
        "output_tokens": output_tokens,
    }


def stop_reason_of(finish: Finish) -> str:
    return "stop_sequence" if finish.stop_sequence else STOP_REASONS.get(finish.finish_reason, "end_turn")


def signature_of(thinking: str) -> str:
    """A thinking block's `signature`: clients keep it and send it back with
    the block. Anthropic's is an encrypted copy of the thinking; this server
    reads the thinking itself, so its signature is only a digest of the text
    (it is not checked when it comes back)."""
    return base64.b64encode(hashlib.sha256(b"modelyard-thinking\0" + thinking.encode("utf-8")).digest()).decode("ascii")


class MessageRenderer:
    """Anthropic's Messages: message_start, then each content block's start,
    deltas and stop, then message_delta and message_stop; or the whole message.

    message_start goes out with the first event, which is PromptSize (the
    prompt's token count, before the model processes it) where the adapter
    reports it; `ping` is the keep-alive. A thinking block ends with a signature_delta; with
    `show_thinking` False (`display: "omitted"`) its text is left out.
    """

    def __init__(self, message_id: str, model: str, show_thinking: bool = True) -> None:
        self.message_id = message_id
        self.model = model
        self.show_thinking = show_thinking
        self.blocks: list[dict[str, Any]] = []  # the content so far, as the whole message has it
        self.thinking: list[str] = []  # what each thinking block said (shown or not), by block
        self.open = False  # whether the last block is still open
        self.started = False  # whether message_start went out
        self.input_tokens = 0
        self.cached_tokens = 0
        self.finish: Finish | None = None

    @staticmethod
    def frame(kind: str, **data: Any) -> Frame:
        return Frame({"type": kind, **data}, kind)

    def opening(self) -> list[Frame]:
        return []  # message_start waits for the first event, which may bring the prompt's size

    def keepalive(self) -> list[Frame]:
        return [self.frame("ping")]

    def _message_start(self) -> list[Frame]:
        self.started = True
        usage = usage_of(self.input_tokens, self.cached_tokens, 0)
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [self.frame("message_start", message=message), self.frame("ping")]

    def _close(self) -> list[Frame]:
        if not self.open:
            return []
        self.open = False
        index = len(self.blocks) - 1
        frames = []
        if self.blocks[-1]["type"] == "thinking":
            signature = signature_of(self.thinking[-1])
            self.blocks[-1]["signature"] = signature
            delta = {"type": "signature_delta", "signature": signature}
            frames.append(self.frame("content_block_delta", index=index, delta=delta))
        return frames + [self.frame("content_block_stop", index=index)]

    def _start(self, block: dict[str, Any]) -> list[Frame]:
        frames = self._close()
        self.blocks.append(block)
        if block["type"] == "thinking":
            self.thinking.append("")
        self.open = True
        start = {k: v for k, v in block.items() if k != "arguments"}  # a copy: the block grows with its deltas
        if block["type"] == "tool_use":
            start["input"] = {}
        return frames + [self.frame("content_block_start", index=len(self.blocks) - 1, content_block=start)]

    def _delta(self, kind: str, field: str, text: str, start: dict[str, Any]) -> list[Frame]:
        frames = [] if self.open and self.blocks[-1]["type"] == start["type"] else self._start(dict(start))
        if start["type"] == "thinking":
            self.thinking[-1] += text
            if not self.show_thinking:
                return frames
        self.blocks[-1][field] += text
        delta = {"type": kind, field: text}
        return frames + [self.frame("content_block_delta", index=len(self.blocks) - 1, delta=delta)]

    def render(self, event: Event) -> list[Frame]:
        frames: list[Frame] = []
        if isinstance(event, PromptSize):
            self.input_tokens, self.cached_tokens = event.tokens, event.cached
        if not self.started:
            frames = self._message_start()
        if isinstance(event, ReasoningDelta):
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            frames += self._delta("thinking_delta", "thinking", event.text, empty)
        elif isinstance(event, ContentDelta):
            frames += self._delta("text_delta", "text", event.text, {"type": "text", "text": ""})
        elif isinstance(event, ToolCallOpened):
            frames += self._start({"type": "tool_use", "id": tool_use_id(event.id), "name": event.name, "arguments": ""})
        elif isinstance(event, ToolArgumentsDelta):
            self.blocks[-1]["arguments"] += event.arguments
            if event.arguments:
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                frames.append(self.frame("content_block_delta", index=len(self.blocks) - 1, delta=delta))
        elif isinstance(event, Finish):
            frames += self._finish(event)
        return frames

    def _finish(self, finish: Finish) -> list[Frame]:
        self.finish = finish
        self.input_tokens = finish.prompt_tokens
        frames = [] if self.blocks else self._start({"type": "text", "text": ""})  # an empty answer has one text block
        frames += self._close()
        delta = {"stop_reason": self.stop_reason(finish), "stop_sequence": finish.stop_sequence, **self.ending()}
        usage = self.usage(finish)
        return frames + [self.frame("message_delta", delta=delta, usage=usage), self.frame("message_stop")]

    def stop_reason(self, finish: Finish) -> str:
        return stop_reason_of(finish)

    def usage(self, finish: Finish) -> dict[str, Any]:
        return usage_of(finish.prompt_tokens, finish.cached_tokens, finish.completion_tokens)

    def ending(self) -> dict[str, Any]:
        """What else the message_delta says (the container a run used)."""
        return {}

    def closing(self) -> list[Frame]:
        return []

    def failure(self, error: APIError) -> list[Frame]:
        return [self.frame("error", error=error.body(ENDPOINT)["error"])]

    def result(self) -> dict[str, Any]:
        finish = self.finish
        assert finish is not None
        reasoning = "".join(self.thinking)
        text = "".join(b["text"] for b in self.blocks if b["type"] == "text")
        calls = [b for b in self.blocks if b["type"] == "tool_use"]
        content: list[dict[str, Any]] = []
        if reasoning:
            shown = reasoning if self.show_thinking else ""
            content.append({"type": "thinking", "thinking": shown, "signature": signature_of(reasoning)})
        if text.strip() or not (calls or reasoning):  # as the stream: an empty answer has one text block
            content.append({"type": "text", "text": text})
        content += [
            {"type": "tool_use", "id": c["id"], "name": c["name"], "input": json.loads(c["arguments"])} for c in calls
        ]
        return an.Message(
            id=self.message_id,
            content=content,
            model=self.model,
            stop_reason=stop_reason_of(finish),  # type: ignore[arg-type]
            stop_sequence=finish.stop_sequence,
            usage=an.Usage(**usage_of(finish.prompt_tokens, finish.cached_tokens, finish.completion_tokens)),
        ).model_dump(mode="json")
