"""Per-key request limits: `rpm` (a token bucket) and `max_parallel`.

State is kept by key name on one object per app, outside the config
generation, so a reload that keeps a key keeps its counters (and a reload
that changes its `rpm` only changes the bucket's size and refill rate).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from modelyard.schemas.config import ApiKey


@dataclass
class KeyState:
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    capacity: int | None = None
    inflight: int = 0


@dataclass
class Refusal:
    message: str
    retry_after: int  # whole seconds, at least 1


class KeyLimits:
    def __init__(self) -> None:
        self._states: dict[str, KeyState] = {}

    def _state(self, key: ApiKey) -> KeyState:
        state = self._states.get(key.name)
        if state is None:
            state = self._states[key.name] = KeyState(tokens=float(key.rpm or 0), capacity=key.rpm)
        return state

    def acquire(self, key: ApiKey) -> Refusal | None:
        """Count one request against `key`, or say why it must wait. A
        request that got None must call release() when it ends."""
        state = self._state(key)  # in-flight requests are counted even without limits, for a reload that adds one
        now = time.monotonic()
        if key.max_parallel is not None and state.inflight >= key.max_parallel:
            return Refusal(
                f"The API key '{key.name}' has {state.inflight} request(s) in progress, its limit (max_parallel = "
                f"{key.max_parallel}). Wait for one to finish.",
                1,
            )
        if key.rpm is not None:
            rate = key.rpm / 60.0
            if state.capacity != key.rpm:  # changed by a reload: keep what is left, within the new size
                state.capacity = key.rpm
                state.tokens = min(state.tokens, float(key.rpm))
            state.tokens = min(float(key.rpm), state.tokens + (now - state.updated) * rate)
            state.updated = now
            if state.tokens < 1.0:
                wait = (1.0 - state.tokens) / rate
                return Refusal(
                    f"The API key '{key.name}' made more requests than its limit of {key.rpm} per minute. "
                    f"Try again in {math.ceil(wait)} s.",
                    max(1, math.ceil(wait)),
                )
            state.tokens -= 1.0
        state.inflight += 1
        return None

    def release(self, key: ApiKey) -> None:
        state = self._states.get(key.name)
        if state is not None and state.inflight > 0:
            state.inflight -= 1
