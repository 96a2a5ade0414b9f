"""State behind the Responses API: the response store and this server's
background runs, owned by the Yard (`get_yard(request).responses`).

Background runs are asyncio tasks kept here while they run; their events
stay in memory so that a client can stream them as they come (`stream`
with `background`, or `GET ...?stream=true`), and the final state is stored
when they end. Cancelling the task closes the model's stream, which cancels
the generation in the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modelyard.adapters.base import ChatRequest
from modelyard.adapters.sources import cache_dir
from modelyard.router.config import LoadedConfig
from modelyard.router.errors import APIError, api_error_from
from modelyard.router.model_errors import ModelError
from modelyard.router.registry import ModelEntry
from modelyard.router import events as ev
from modelyard.router.response_runs import Event, ResponseRun
from modelyard.router.storage import STOPPED_MESSAGE, ResponseStore
from modelyard.router.streaming import stream_failure
from modelyard.router.surface import aclose

T = TypeVar("T")

log = logging.getLogger("modelyard.responses")


def storage_path(loaded: LoadedConfig) -> Path:
    """`[storage] path`: the SQLite file of stored responses, files and skills."""
    configured = loaded.config.storage.path
    if configured is None:
        return cache_dir() / "responses.sqlite3"
    return config_relative(loaded, configured)


def storage_folder(loaded: LoadedConfig, configured: str | None, default_name: str) -> Path:
    """A `[storage]` folder key's path, or `default_name` beside the database file."""
    if configured is None:
        return storage_path(loaded).parent / default_name
    return config_relative(loaded, configured)


def config_relative(loaded: LoadedConfig, configured: str) -> Path:
    path = Path(configured).expanduser()
    return path if path.is_absolute() else loaded.base_dir / path


@dataclass
class BackgroundRun:
    run: ResponseRun
    owner: str
    input_items: list[dict[str, Any]]
    events: list[Event] = field(default_factory=list)
    done: bool = False
    task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, events: list[Event]) -> None:
        self.events += events
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def follow(self, after: int) -> AsyncIterator[Event]:
        """The run's events with a sequence number above `after`, live until it ends."""
        index = after + 1
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.done:
                return
            await self._wake.wait()


class ResponsesService:
    """Stored responses and this server's background runs."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.active: dict[str, BackgroundRun] = {}
        self.stopping = False
        self.unavailable: str | None = "the server is starting"

    async def start(self) -> None:
        try:
            swept = await self.store.open()
        except Exception as exc:
            # Chat and the other surfaces keep working; stored responses do not.
            self.unavailable = f"{type(exc).__name__}: {exc}"
            log.error("cannot open the response store %s: %s", self.store.path, self.unavailable)
            return
        self.unavailable = None
        log.info("responses are stored in %s", self.store.path)
        if swept:
            log.warning("marked %d response(s) failed: their server stopped before they finished", swept)

    def checked_store(self) -> ResponseStore:
        """The store, or a 500 saying why it is unavailable."""
        if self.unavailable is not None:
            raise APIError(
                500,
                f"Stored responses are unavailable: the response store could not be opened ({self.unavailable}). "
                "Send store: false, or fix [storage] path.",
                code="storage_unavailable",
            )
        return self.store

    async def put(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        await self.checked_store().put(owner, response, input_items)

    async def delete(self, response_id: str, owner: str) -> bool:
        return await self.checked_store().delete(response_id, owner)

    async def stop(self) -> None:
        self.stopping = True
        runs = list(self.active.values())
        for background in runs:
            if background.task is not None:
                background.task.cancel()
        await asyncio.gather(*(b.task for b in runs if b.task is not None), return_exceptions=True)
        for background in runs:
            await self._settle(background)
        await self.store.close()

    async def find(self, response_id: str, owner: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        background = self.active.get(response_id)
        if background is not None:
            return (background.run.stored(), background.input_items) if background.owner == owner else None
        return await self.checked_store().get(response_id, owner)

    async def save(self, owner: str, run: ResponseRun, input_items: list[dict[str, Any]]) -> None:
        try:
            await self.put(owner, run.stored(), input_items)
        except Exception:
            log.exception("could not store response %s", run.id)

    def launch(self, background: BackgroundRun, events: AsyncGenerator[ev.Event, None]) -> None:
        """Run `events` (the model's typed events, or the agent loop's) into the background response."""
        self.active[background.run.id] = background
        background.task = asyncio.create_task(self._run(background, events), name=f"response-{background.run.id}")

    async def _run(self, background: BackgroundRun, events: AsyncGenerator[ev.Event, None]) -> None:
        run = background.run
        try:
            background.publish(run.started())
            async for event in events:
                background.publish(run.apply(event))
        except asyncio.CancelledError:
            pass  # settled below: cancelled, or failed when the server stops
        except Exception as exc:
            background.publish(run.fail(stream_failure(exc, run.id)))
        finally:
            await events.aclose()
            await self._settle(background)

    async def _settle(self, background: BackgroundRun) -> None:
        """Store a run's final state and forget it. A task cancelled before
        it ever ran is settled by whoever cancelled it."""
        if background.done:
            return
        background.done = True
        run = background.run
        if not run.terminal:
            background.publish(run.fail(APIError(500, STOPPED_MESSAGE)) if self.stopping else run.cancel())
        await self.save(background.owner, run, background.input_items)
        background.publish([])
        self.active.pop(run.id, None)

    async def cancel(self, background: BackgroundRun) -> None:
        if background.task is not None and not background.task.done():
            background.task.cancel()
            await asyncio.wait({background.task})
        await self._settle(background)


def model_events(entry: ModelEntry, chat_request: ChatRequest) -> AsyncGenerator[Any, None]:
    """The model's events; errors about the conversation name `input`, not chat's `messages`."""
    return input_errors(entry.stream("chat", chat_request))


async def input_errors(events: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """`events`, with a model's error about chat's `messages` naming the Responses `input` instead."""
    try:
        async for item in events:
            yield item
    except (APIError, ModelError) as exc:
        error = api_error_from(exc)
        assert error is not None
        if error.param == "messages":
            error.param = "input"
        raise error from None
    finally:
        await aclose(events)
