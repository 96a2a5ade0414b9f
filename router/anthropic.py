"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API
over the same chat models. Errors on these routes take Anthropic's shape
(router/errors.py picks it by path)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from modelyard.adapters.base import ChatRequest, ToolCalling
from modelyard.router.agent_plan import AgentPlan, agent_runtime
from modelyard.router.agent_sessions import SessionStore
from modelyard.router.agent_tools import FUNCTIONS
from modelyard.router.anthropic_prompt import backend_request, document_blocks, output_schema
from modelyard.router.anthropic_render import ENDPOINT, MessageRenderer
from modelyard.router.anthropic_server_blocks import ServerToolRenderer
from modelyard.router.anthropic_server_tools import container_id, server_tool_plan
from modelyard.router.deps import get_yard, resolve_model
from modelyard.router.errors import APIError
from modelyard.router.file_inputs import attach
from modelyard.router.generation import ChoiceBuilder, model_output
from modelyard.router.image_inputs import resolve_images
from modelyard.router.limits import (
    check_constraint,
    check_message_count,
    check_prompt,
    check_schemas,
    limits_for,
    reject_lone_surrogates,
)
from modelyard.router.registry import ModelEntry
from modelyard.router.skill_prompt import skills_section, with_section
from modelyard.router.skill_requests import container_skills
from modelyard.router.surface import answer
from modelyard.router.upstream_passthrough import forward_create, native
from modelyard.schemas import anthropic as an
from modelyard.schemas.config import LimitsConfig

__all__ = ["ENDPOINT", "MessageRenderer", "router"]

log = logging.getLogger("modelyard.anthropic")
router = APIRouter()


async def checked_request(body: an.MessagesRequest, request: Request, entry: ModelEntry,
                          plan: AgentPlan | None = None) -> ChatRequest:
    """The backend request (with its documents' text in the prompt, its images read for a model that
    takes them, and the container's skills in its system prompt), once the body is within `[limits]`."""
    reasoning_tags = entry.model.reasoning_tags
    limits = limits_for(request)
    check_message_count(len(body.messages), limits, "messages")  # cheap, before anything walks them
    reject_lone_surrogates(body)
    attached = await attach(request, document_blocks(body))
    agent = get_yard(request).generation.loaded.config.agent
    chat_request = backend_request(body, reasoning_tags, plan, agent.max_tool_output_chars)
    chat_request.attached_files = attached
    skills = await skills_section(request, container_skills(body.container))
    chat_request.messages = with_section(chat_request.messages, skills)
    check_prompt(chat_request, limits, "messages")
    if chat_request.tools is not None:
        chat_request.tools.free_arguments = checked_tool_schemas(body, limits)
    schema = output_schema(body)
    if schema is not None:
        check_constraint(chat_request.constraint, limits, schema[1])
    await resolve_images(request, entry, chat_request)
    return chat_request


def checked_tool_schemas(body: an.MessagesRequest, limits: LimitsConfig) -> list[str]:
    """Check each custom tool's input_schema against `[limits]`, and return the
    tools whose calls the grammar leaves free: a tool that is not `strict` and
    whose schema is over the limits (Claude Code's Workflow tool allows a
    524,288-character script) is not refused; the model still sees its schema,
    and its arguments are held to be a JSON object only."""
    free: list[str] = []
    within: list[tuple[Any, str]] = []
    for index, tool in enumerate(body.tools or []):
        if not isinstance(tool, an.Tool):
            continue
        where = f"tools.{index}.input_schema"
        try:
            check_schemas([(tool.input_schema, where)], limits)
        except APIError as exc:
            if tool.strict or exc.code != "limit_exceeded":
                raise
            log.info("tool %s: its input_schema is over the server's limits (%s); its arguments are not constrained", tool.name, exc.message)
            free.append(tool.name)
            continue
        within.append((tool.input_schema, where))
    check_schemas(within, limits)
    return free


@router.post(ENDPOINT, response_model=an.Message)
async def create_message(body: an.MessagesRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    if native(entry, "messages"):  # its upstreams serve Messages themselves
        return await forward_create(request, entry, "messages", bool(body.stream))
    plan = server_tool_plan(body, request)
    chat_request = await checked_request(body, request, entry, plan)
    show_thinking = not (isinstance(body.thinking, (an.ThinkingEnabled, an.ThinkingAdaptive)) and body.thinking.display == "omitted")
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    if plan is not None:
        idle = get_yard(request).generation.loaded.config.agent.session_idle
        renderer: MessageRenderer = ServerToolRenderer(message_id, entry.id, plan, show_thinking, idle)
        runs_code = bool({"code_interpreter", "shell"} & set(plan.tools))
        # The container's skills go into the session's folder when code can read them.
        skills = container_skills(body.container) if runs_code else []
        # A run that may execute code gets a kept session, so that the container it returns can be reused.
        session_id = container_id(body) or (SessionStore.new_id() if runs_code else None)
        runtime = agent_runtime(request)
        agent = await runtime.events(request, entry, chat_request, plan, session_id=session_id, skills=skills)
        return await answer(request, agent, renderer, bool(body.stream))
    builder = ChoiceBuilder(0, entry.model.reasoning_tags, chat_request.tools is not None)
    renderer = MessageRenderer(message_id, entry.id, show_thinking)
    events = model_output(entry.stream("chat", chat_request), builder)
    return await answer(request, events, renderer, bool(body.stream))


@router.post(ENDPOINT + "/count_tokens")
async def count_tokens(body: an.CountTokensRequest, request: Request) -> dict[str, int]:
    entry = resolve_model(request, body.model, "chat", ENDPOINT + "/count_tokens")
    if native(entry, "messages"):
        return await forward_create(request, entry, "messages", False, "/count_tokens")  # type: ignore[return-value]
    plan = server_tool_plan(body, request)
    chat_request = await checked_request(body, request, entry, plan)
    if plan is not None:  # the prompt of the first round offers the hosted tools, after the custom ones
        hosted = [{"type": "function", "function": FUNCTIONS[tool]} for tool in plan.tools]
        custom = chat_request.tools
        chat_request.tools = replace(custom, tools=custom.tools + hosted) if custom else ToolCalling(hosted, mode="auto")
    count: int | None = None
    async for item in entry.stream("count_tokens", chat_request):
        count = item
    if count is None:
        raise APIError(500, "The model could not count the tokens.")
    return {"input_tokens": count}
