"""Which hosted tools one request may call, checked against the config in
force and the caller's key while the surface validates the request: a tool
the config does not enable is a 400 naming it, a key with `agent = false` a
403, more rounds than `[agent] max_tool_rounds` a 400. A request can narrow
what the config allows, never widen it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.router.agent_tools import HostedTool
from modelyard.router.deps import get_yard, request_key
from modelyard.router.errors import APIError, invalid_request
from modelyard.schemas.config import AGENT_TOOLS
from starlette.requests import Request

if TYPE_CHECKING:
    from modelyard.router.agent_runtime import AgentRuntime


@dataclass
class AgentPlan:
    """The hosted tools one request may call, and how (made by `checked_plan`)."""

    tools: tuple[HostedTool, ...]
    max_rounds: int
    forced: str | None = None  # "required", or the hosted tool that round 1 must call
    output_limit: int = 8000  # characters of a result shown to the model
    max_calls: int | None = None  # hosted calls run in all (Responses' max_tool_calls); later ones are not run
    # Most calls of one tool (Anthropic's max_uses): a call past it is refused, not run, and later rounds no
    # longer offer the tool.
    max_uses: dict[str, int] = field(default_factory=dict)
    # web_search keeps only results from allowed_domains (and their subdomains), when given, and drops those
    # from blocked_domains.
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    # The conversation the loop ran, tool exchanges included, for a session to keep (filled as it runs).
    transcript: list[dict[str, Any]] = field(default_factory=list)


def agent_runtime(request: Request) -> AgentRuntime:
    """The server's agentic runtime (`yard.agent`), started with the server."""
    runtime = get_yard(request).agent
    if runtime is None:
        raise APIError(503, "The agentic runtime is not running on this server.", code="agent_unavailable")
    return runtime


def not_enabled(tool: str, param: str) -> APIError:
    return invalid_request(
        f"The hosted tool '{tool}' is not enabled on this server (add it to [agent] tools in the config, or start "
        "the server with `modelyard serve --agent`).",
        param=param,
        code="tool_not_enabled",
    )


def checked_plan(
    request: Request,
    wanted: Sequence[tuple[HostedTool, str]],
    *,
    forced: str | None = None,
    max_rounds: int | None = None,
    rounds_param: str = "max_tool_rounds",
    max_calls: int | None = None,
    allowed_domains: Sequence[str] = (),
) -> AgentPlan | None:
    """The plan of a request that asks for hosted tools (`wanted`: each tool with the param that asked for it),
    or None when it asks for none. Refuses a tool the config does not enable (400), a key without agent
    tools (403), and more rounds than the config allows (400)."""
    if not wanted:
        return None
    config = get_yard(request).generation.loaded.config.agent
    key = request_key(request)
    if key is not None and not key.agent:
        raise APIError(403, f"The API key '{key.name}' may not use hosted tools (agent = false).", code="agent_not_allowed",
                       param=wanted[0][1])
    tools: list[HostedTool] = []
    for tool, param in wanted:
        assert tool in AGENT_TOOLS
        if tool not in config.tools:
            raise not_enabled(tool, param)
        if tool not in tools:
            tools.append(tool)
    if max_rounds is not None and not 1 <= max_rounds <= config.max_tool_rounds:
        raise invalid_request(
            f"{rounds_param} must be between 1 and {config.max_tool_rounds} (the server's [agent] max_tool_rounds); "
            f"got {max_rounds}.",
            param=rounds_param,
        )
    return AgentPlan(
        tools=tuple(tools),
        max_rounds=max_rounds or config.default_tool_rounds,
        forced=forced,
        output_limit=config.max_tool_output_chars,
        max_calls=max_calls,
        allowed_domains=tuple(allowed_domains),
    )
