"""Tool calling for models whose chat template knows nothing of tools.

The tools are described in the system prompt in the Hermes format, earlier
calls and results are written back into the conversation as text, and the
model answers with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
blocks, which the router parses. `call_schema` gives the JSON Schema one call
must follow, for adapters that constrain generation.
"""

from __future__ import annotations

import json
from typing import Any

from modelyard.adapters.base import TOOL_CALL_END, TOOL_CALL_START, ToolCalling

SYSTEM_PROMPT = (
    "You are a function calling AI model. You may call one or more functions to assist with the user query. "
    "Don't make assumptions about what values to plug into functions. Here are the available tools: "
    "<tools>\n{tools}\n</tools>\n"
    "For each function call, return a json object with function name and arguments within "
    f"{TOOL_CALL_START}{TOOL_CALL_END} XML tags:\n"
    f'{TOOL_CALL_START}\n{{{{"name": <function-name>, "arguments": <args-json-object>}}}}\n{TOOL_CALL_END}'
)


def functions(tools: ToolCalling) -> list[dict[str, Any]]:
    return [t["function"] for t in tools.tools if t.get("type", "function") == "function"]


def system_prompt(tools: ToolCalling) -> str:
    listed = "\n".join(json.dumps({"type": "function", "function": f}, ensure_ascii=False) for f in functions(tools))
    return SYSTEM_PROMPT.format(tools=listed)


def call_text(name: str, arguments: str | dict[str, Any]) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # keep the client's text as it was
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_START}\n{body}\n{TOOL_CALL_END}"


def as_plain_messages(messages: list[dict[str, Any]], tools: ToolCalling | None) -> list[dict[str, Any]]:
    """Rewrite a conversation with tools so that any chat template can render it.

    The tool list joins the system prompt; an assistant's tool calls become
    its text; tool results become user turns in `<tool_response>` tags.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = [call_text(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
            text = "\n".join(([message["content"]] if message.get("content") else []) + calls)
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"})
        else:
            out.append({"role": role, "content": message.get("content") or ""})
    if tools is not None and tools.tools:
        prompt = system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def call_schema(tools: ToolCalling, *, loose_arguments: bool = False) -> dict[str, Any]:
    """The JSON Schema of one call: {"name": one of the allowed functions,
    "arguments": that function's parameters}. With `loose_arguments`, the
    arguments of non-strict functions may be any object (for schemas a
    grammar compiler cannot handle)."""
    variants = []
    for function in functions(tools):
        if tools.mode == "named" and function["name"] != tools.name:
            continue
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if (loose_arguments and not function.get("strict")) or function["name"] in tools.free_arguments:
            parameters = {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
        )
    if len(variants) == 1:
        return variants[0]
    return {"anyOf": variants}
