"""Server-sent events and client disconnects.

`EventStreamResponse` sends an async iterator of ready-framed SSE strings
while listening for the client going away; when it does, the iterator is
closed at once, which cancels the model's work in its worker. The same race
serves non-streaming requests through `until_disconnected`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from modelyard.router.errors import APIError, ClientGone, api_error_from, internal_error
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("modelyard")
T = TypeVar("T")


def sse(data: Any) -> str:
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n"


DONE = "data: [DONE]\n\n"


def error_event(exc: BaseException, request_id: str | None) -> str:
    """What a stream sends when it fails after its headers went out."""
    error = api_error_from(exc)
    if error is None:
        log.error("stream failed (request id %s)", request_id, exc_info=exc)
        error = internal_error(request_id)
    return sse(error.body())


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class EventStreamResponse(StreamingResponse):
    def __init__(self, events: AsyncIterator[str], headers: dict[str, str] | None = None) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
        )
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        pump_task = asyncio.create_task(pump())
        listen_task = asyncio.create_task(wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({pump_task, listen_task}, return_when=asyncio.FIRST_COMPLETED)
            if pump_task in done:
                pump_task.result()  # re-raise a failure
        except OSError:
            pass  # the client went away while we were writing
        finally:
            for task in (pump_task, listen_task):
                task.cancel()
            await asyncio.gather(pump_task, listen_task, return_exceptions=True)
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()


async def first_item(events: AsyncIterator[T]) -> T:
    """Wait for a stream's first event, so that a failure before any output
    is still answered with a proper status code instead of a 200 stream.
    On failure the stream is closed."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise APIError(500, "The model returned nothing.", code="backend_error") from None
    except BaseException:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        raise


async def choices_in_turn(
    stream: Callable[[Any], AsyncIterator[Any]], requests: list[Any], first: Any, first_events: AsyncIterator[Any]
) -> AsyncIterator[tuple[int, Any]]:
    """The events of one call per choice (`n`), run one after another and
    tagged with the choice's position. The first call's first event was
    fetched already, so that a failure before any output got a status code."""
    events = first_events
    try:
        for position, request in enumerate(requests):
            if position > 0:
                events = stream(request)
                first = await first_item(events)
            yield position, first
            async for event in events:
                yield position, event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first."""
    work_task = asyncio.ensure_future(work)
    listen_task = asyncio.create_task(wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({work_task, listen_task}, return_when=asyncio.FIRST_COMPLETED)
        if work_task in done:
            return work_task.result()
        raise ClientGone
    finally:
        for task in (work_task, listen_task):
            task.cancel()
        await asyncio.gather(work_task, listen_task, return_exceptions=True)
