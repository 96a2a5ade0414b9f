"""What OpenAI's two chunked streams, chat completions (`chat.completion.chunk`)
and legacy completions (`text_completion`), have in common: the head every
chunk repeats, `"usage": null` on each chunk and one usage chunk at the end
when `stream_options.include_usage` asks for it, `[DONE]` last, and an error
event then `[DONE]` when the model fails midway. Each renderer adds its choices."""

from __future__ import annotations

from typing import Any

from modelyard.router.errors import APIError
from modelyard.router.surface import Frame


class OpenAIChunks:
    def __init__(self, completion_id: str, object_name: str, created: int, model: str, include_usage: bool) -> None:
        self.head: dict[str, Any] = {"id": completion_id, "object": object_name, "created": created, "model": model}
        self.include_usage = include_usage
        self.prompt_tokens = self.completion_tokens = 0
        self.cached_tokens = 0  # of the prompt's tokens, how many were reused from the previous request's cache

    def chunk(self, choice: dict[str, Any]) -> Frame:
        body: dict[str, Any] = {**self.head, "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return Frame(body)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def opening(self) -> list[Frame]:
        return []

    def closing(self) -> list[Frame]:
        frames = [Frame({**self.head, "choices": [], "usage": self.usage()})] if self.include_usage else []
        return frames + [Frame("[DONE]")]

    def failure(self, error: APIError) -> list[Frame]:
        return [Frame(error.body()), Frame("[DONE]")]
