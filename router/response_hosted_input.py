"""The hosted tool call items of a conversation's history (an earlier
response's output, by `previous_response_id` or handed back as input) as the
chat messages the model saw when it made them: a call of the tool's function
(router/agent_tools.py FUNCTIONS) and the tool's result.

What each item keeps is what comes back: a search's query and sources (the
result text the model read then is not kept: its answer, next in the
history, says what it took from it), the code and its logs, each command
and its output. Calls OpenAI made with tools this server has not
(a web search that opened a page) are left out.
"""

from __future__ import annotations

import json
from typing import Any

from modelyard.router.agent_tools import CodeOutcome, CommandResult, ShellOutcome

NO_LIMIT = 10**9  # the prompt's own length check bounds what history holds


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _search(item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    action = item.get("action") or {}
    if action.get("type", "search") != "search":
        return None
    queries = action.get("queries") or []
    query = action.get("query") or (queries[0] if queries else "")
    urls = [s["url"] for s in action.get("sources") or [] if isinstance(s, dict) and isinstance(s.get("url"), str)]
    if item.get("status") == "failed":
        text = "The search failed."
    elif urls:
        text = "\n".join(f"[{n}] URL: {url}" for n, url in enumerate(urls, 1))
    else:
        text = f"Searched for {query!r}."
    return _call(item["id"], "web_search", {"query": query}), _result(item["id"], text)


def _code(item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    code = item.get("code") or ""
    outputs = item.get("outputs")
    if outputs is None:
        text = "(the output was not kept)"
    else:
        logs = "".join(o.get("logs", "") for o in outputs if isinstance(o, dict) and o.get("type") == "logs")
        images = [o["url"] for o in outputs if isinstance(o, dict) and o.get("type") == "image" and "url" in o]
        text = CodeOutcome(code=code, stdout=logs).for_model(NO_LIMIT)
        if images:
            text += "\nimages: " + ", ".join(images)
    if item.get("status") == "failed":
        text += "\n(the run failed)"
    return _call(item["id"], "code_interpreter", {"code": code}), _result(item["id"], text)


def _shell_result(item: dict[str, Any], commands: list[str]) -> dict[str, Any]:
    results = []
    for number, content in enumerate(c for c in item.get("output") or [] if isinstance(c, dict)):
        outcome = content.get("outcome") or {}
        timed_out = outcome.get("type") == "timeout"
        results.append(
            CommandResult(
                command=commands[number] if number < len(commands) else "",
                stdout=str(content.get("stdout", "")),
                stderr=str(content.get("stderr", "")),
                exit_code=None if timed_out else outcome.get("exit_code"),
                timed_out=timed_out,
                error="timeout" if timed_out else None,
            )
        )
    return _result(item["call_id"], ShellOutcome(commands=tuple(commands), results=tuple(results)).for_model(NO_LIMIT))


def hosted_call(
    item: dict[str, Any], shell_commands: dict[str, list[str]]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """An item as (the assistant's tool call, the tool message), either of which may be absent, or None to leave
    it out. `shell_commands` carries each shell call's commands to the shell_call_output that follows it."""
    kind = item["type"]
    if kind == "web_search_call":
        return _search(item)
    if kind == "code_interpreter_call":
        return _code(item)
    if kind == "shell_call":
        action = item.get("action") or {}
        commands = [str(c) for c in action.get("commands") or []]
        shell_commands[item["call_id"]] = commands
        return _call(item["call_id"], "shell", {"commands": commands}), None
    return None, _shell_result(item, shell_commands.get(item["call_id"], []))
