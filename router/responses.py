"""The Responses API: POST /v1/responses, GET / DELETE /v1/responses/{id},
POST /v1/responses/{id}/cancel and GET /v1/responses/{id}/input_items.

Runs go through the chat models; `modelyard.router.response_input` turns the
request into a chat conversation, `modelyard.router.response_runs` the model's
output into the response and its stream events, and
`modelyard.router.response_service` keeps the store and the background runs.
Stored responses belong to the API key that made them:
any other key gets 404, as for an unknown id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from modelyard.adapters.base import ChatRequest, Constraint, Sampling
from modelyard.router import events as ev
from modelyard.router.agent_plan import agent_runtime
from modelyard.router.deps import get_yard, owner_of, resolve_model
from modelyard.router.errors import APIError, invalid_request, response_not_found
from modelyard.router.file_inputs import attach
from modelyard.router.files import FILES
from modelyard.router.generation import model_output
from modelyard.router.image_inputs import resolve_images
from modelyard.router.limits import (
    check_constraint,
    check_message_count,
    check_prompt,
    limits_for,
    reject_lone_surrogates,
)
from modelyard.router.registry import ModelEntry
from modelyard.router.response_agent import HostedRun, hosted_run
from modelyard.router.response_hosted import AgentRun, shown_item, shown_response
from modelyard.router.response_input import chat_messages, file_parts, image_parts, normalize_input, unread_items
from modelyard.router.response_runs import Event, ResponseRun, new_id
from modelyard.router.response_service import BackgroundRun, ResponsesService, input_errors, model_events
from modelyard.router.response_tools import ToolPlan, invalid_value, plan_tools
from modelyard.router.skill_prompt import skills_section, with_section
from modelyard.router.storage import RUNNING
from modelyard.router.streaming import KEEPALIVE, EventStreamResponse, paced, sse
from modelyard.router.surface import answer, keepalive_interval
from modelyard.router.upstream_passthrough import forward_create, forward_stored, native
from modelyard.schemas import openai as oa
from modelyard.schemas import responses as rs
from pydantic import BaseModel

log = logging.getLogger("modelyard.responses")
router = APIRouter()
ENDPOINT = "/v1/responses"


def get_service(request: Request) -> ResponsesService:
    service: ResponsesService = get_yard(request).responses
    return service


# --- request → chat request -------------------------------------------------


def reject_unsupported(body: rs.CreateResponseRequest) -> None:
    for name, neutral in rs.NOT_SUPPORTED.items():
        allowed = neutral if isinstance(neutral, tuple) else (neutral,)
        if getattr(body, name) not in allowed:
            raise invalid_request(f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter")
    if body.background and body.store is False:
        raise invalid_request("Background responses must be stored: background needs store set to true.", param="background")


def check_settings(body: rs.CreateResponseRequest) -> None:
    """Enum fields kept as strings in the schema, checked here with OpenAI's wording."""
    reasoning = body.reasoning or rs.ReasoningConfig()
    checks = [
        (reasoning.effort, rs.REASONING_EFFORTS, "reasoning.effort"),
        (reasoning.summary, rs.REASONING_SUMMARIES, "reasoning.summary"),
        (reasoning.generate_summary, rs.REASONING_SUMMARIES, "reasoning.generate_summary"),
        (body.service_tier, rs.SERVICE_TIERS, "service_tier"),
    ]
    for value, allowed, param in checks:
        if value is not None and value not in allowed:
            raise invalid_value(value, allowed, param)


def text_constraint(text: rs.TextConfig | None) -> Constraint | None:
    fmt = text.format if text is not None else None
    if isinstance(fmt, rs.TextFormatJSONObject):
        return Constraint(json_schema={"type": "object"})
    if isinstance(fmt, rs.TextFormatJSONSchema):
        return Constraint(json_schema=fmt.schema_)
    return None


def wants_logprobs(body: rs.CreateResponseRequest) -> int | None:
    if rs.LOGPROBS_INCLUDE in (body.include or []) or body.top_logprobs is not None:
        return body.top_logprobs or 0
    return None


