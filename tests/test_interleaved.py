"""How the choices of one request (`n`) run: together up to the model's
capacity, their events interleaved as they come, the first failure ending
all of them (router/generation.py `interleaved`). Model-free."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from modelyard.router.events import ContentDelta, Event


def source(choice: int, log: list[str], gate: asyncio.Event | None = None, fail: bool = False) -> Callable[[], AsyncIterator[Event]]:
    async def events() -> AsyncIterator[Event]:
        log.append(f"start {choice}")
        try:
            yield ContentDelta(f"{choice}a", choice=choice)
            if gate is not None:
                await gate.wait()
            if fail:
                raise RuntimeError(f"choice {choice} failed")
            yield ContentDelta(f"{choice}b", choice=choice)
        finally:
            log.append(f"closed {choice}")

    return events


async def collect(width: int, *sources: Callable[[], AsyncIterator[Event]]) -> list[str]:
    from modelyard.router.generation import interleaved

    return [event.text async for event in interleaved(list(sources), width)]  # type: ignore[attr-defined]


def test_width_one_runs_the_choices_one_after_another() -> None:
    log: list[str] = []
    texts = asyncio.run(collect(1, source(0, log), source(1, log)))
    assert texts == ["0a", "0b", "1a", "1b"]
    assert log == ["start 0", "closed 0", "start 1", "closed 1"]


def test_choices_run_together_up_to_the_width() -> None:
    log: list[str] = []

    async def run() -> list[str]:
        first, second = asyncio.Event(), asyncio.Event()
        # Choices 0 and 1 both wait, mid-answer: they are running at the same time, or this never ends.
        task = asyncio.create_task(collect(2, source(0, log, first), source(1, log, second), source(2, log)))
        while "start 1" not in log:
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert "start 2" not in log  # the third waits for room
        second.set()
        while "start 2" not in log:
            await asyncio.sleep(0)
        first.set()
        return await asyncio.wait_for(task, 10)

    texts = asyncio.run(run())
    assert sorted(texts) == ["0a", "0b", "1a", "1b", "2a", "2b"]
    assert texts.index("1b") < texts.index("0b")  # interleaved as they came


def test_the_first_failure_ends_every_choice() -> None:
    log: list[str] = []

    async def run() -> None:
        never = asyncio.Event()
        await collect(3, source(0, log, fail=True), source(1, log, never), source(2, log, never))

    with pytest.raises(RuntimeError, match="choice 0 failed"):
        asyncio.run(run())
    assert {"closed 0", "closed 1", "closed 2"} <= set(log)  # the waiting ones were closed, not left hanging
