"""Which hosted tools a Responses request runs, and in which container.

A request's `web_search` (and its preview and dated names), `code_interpreter`
and container `shell` tools become the agent loop's plan (router/agent_plan.py
checks them against the config and the key: a tool the config does not
enable is a 400 naming it, a key with `agent = false` a 403), with two
exceptions that keep working clients working:

- a web search tool the config does not enable is left out of the prompt with
  a warning, as before this server ran tools: Codex CLI sends
  `{"type": "web_search", "external_web_access": false}` with every request
  (tests/data/codex), and would fail on every turn otherwise. So is one
  with `external_web_access: false` when the provider is not the offline
  `local` one: the client asked for no live web access;
- a `container_auto` shell with skills, when the config does not enable the
  shell, still brings its skills into the system prompt only, as before.

A container is a session of the agent runtime (its working folder and Python
state): `container: "cntr_…"` (code interpreter) or a `container_reference`
(shell) names one; `{"type": "auto"}` / `container_auto` reuses the container
of the last hosted call in the conversation's history, as OpenAI's auto mode
does, or starts a new one (`cntr_<hex>`, SessionStore.new_id). The item's `container_id` hands it
back to the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from modelyard.router.agent_plan import AgentPlan, checked_plan
from modelyard.router.agent_sessions import SessionStore
from modelyard.router.agent_tools import HostedTool
from modelyard.router.deps import get_yard, request_key
from modelyard.router.errors import invalid_request
from modelyard.router.response_tools import ToolPlan
from modelyard.router.skill_requests import SkillRequest, shell_skills
from modelyard.schemas import responses as rs
from modelyard.schemas import responses_hosted as hs
from modelyard.schemas.skills import ContainerAuto, ContainerReference, ShellToolParam
from starlette.requests import Request

log = logging.getLogger("modelyard.responses")

CHOSEN: dict[str, HostedTool] = {
    **{name: "web_search" for name in hs.WEB_SEARCH_TYPES},
    "code_interpreter": "code_interpreter",
    "shell": "shell",
}


@dataclass
class HostedRun:
    """What the agent loop runs for one request."""

    plan: AgentPlan
    container_id: str  # the session the code and commands run in
    container_param: str  # the request field that chose it (for errors about it)
    skills: list[SkillRequest] = field(default_factory=list)  # the container shell's, unpacked into the session


def last_container(history: list[dict[str, Any]]) -> str | None:
    """The container of the conversation's last hosted code or shell call."""
    for item in reversed(history):
        if item.get("type") == "code_interpreter_call" and isinstance(item.get("container_id"), str):
            return str(item["container_id"])
        environment = item.get("environment")
        if item.get("type") == "shell_call" and isinstance(environment, dict) and isinstance(environment.get("container_id"), str):
            return str(environment["container_id"])
    return None


def hosted_run(
    body: rs.CreateResponseRequest, request: Request, tools: ToolPlan, model: str, history: list[dict[str, Any]]
) -> HostedRun | None:
    """The request's hosted tools as the agent loop's plan, or None when none runs (then `tools` is settled for
    the client's tools alone)."""
    config = get_yard(request).generation.loaded.config.agent
    wanted: list[tuple[HostedTool, str]] = []
    containers: list[tuple[str, str]] = []  # (container id, param) named by the request
    domains: list[str] = []
    skills: list[SkillRequest] = []
    dropped: list[str] = []
    key = request_key(request)
    searches = "web_search" in config.tools and (key is None or key.agent)
    for param, tool in tools.hosted:
        if isinstance(tool, hs.WebSearchToolParam):
            if not searches or (tool.external_web_access is False and config.search.provider != "local"):
                dropped.append(tool.type)
                continue
            wanted.append(("web_search", param))
            allowed = tool.filters.allowed_domains if tool.filters is not None else None
            domains += [d.strip().lower() for d in allowed or [] if d.strip()]
        elif isinstance(tool, hs.CodeInterpreterToolParam):
            wanted.append(("code_interpreter", param))
            if isinstance(tool.container, str):
                containers.append((tool.container, f"{param}.container"))
            elif tool.container.file_ids:
                raise invalid_request(
                    "container.file_ids is not supported by this server: upload the files, then have the code read "
                    "them from /v1/files, or write them into the container with a first call.",
                    param=f"{param}.container.file_ids",
                    code="unsupported_parameter",
                )
        else:
            assert isinstance(tool, ShellToolParam)
            environment = tool.environment
            if "shell" not in config.tools and isinstance(environment, ContainerAuto) and environment.skills:
                continue  # its skills reach the system prompt (plan_tools); no shell runs
            wanted.append(("shell", param))
            if isinstance(environment, ContainerReference):
                containers.append((environment.container_id, f"{param}.environment.container_id"))
            skills += shell_skills(tool, param, model, required=False)
    if dropped:
        tools.dropped += dropped
        log.warning("left out of the prompt: tools of type %s (web search is not enabled on this server or for this "
                    "key, or the request allows no live web access)", ", ".join(sorted(set(dropped))))
    choice = body.tool_choice
    forced = _forced(choice, wanted, dropped, request)
    if not wanted or choice == "none":
        tools.settle(body, agentic=False)
        return None
    tools.settle(body, agentic=True)
    clash = {tool for tool, _ in wanted} & set(tools.targets)
    if clash:
        raise invalid_request(f"The function name '{sorted(clash)[0]}' is the name of a hosted tool of this request.",
                              param="tools")
    plan = checked_plan(request, wanted, forced=forced, max_calls=body.max_tool_calls, allowed_domains=domains)
    assert plan is not None
    distinct = {container for container, _ in containers}
    if len(distinct) > 1:
        raise invalid_request(
            "The code interpreter and the shell of one request run in one container on this server; name the same "
            f"container for both (got {', '.join(sorted(distinct))}).",
            param=containers[1][1],
        )
    if containers:
        container_id, container_param = containers[0]
    else:
        container_id, container_param = last_container(history) or SessionStore.new_id(), "tools"
    return HostedRun(plan, container_id, container_param, skills)


def _forced(choice: Any, wanted: list[tuple[HostedTool, str]], dropped: list[str], request: Request) -> str | None:
    """What round 1 must call: "required", or the hosted tool a hosted tool_choice names."""
    if choice == "required":
        return "required"
    if not isinstance(choice, hs.HostedToolChoice):
        return None
    tool = CHOSEN[choice.type]
    if tool in (name for name, _ in wanted):
        return tool
    if tool == "web_search" and dropped:
        # Forced, a search that was left out is refused: not enabled (400), not for this key (403) ...
        checked_plan(request, [("web_search", "tool_choice")])
        raise invalid_request(  # ... or no live web access asked for, and the provider is on the web
            "tool_choice forces web_search, but its tool says external_web_access: false and this server's search "
            "provider is on the web.",
            param="tool_choice",
        )
    raise invalid_request(
        f"tool_choice names the hosted tool '{choice.type}', which is not among this request's tools.", param="tool_choice"
    )