def initial_response(body: rs.CreateResponseRequest, entry: ModelEntry, tools: ToolPlan) -> rs.ResponseObject:
    text = body.text or rs.TextConfig()
    fmt = text.format.model_dump(mode="json", by_alias=True, exclude_none=True) if text.format else {"type": "text"}
    choice = body.tool_choice
    return rs.ResponseObject(
        id=new_id("resp"),
        created_at=int(time.time()),
        status="queued" if body.background else "in_progress",
        background=bool(body.background),
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        max_tool_calls=body.max_tool_calls,
        model=entry.id,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        prompt_cache_key=body.prompt_cache_key,
        safety_identifier=body.safety_identifier,
        store=body.store is not False,
        temperature=1.0 if body.temperature is None else body.temperature,
        text={"format": fmt, "verbosity": text.verbosity or "medium"},
        tool_choice=choice.model_dump(mode="json") if isinstance(choice, BaseModel) else (choice or "auto"),
        tools=tools.echo,
        reasoning=body.reasoning.model_dump(mode="json", exclude_none=True) if body.reasoning is not None else None,
        top_logprobs=body.top_logprobs,
        top_p=1.0 if body.top_p is None else body.top_p,
        user=body.user,
        metadata=body.metadata or {},
    )


# --- routes -----------------------------------------------------------------


@router.post(ENDPOINT, response_model=rs.ResponseObject, responses={400: {"model": oa.ErrorResponse}})
async def create_response(body: rs.CreateResponseRequest, request: Request) -> Response:
    service = get_service(request)
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    if native(entry, "responses"):  # its upstreams serve Responses themselves
        return await forward_create(request, entry, "responses", bool(body.stream))
    reject_unsupported(body)
    check_settings(body)
    limits = limits_for(request)
    if isinstance(body.input, list):
        check_message_count(len(body.input), limits, "input")  # cheap, before anything walks them
    reject_lone_surrogates(body)
    owner = owner_of(request)
    if body.store is not False:
        service.checked_store()
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        found = await service.find(body.previous_response_id, owner)
        if found is None:
            raise response_not_found(body.previous_response_id, "previous_response_id")
        previous, previous_items = found
        if previous["status"] in RUNNING:
            raise invalid_request(
                f"The response '{body.previous_response_id}' is still running; wait for it to finish.",
                param="previous_response_id",
            )
        history = previous_items + previous["output"]
    items = history + normalize_input(body.input)
    prompt_items, files = file_parts(items, len(history), request)
    prompt_items = image_parts(prompt_items, len(history))
    attached = await attach(request, files)
    unread = unread_items(items)
    if unread:
        log.warning("left out of the prompt: input items of type %s (tools this server does not run)", ", ".join(unread))
    plan = plan_tools(body, entry.id)
    hosted = hosted_run(body, request, plan, entry.id, history) if plan.hosted else None
    tools = plan.calling
    reasoning_tags = entry.model.reasoning_tags
    skills = await skills_section(request, plan.skills)
    chat_request = ChatRequest(
        messages=with_section(chat_messages(body.instructions, prompt_items, reasoning_tags), skills),
        sampling=Sampling(
            max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p, logprobs=wants_logprobs(body)
        ),
        constraint=text_constraint(body.text),
        tools=tools,
        attached_files=attached,
    )
    check_prompt(chat_request, limits, "input")
    check_constraint(chat_request.constraint, limits, "text.format.schema")
    plan.check(limits)
    await resolve_images(request, entry, chat_request)
    sealed = rs.ENCRYPTED_REASONING_INCLUDE in (body.include or [])
    response = initial_response(body, entry, plan)
    run: ResponseRun
    events: AsyncGenerator[ev.Event, None]
    if hosted is None:
        run = ResponseRun(response, reasoning_tags, tools is not None, plan.targets, sealed)
        events = model_output(model_events(entry, chat_request), run.builder)
    else:
        files_url = f"{str(request.base_url).rstrip('/')}{FILES}"
        run = AgentRun(response, reasoning_tags, tools is not None, plan.targets, sealed,
                       container_id=hosted.container_id, files_url=files_url, include=body.include or [])
        events = await agent_events(request, entry, chat_request, hosted)
    store = body.store is not False

    if body.background:
        background = BackgroundRun(run, owner, items)
        background.publish(run.created())
        try:
            await service.put(owner, run.stored(), items)
        except BaseException:
            await events.aclose()
            raise
        service.launch(background, events)
        if body.stream:
            return EventStreamResponse(frames(background.follow(-1), keepalive_interval(request)))
        return JSONResponse(run.snapshot())

    if body.stream:
        stored = (lambda: service.save(owner, run, items)) if store else None
        return await answer(request, events, run, stream=True, after=stored)
    stored = (lambda: service.put(owner, run.stored(), items)) if store else None
    return await answer(request, events, run, stream=False, after=stored)


