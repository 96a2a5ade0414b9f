"""Server-sent events and client disconnects.

`EventStreamResponse` sends an async iterator of ready-framed SSE strings
while listening for the client going away; when it does, the iterator is
closed at once, which cancels the model's work in its worker. The same race
serves non-streaming requests through `until_disconnected`. `paced` marks
the quiet stretches of a stream (a long prompt being evaluated), where a
surface sends its keep-alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from modelyard.router.errors import APIError, ClientGone, api_error_from, internal_error
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("modelyard")
T = TypeVar("T")


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event: `data` as JSON (a string goes as it is), under
    an event name when the API uses them (Anthropic, Responses)."""
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {data}\n\n" if event else f"data: {data}\n\n"


DONE = sse("[DONE]")
KEEPALIVE = ": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic


async def paced(events: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """`events`, with a None each time `interval` seconds pass without one.
    Closing this closes `events`."""
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def stream_failure(exc: BaseException, request_id: str | None) -> APIError:
    """The API error a stream reports when it fails after its headers went
    out; anything that is not a known API or model error is logged here, the
    same for every surface."""
    known = api_error_from(exc)
    if known is not None:
        return known
    log.error("stream failed (request id %s)", request_id, exc_info=exc)
    return internal_error(request_id)


def error_event(exc: BaseException, request_id: str | None) -> str:
    """OpenAI's error chunk for a stream that failed after its headers went out."""
    return sse(stream_failure(exc, request_id).body())


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
