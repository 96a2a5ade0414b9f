"""A reasoning budget: watch a model's output for its reasoning tags and
say when it has thought for long enough (Anthropic's `thinking.budget_tokens`).
The adapter then writes the end tag into the model's context itself."""

from __future__ import annotations

from modelyard.adapters.base import Reasoning


class ReasoningBudget:
    """Fed the text of each generated token; `feed` returns the text to force
    (the end tag) when the tokens written inside the tags reach the budget."""

    def __init__(self, reasoning: Reasoning, inside: bool = False) -> None:
        self.start, self.end = reasoning.tags
        self.budget = reasoning.budget_tokens
        self.inside = inside  # the prompt itself may open the tag (DeepSeek-R1-style templates)
        self.tail = ""  # recent text, enough to find a tag split over tokens
        self.spent = 0

    def opening(self) -> str | None:
        """The end tag to force before the first token, for a prompt that opens the tag with a budget of 0."""
        return self._close() if self.inside and self.budget == 0 else None

    def feed(self, text: str) -> str | None:
        if self.budget is None:
            return None
        self.tail += text
        if not self.inside:
            at = self.tail.find(self.start)
            if at < 0:
                self.tail = self.tail[-len(self.start) :]
                return None
            self.inside, self.spent = True, 0
            self.tail = self.tail[at + len(self.start) :]
            if self.end in self.tail:  # opened and closed within one token
                self._reset()
                return None
            return self._close() if self.budget == 0 else None
        if self.end in self.tail:
            self._reset()
            return None
        self.tail = self.tail[-len(self.end) :]
        self.spent += 1
        return self._close() if self.spent >= self.budget else None

    def _reset(self) -> None:
        self.inside, self.tail = False, ""

    def _close(self) -> str:
        self.inside, self.tail = False, ""
        return self.end + "\n\n"