async def agent_events(
    request: Request, entry: ModelEntry, chat_request: ChatRequest, hosted: HostedRun
) -> AsyncGenerator[ev.Event, None]:
    """The agent loop's events in the request's container; a container id the caller may not use is a 400
    naming the field that gave it."""
    runtime = agent_runtime(request)
    try:
        events = await runtime.events(
            request, entry, chat_request, hosted.plan, session_id=hosted.container_id, skills=hosted.skills, resume=False
        )
    except APIError as exc:
        if exc.param == "session_id":
            exc.param = hosted.container_param
        raise
    return input_errors(events)


async def frames(events: AsyncIterator[Event], keepalive: float) -> AsyncIterator[str]:
    """A background run's events, with keep-alive comments while it is quiet."""
    # Closed when the client leaves, so that paced's pending read is cancelled at once.
    async with aclosing(paced(events, keepalive)) as quiet:
        async for event in quiet:
            yield KEEPALIVE if event is None else sse(event, event["type"])


def included(request: Request, include: list[str] | None) -> list[str]:
    """A GET's `include` values: repeated `include=`, or `include[]=` as the openai SDK writes them."""
    return [*(include or []), *request.query_params.getlist("include[]")]


async def lookup(request: Request, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    found = await get_service(request).find(response_id, owner_of(request))
    if found is None:
        raise response_not_found(response_id)
    return found


@router.get(ENDPOINT + "/{response_id}", response_model=rs.ResponseObject)
async def get_response(
    response_id: str,
    request: Request,
    stream: bool = False,
    starting_after: int | None = Query(default=None, ge=-1),
    include: list[str] | None = Query(default=None),
) -> Response:
    forwarded = await forward_stored(request, response_id, "GET", stream=stream)
    if forwarded is not None:
        return forwarded
    response, _ = await lookup(request, response_id)
    if not stream:
        return JSONResponse(shown_response(response, included(request, include)))
    background = get_service(request).active.get(response_id)
    if background is None:
        raise invalid_request(
            "Only a background response can be streamed with GET, and only while it runs; "
            "this one has finished: fetch it without stream.",
            param="stream",
        )
    return EventStreamResponse(
        frames(background.follow(-1 if starting_after is None else starting_after), keepalive_interval(request))
    )


@router.post(ENDPOINT + "/{response_id}/cancel", response_model=rs.ResponseObject)
async def cancel_response(response_id: str, request: Request) -> Response:
    forwarded = await forward_stored(request, response_id, "POST", "/cancel")
    if forwarded is not None:
        return forwarded
    response, _ = await lookup(request, response_id)
    if not response.get("background"):
        raise invalid_request("Only responses created with background set to true can be cancelled.")
    service = get_service(request)
    background = service.active.get(response_id)
    if background is not None:
        await service.cancel(background)
        return JSONResponse(background.run.snapshot())
    return JSONResponse(response)  # already finished: cancelling again changes nothing


@router.delete(ENDPOINT + "/{response_id}", response_model=rs.ResponseDeleted)
async def delete_response(response_id: str, request: Request) -> Response:
    forwarded = await forward_stored(request, response_id, "DELETE")
    if forwarded is not None:
        return forwarded
    await lookup(request, response_id)
    service = get_service(request)
    background = service.active.get(response_id)
    if background is not None:
        await service.cancel(background)  # stores its final state, deleted next
    if not await service.delete(response_id, owner_of(request)):
        raise response_not_found(response_id)
    return JSONResponse(rs.ResponseDeleted(id=response_id).model_dump(mode="json"))


@router.get(ENDPOINT + "/{response_id}/input_items", response_model=rs.InputItemList)
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    include: list[str] | None = Query(default=None),
) -> Response:
    forwarded = await forward_stored(request, response_id, "GET", "/input_items")
    if forwarded is not None:
        return forwarded
    _, items = await lookup(request, response_id)
    ordered = items if order == "asc" else list(reversed(items))
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise invalid_request(f"No input item with id '{after}' in this response.", param="after")
        start = ids.index(after) + 1
    shown = included(request, include)
    page = [shown_item(item, shown) for item in ordered[start : start + limit]]
    listing = rs.InputItemList(
        data=page,
        first_id=page[0].get("id") if page else None,
        last_id=page[-1].get("id") if page else None,
        has_more=start + limit < len(ordered),
    )
    return JSONResponse(listing.model_dump(mode="json"))
