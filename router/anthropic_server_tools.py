"""Anthropic's server tools on the agentic runtime, the request side: which
server tools of a Messages request this server runs (`web_search_*` → the
hosted web_search, `code_execution_20250522` → code_interpreter,
`code_execution_20250825` → its bash_code_execution, on the shell tool), the
plan they make (router/agent_plan.py), and the server tool blocks of an
assistant turn sent back, as the prompt's tool calls and tool results.

The model sees the hosted tools as functions named as router/agent_tools.py
names them; the wire names them as Anthropic does (WIRE_NAMES). What the
response shows of a run is in router/anthropic_server_blocks.py.

`code_execution_20250825` also gives Anthropic's models a text editor
(`text_editor_code_execution`): this server offers no such tool (the model
edits files with bash), and refuses such blocks in a history.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from fastapi import Request
from modelyard.router.agent_plan import AgentPlan, checked_plan
from modelyard.router.agent_tools import (
    CodeOutcome,
    CommandResult,
    HostedTool,
    SearchOutcome,
    SearchSource,
    ShellOutcome,
    cut,
)
from modelyard.router.errors import APIError, invalid_request
from modelyard.schemas import anthropic as an

WEB_SEARCH_TYPE = re.compile(r"web_search_\d{8}")  # web_search_20250305, web_search_20260209, ...
CODE_TYPES: dict[str, HostedTool] = {"code_execution_20250522": "code_interpreter", "code_execution_20250825": "shell"}
# The server_tool_use name of each hosted tool, and the tool a name sent back stands for.
WIRE_NAMES: dict[HostedTool, str] = {"web_search": "web_search", "code_interpreter": "code_execution",
                                     "shell": "bash_code_execution"}
HOSTED_OF = {name: tool for tool, name in WIRE_NAMES.items()}
TEXT_EDITOR = "text_editor_code_execution"


def hosted_tool(tool: an.ServerTool) -> HostedTool | None:
    """The hosted tool a server tool runs on here, or None for one this server does not run."""
    if WEB_SEARCH_TYPE.fullmatch(tool.type):
        return "web_search"
    return CODE_TYPES.get(tool.type)


def wire_name(tool: HostedTool) -> str:
    return WIRE_NAMES[tool]


def encoded(text: str) -> str:
    """An opaque field of ours (a search result's encrypted_content): the text, base64-encoded."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decoded(value: Any) -> str | None:
    """What `encoded` made, or None for a value it did not make (Anthropic's own encrypted_content)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def container_id(body: an.MessagesRequest) -> str | None:
    """The container (this server's session) a request reuses: `container` as an id, or its `id`."""
    container = body.container
    return container if isinstance(container, str) else container.id if container is not None else None


def server_tool_plan(body: an.MessagesRequest, request: Request) -> AgentPlan | None:
    """The plan of a request whose server tools this server runs, or None when it has none (or
    tool_choice is "none"). A server tool the config does not enable is a 400 naming it, a key with
    `agent = false` a 403 (checked_plan)."""
    choice = body.tool_choice
    if choice is not None and choice.type == "none":
        return None
    wanted: list[tuple[HostedTool, str]] = []
    types: dict[HostedTool, str] = {}  # each hosted tool, by the server tool type that asked for it
    named: dict[str, HostedTool] = {}  # by the server tool's name ("web_search", "code_execution")
    max_uses: dict[str, int] = {}
    allowed: list[str] = []
    blocked: list[str] = []
    for index, tool in enumerate(body.tools or []):
        hosted = hosted_tool(tool) if isinstance(tool, an.ServerTool) else None
        if hosted is None:
            continue
        assert isinstance(tool, an.ServerTool)
        param = f"tools.{index}"
        name = "web_search" if hosted == "web_search" else "code_execution"
        if tool.name != name:
            raise invalid_request(f"{param}.name: a {tool.type} tool is named '{name}', not '{tool.name}'.",
                                  param=f"{param}.name")
        if name in named:
            raise invalid_request(f"{param}: the request has two tools named '{name}'.", param=param)
        named[name], types[hosted] = hosted, tool.type
        wanted.append((hosted, param))
        if hosted == "web_search":
            if tool.allowed_domains and tool.blocked_domains:
                raise invalid_request(f"{param}: send either allowed_domains or blocked_domains, not both.",
                                      param=f"{param}.allowed_domains")
            if tool.max_uses is not None:
                max_uses["web_search"] = tool.max_uses
            allowed, blocked = list(tool.allowed_domains or []), list(tool.blocked_domains or [])
    if not wanted:
        return None
    clash = {tool.name for tool in body.tools or [] if isinstance(tool, an.Tool)} & set(types)
    if clash:
        raise invalid_request(f"The custom tool name '{min(clash)}' is the name this server gives a hosted "
                              "tool of this request; rename the custom tool.", param="tools")
    forced: str | None = None
    if choice is not None and choice.type == "any":
        forced = "required"
    elif choice is not None and choice.type == "tool" and choice.name in named:
        forced = named[choice.name]
    try:
        plan = checked_plan(request, wanted, forced=forced)
    except APIError as exc:
        if exc.code != "tool_not_enabled":
            raise
        hosted = next(tool for tool, param in wanted if param == exc.param)
        raise invalid_request(
            f"The server tool '{types[hosted]}' ({exc.param}) runs on the hosted tool '{hosted}', which is not "
            "enabled on this server (add it to [agent] tools in the config, or start the server with "
            "`modelyard serve --agent`).",
            param=exc.param,
            code=exc.code,
        ) from None
    assert plan is not None
    plan.max_uses = max_uses
    plan.allowed_domains, plan.blocked_domains = tuple(allowed), tuple(blocked)
    return plan


# --- an assistant turn sent back ----------------------------------------------


def model_call_id(tool_use_id: str) -> str:
    """The model's call id behind a server_tool_use id (router/anthropic_server_blocks.py made one from the other):
    a turn sent back reads as the loop's own transcript of it (router/agent_sessions.py, Session.resumed)."""
    return "call_" + tool_use_id.removeprefix("srvtoolu_") if tool_use_id.startswith("srvtoolu_") else tool_use_id


def history_call(block: an.ServerToolUseBlock, where: str) -> dict[str, Any]:
    """A server_tool_use block sent back, as the tool call the model made."""
    tool = HOSTED_OF.get(block.name)
    if tool is None:
        runs = ", ".join(WIRE_NAMES.values())
        why = " (this server's code execution has no text editor: the model edits files with bash)" if block.name == TEXT_EDITOR else ""
        raise invalid_request(f"{where}: server_tool_use blocks of '{block.name}' are not supported here{why}; this "
                              f"server runs {runs}.", param=f"{where}.name")
    arguments: dict[str, Any] = dict(block.input)
    if tool == "shell":
        command = arguments.get("command")
        arguments = {"commands": [command] if isinstance(command, str) else []}
    function = {"name": tool, "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {"id": model_call_id(block.id), "type": "function", "function": function}


def history_result(block: an.ServerToolResultBlock, inputs: dict[str, dict[str, Any]], limit: int,
                   where: str) -> dict[str, Any]:
    """A server tool's result block sent back, as the tool message the model read (rebuilt from the block:
    search results keep their text in encrypted_content)."""
    call = inputs.get(block.tool_use_id, {})
    content = block.content
    text: str
    if block.type == "web_search_tool_result":
        query = str(call.get("query", ""))
        if isinstance(content, dict):
            text = SearchOutcome(query=query, error=str(content.get("error_code", "unavailable"))).for_model(limit)
        else:
            sources = tuple(
                SearchSource(url=str(r.get("url", "")), title=str(r.get("title", "")),
                             text=decoded(r.get("encrypted_content")) or "")
                for r in content
            )
            text = SearchOutcome(query=query, sources=sources).for_model(limit)
    elif block.type == "code_execution_tool_result":
        code = str(call.get("code", ""))
        text = _code_text(content, code, limit)
    elif block.type == "bash_code_execution_tool_result":
        command = str(call.get("command", ""))
        text = _bash_text(content, command, limit)
    else:
        raise invalid_request(f"{where}: {block.type} blocks are not supported here (this server's code execution "
                              "has no text editor).", param=f"{where}.type")
    return {"role": "tool", "tool_call_id": model_call_id(block.tool_use_id), "content": text}


def _output_files(result: dict[str, Any]) -> str:
    ids = [str(item.get("file_id")) for item in result.get("content") or [] if isinstance(item, dict)]
    return "\nfiles written: " + ", ".join(ids) if ids else ""


def _code_text(content: list[dict[str, Any]] | dict[str, Any], code: str, limit: int) -> str:
    if not isinstance(content, dict) or content.get("type") != "code_execution_result":
        error = content.get("error_code", "unavailable") if isinstance(content, dict) else "unavailable"
        return CodeOutcome(code=code, error=str(error)).for_model(limit)
    outcome = CodeOutcome(code=code, stdout=str(content.get("stdout", "")), stderr=str(content.get("stderr", "")))
    return cut(outcome.for_model(limit) + _output_files(content), limit)


def _bash_text(content: list[dict[str, Any]] | dict[str, Any], command: str, limit: int) -> str:
    if not isinstance(content, dict) or content.get("type") != "bash_code_execution_result":
        error = content.get("error_code", "unavailable") if isinstance(content, dict) else "unavailable"
        return ShellOutcome(commands=(command,), error=str(error)).for_model(limit)
    code = content.get("return_code")
    result = CommandResult(command, str(content.get("stdout", "")), str(content.get("stderr", "")),
                           code if isinstance(code, int) else None)
    return cut(ShellOutcome(commands=(command,), results=(result,)).for_model(limit) + _output_files(content), limit)
