"""Responses and Messages forwarded as they are to upstream servers that
serve those APIs themselves (`options.native_apis` of a `backend =
"openai"` model), instead of being translated into chat completions.

The front still does what it does for every model: the caller's key and
its models, the request's validation against the front's wire types,
admission (`max_queue`, `request_timeout`), metrics and the access log.
The body goes upstream as the client sent it, with the upstream's model
name; what comes back (JSON, or each server-sent event of a stream) has
the front's model id put back. A stream that fails midway ends with the
API's own error event. The upstream keeps what the API stores (Responses'
`store`, `previous_response_id`): the front remembers which model made
each response id it forwarded, so that reading, cancelling or deleting that
response reaches the same upstream.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from modelyard.router.deps import get_yard, owner_of, request_key
from modelyard.router.errors import APIError, response_not_found
from modelyard.router.events import Event
from modelyard.router.lifecycle import ModelEntry
from modelyard.router.surface import COMMENT_KEEPALIVE, Frame, answer
from modelyard.router.upstream_handle import served_by_upstreams
from modelyard.schemas.upstream import UpstreamOptions

API_PATHS = {"responses": "/responses", "messages": "/messages"}
# The client's headers that choose API behaviour upstream (Anthropic's version and betas); auth is the front's own.
PASSED_HEADERS = ("anthropic-version", "anthropic-beta", "openai-beta")
REMEMBERED_RESPONSES = 10_000  # response ids → (model, owner), for reading them back; the oldest are forgotten


@dataclass
class NativeCall:
    """One request forwarded as it is: UpstreamHandle's "native" call."""

    method: str  # GET | POST | DELETE
    path: str  # relative to the upstream's base URL ("/responses")
    body: dict[str, Any] | None
    stream: bool = False
    headers: dict[str, str] | None = None  # the client's API headers that pass on (anthropic-version, anthropic-beta)


@dataclass
class NativeEvent:
    """One server-sent event of an upstream's stream, its data parsed."""

    event: str | None
    data: Any


def native(entry: ModelEntry, api: str) -> bool:
    """Whether `entry`'s upstreams serve `api` ("responses", "messages") themselves."""
    if not served_by_upstreams(entry.model):
        return False
    return api in UpstreamOptions.model_validate(entry.model.options).native_apis


class PassThroughRenderer:
    """The surface renderer (router/surface.py) of a forwarded answer: each
    upstream event goes out as it came, and a failure midway as the API's
    error event."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.body: dict[str, Any] = {}
        self.sequence = 0

    def opening(self) -> list[Frame]:
        return []

    def render(self, event: Event | NativeEvent | dict[str, Any]) -> list[Frame]:
        if isinstance(event, NativeEvent):
            if isinstance(event.data, dict) and isinstance(event.data.get("sequence_number"), int):
                self.sequence = event.data["sequence_number"]
            if isinstance(event.data, list):  # data of several lines that is not JSON: each line its own data field
                return [Frame("\ndata: ".join(event.data), event.event)]
            return [Frame(event.data, event.event)]
        if isinstance(event, dict):
            self.body = event
        return []

    def keepalive(self) -> list[Frame]:
        return [COMMENT_KEEPALIVE]

    def closing(self) -> list[Frame]:
        return []

    def failure(self, error: APIError) -> list[Frame]:
        if self.api == "messages":
            return [Frame({"type": "error", "error": error.body("/v1/messages")["error"]}, "error")]
        detail = error.body()["error"]
        self.sequence += 1
        data = {"type": "error", "code": detail.get("code"), "message": detail.get("message"),
                "param": detail.get("param"), "sequence_number": self.sequence}
        return [Frame(data, "error")]

    def result(self) -> dict[str, Any]:
        return self.body


def response_ids(request: Request) -> OrderedDict[str, tuple[str, str]]:
    """The front's memory of forwarded response ids → the model that made them and the key that asked."""
    return get_yard(request).forwarded_responses


def remember(request: Request, response_id: Any, model_id: str) -> None:
    if not isinstance(response_id, str):
        return
    remembered = response_ids(request)
    remembered[response_id] = (model_id, owner_of(request))
    remembered.move_to_end(response_id)
    while len(remembered) > REMEMBERED_RESPONSES:
        remembered.popitem(last=False)


async def forward_create(request: Request, entry: ModelEntry, api: str, stream: bool, suffix: str = "") -> Response:
    """POST the client's own body to the upstream's `api` (+ `suffix`: "/count_tokens"); answer with what it answers."""
    try:
        body = json.loads(await request.body())
    except ValueError:  # the front's wire types parsed it already: this does not happen
        raise APIError(400, "The request body is not JSON.") from None
    if api == "responses" and isinstance(body, dict) and isinstance(body.get("previous_response_id"), str):
        # The upstream knows only the front's one key: who may continue a response is the front's to check.
        earlier = body["previous_response_id"]
        found = response_ids(request).get(earlier)
        if found is None or found[1] != owner_of(request):
            raise response_not_found(earlier, "previous_response_id")
    cap = entry.model.max_output_tokens
    field = "max_output_tokens" if api == "responses" else "max_tokens"
    if cap is not None and isinstance(body, dict) and not suffix:
        # The model's own cap holds on every surface, forwarded ones too.
        asked = body.get(field)
        body[field] = cap if not isinstance(asked, int) else min(asked, cap)
    renderer = PassThroughRenderer(api)
    headers = {name: value for name in PASSED_HEADERS if (value := request.headers.get(name)) is not None}
    events = entry.stream("native", NativeCall("POST", API_PATHS[api] + suffix, body, stream, headers))
    if api == "responses":
        events = _remembering(request, events, entry.id)
    return await answer(request, events, renderer, stream)


async def _remembering(request: Request, events: AsyncIterator[Any], model_id: str) -> AsyncIterator[Any]:
    async with aclosing(events):
        async for item in events:
            data = item.data if isinstance(item, NativeEvent) else item
            if isinstance(data, dict):
                made = data.get("response") if isinstance(data.get("response"), dict) else data
                if made.get("object") == "response":
                    remember(request, made.get("id"), model_id)
            yield item


def forwarded_model(request: Request, response_id: str) -> ModelEntry | None:
    """The upstream model that made a response the front forwarded for this
    caller's key, if the key may still use it and it still forwards Responses."""
    found = response_ids(request).get(response_id)
    if found is None or found[1] != owner_of(request):
        return None
    entry = get_yard(request).generation.lookup(found[0])
    key = request_key(request)
    if entry is None or not native(entry, "responses") or (key is not None and not key.allows(entry.model.names())):
        return None
    return entry


async def forward_stored(request: Request, response_id: str, method: str, suffix: str = "", stream: bool = False) -> Response | None:
    """Read, stream, cancel or delete (`suffix`: "", "/cancel", "/input_items")
    a response the front forwarded, on its model's upstream, with the
    request's query string; None when the front forwarded no such response."""
    entry = forwarded_model(request, response_id)
    if entry is None:
        return None
    query = request.url.query
    path = f"/responses/{response_id}{suffix}" + (f"?{query}" if query else "")
    events = entry.stream("native", NativeCall(method, path, {} if method == "POST" else None, stream))
    answered = await answer(request, events, PassThroughRenderer("responses"), stream)
    if method == "DELETE":
        response_ids(request).pop(response_id, None)
    return answered
