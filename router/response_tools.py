"""The Responses request's tools as the model sees them, and the way back.

A chat model knows one kind of tool: a function with JSON arguments. So
function tools pass as they are; the functions (and custom tools) of a
`namespace` tool are flattened into functions named `namespace.name`; a
`custom` tool becomes a function taking `{"input": "<text>"}` (a `regex`
grammar enforced as the string's pattern; a `lark` grammar cannot be
enforced inside a JSON string, so it is shown to the model in the
description); `local_shell` becomes a `local_shell` function taking the
command. `targets` maps each name the model may call back to what the
client declared, so that its calls come back as `function_call` (with
`namespace`), `custom_tool_call` or `local_shell_call` items; the arguments
of a custom or local shell call become the item's `input` or `action` here
(`custom_input`, `shell_action`), and such items in a conversation's history
become arguments again (`custom_arguments`, `shell_arguments`).

The hosted tools this server runs (web search, code interpreter, a shell
in a container) are collected in `hosted` for router/response_agent.py,
which plans them for the agent loop. Other hosted tools (image generation,
MCP, tool search) are left out of the prompt with a warning in the log;
those whose absence would change what the answer means (file search,
computer use, ...) are refused with OpenAI's own wording for a model
without them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from modelyard.adapters.base import ToolCalling
from modelyard.router.errors import invalid_request
from modelyard.router.limits import check_schemas
from modelyard.router.skill_requests import SkillRequest, shell_skills
from modelyard.schemas import responses as rs
from modelyard.schemas import responses_hosted as hs
from modelyard.schemas.skills import ContainerAuto, ContainerReference, ShellToolParam
from modelyard.schemas.config import LimitsConfig

log = logging.getLogger("modelyard.responses")

# Hosted tools this server does not run, left out of the prompt.
DROPPED_TOOLS = (
    "image_generation",
    "mcp",
    "tool_search",
)
# Hosted tools refused: OpenAI's "Hosted tool '...' is not supported with <model>."
REFUSED_TOOLS = (
    "file_search",
    "computer",
    "computer_use",
    "computer_use_preview",
    "apply_patch",
    "programmatic_tool_calling",
)
CLIENT_TOOLS = ("function", "custom", "namespace", "local_shell", "shell")
HOSTED_TOOLS = (*hs.WEB_SEARCH_TYPES, "code_interpreter")
LOCAL_SHELL = "local_shell"
LOCAL_SHELL_PARAMETERS = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "The command and its arguments."},
        "workdir": {"type": "string", "description": "The directory to run it in."},
        "timeout_ms": {"type": "integer", "description": "How long it may run, in milliseconds."},
    },
    "required": ["command"],
}


def supported_values(values: tuple[str, ...] | list[str]) -> str:
    """OpenAI's list: 'a', 'b', and 'c'."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def invalid_value(value: Any, values: tuple[str, ...] | list[str], param: str) -> Any:
    """OpenAI's error for a value outside an enum."""
    return invalid_request(
        f"Invalid value: '{value}'. Supported values are: {supported_values(values)}.", param=param, code="invalid_value"
    )


HostedParam = hs.WebSearchToolParam | hs.CodeInterpreterToolParam | ShellToolParam


def container_shell(tool: ShellToolParam) -> bool:
    """A shell that runs in a container on the server (not the client's own `local` shell)."""
    return isinstance(tool.environment, ContainerAuto | ContainerReference)


@dataclass(frozen=True)
class ToolTarget:
    """What a name the model calls stands for on the client's side."""

    kind: Literal["function", "custom", "local_shell"]
    name: str
    namespace: str | None = None


def model_name(name: str, namespace: str | None) -> str:
    """The name the model sees and calls: namespaced tools are `namespace.name`."""
    return f"{namespace}.{name}" if namespace else name


@dataclass
class ToolPlan:
    calling: ToolCalling | None
    targets: dict[str, ToolTarget] = field(default_factory=dict)
    echo: list[Any] = field(default_factory=list)  # the request's tools, as the response echoes them
    dropped: list[str] = field(default_factory=list)  # hosted tool types left out of the prompt
    schemas: list[tuple[Any, str]] = field(default_factory=list)  # (parameters, param path) for [limits]
    skills: list[SkillRequest] = field(default_factory=list)  # the shell tools' skills, for the system prompt
    # The hosted tools the server may run (web search, code interpreter, a container shell), by their param.
    hosted: list[tuple[str, HostedParam]] = field(default_factory=list)

    definitions: list[dict[str, Any]] = field(default_factory=list)  # the functions the client runs, as the model sees them

    def check(self, limits: LimitsConfig) -> None:
        check_schemas(self.schemas, limits)

    def settle(self, body: rs.CreateResponseRequest, agentic: bool) -> None:
        """The client's tools' calling, once it is known whether hosted tools run: when they do, the agent loop
        forces round 1 itself for a hosted or "required" tool_choice (router/agent_loop.py)."""
        self.calling = _calling(body, self.definitions, self.targets, agentic)


def _custom_function(tool: rs.CustomToolParam, namespace: str | None) -> dict[str, Any]:
    description = tool.description or ""
    text: dict[str, Any] = {"type": "string", "description": "The tool's input, as free-form text."}
    strict = False
    fmt = tool.format
    if isinstance(fmt, rs.CustomGrammarFormat):
        if fmt.syntax == "regex":
            text["pattern"] = f"^({fmt.definition})$"
            strict = True
        else:
            description += f"\n\nThe input must follow this Lark grammar:\n{fmt.definition}"
    return {
        "name": model_name(tool.name, namespace),
        "description": description.strip(),
        "parameters": {"type": "object", "properties": {"input": text}, "required": ["input"], "additionalProperties": False},
        "strict": strict,
    }


def _function(tool: rs.FunctionToolParam, namespace: str | None) -> dict[str, Any]:
    function = tool.model_dump(exclude_none=True, exclude={"type", "defer_loading", "allowed_callers"})
    function["name"] = model_name(tool.name, namespace)
    return function


def _echo(tool: Any) -> Any:
    if isinstance(tool, rs.FunctionToolParam):
        echo = rs.FunctionToolEcho(name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict)
        return echo.model_dump(mode="json")
    return tool.model_dump(mode="json", exclude_none=True, by_alias=True)


def plan_tools(body: rs.CreateResponseRequest, model: str) -> ToolPlan:
    definitions: list[dict[str, Any]] = []
    plan = ToolPlan(calling=None)

    def add(function: dict[str, Any], target: ToolTarget, param: str) -> None:
        if function["name"] in plan.targets:
            raise invalid_request(f"Tool names must be unique: '{function['name']}' is declared twice.", param=param)
        plan.targets[function["name"]] = target
        definitions.append({"type": "function", "function": function})
        if function.get("parameters") is not None:
            plan.schemas.append((function["parameters"], param + ".parameters"))

    for index, tool in enumerate(body.tools or []):
        param = f"tools[{index}]"
        plan.echo.append(_echo(tool))
        if isinstance(tool, rs.FunctionToolParam):
            add(_function(tool, None), ToolTarget("function", tool.name), param)
        elif isinstance(tool, rs.CustomToolParam):
            add(_custom_function(tool, None), ToolTarget("custom", tool.name), param)
        elif isinstance(tool, rs.NamespaceToolParam):
            for inner, member in enumerate(tool.tools):
                where = f"{param}.tools[{inner}]"
                if isinstance(member, rs.FunctionToolParam):
                    add(_function(member, tool.name), ToolTarget("function", member.name, tool.name), where)
                else:
                    add(_custom_function(member, tool.name), ToolTarget("custom", member.name, tool.name), where)
        elif isinstance(tool, rs.LocalShellToolParam):
            shell = {"name": LOCAL_SHELL, "description": "Run a command in the user's shell.", "parameters": LOCAL_SHELL_PARAMETERS}
            add(shell, ToolTarget("local_shell", LOCAL_SHELL), param)
        elif isinstance(tool, ShellToolParam) and container_shell(tool):
            plan.hosted.append((param, tool))
            plan.skills += shell_skills(tool, param, model, required=False)
        elif isinstance(tool, ShellToolParam):
            plan.skills += shell_skills(tool, param, model)  # the client's shell is not run here: its skills reach the model
        elif isinstance(tool, hs.WebSearchToolParam | hs.CodeInterpreterToolParam):
            plan.hosted.append((param, tool))
        elif tool.type in DROPPED_TOOLS:
            plan.dropped.append(tool.type)
        elif tool.type in REFUSED_TOOLS:
            raise invalid_request(f"Hosted tool '{tool.type}' is not supported with {model}.", param="tools")
        else:
            raise invalid_value(tool.type, (*CLIENT_TOOLS, *HOSTED_TOOLS, *DROPPED_TOOLS, *REFUSED_TOOLS), f"{param}.type")
    if plan.dropped:
        log.warning(
            "left out of the prompt: tools of type %s (hosted tools this server does not run)",
            ", ".join(sorted(set(plan.dropped))),
        )
    plan.definitions = definitions
    plan.settle(body, agentic=bool(plan.hosted))
    return plan


def _chosen(choice: rs.FunctionToolChoice | rs.CustomToolChoice, targets: dict[str, ToolTarget]) -> str:
    """The model-facing name a named tool_choice picks."""
    kind = "function" if isinstance(choice, rs.FunctionToolChoice) else "custom"
    if choice.name in targets and targets[choice.name].kind == kind:
        return choice.name
    matches = [name for name, target in targets.items() if target.kind == kind and target.name == choice.name]
    if len(matches) == 1:
        return matches[0]
    names = [name for name, target in targets.items() if target.kind == kind]
    raise invalid_request(
        f"tool_choice names '{choice.name}', which is not among the {kind} tools ({', '.join(names) or 'none'}).",
        param="tool_choice",
    )


def _calling(
    body: rs.CreateResponseRequest, definitions: list[dict[str, Any]], targets: dict[str, ToolTarget], agentic: bool
) -> ToolCalling | None:
    choice: Any = body.tool_choice
    if isinstance(choice, rs.OtherToolChoice):
        raise invalid_request(
            f"tool_choice of type '{choice.type}' is not supported; use auto, none, required, a function, a custom "
            "tool, or a hosted tool this server runs (web_search_preview, code_interpreter, shell).",
            param="tool_choice",
            code="unsupported_parameter",
        )
    if isinstance(choice, hs.HostedToolChoice):
        if not agentic:
            raise invalid_request(
                f"tool_choice names the hosted tool '{choice.type}', which is not among this request's tools.",
                param="tool_choice",
            )
        choice = "auto"
    elif choice == "required" and agentic:
        choice = "auto"
    if choice == "none" or (not definitions and choice in (None, "auto")):
        return None
    if not definitions:
        raise invalid_request("tool_choice needs tools to choose from.", param="tool_choice")
    if isinstance(choice, rs.FunctionToolChoice | rs.CustomToolChoice):
        return ToolCalling(definitions, mode="named", name=_chosen(choice, targets), parallel=False)
    assert choice in (None, "auto", "required")
    return ToolCalling(definitions, mode=choice or "auto", parallel=body.parallel_tool_calls is not False)


def call_arguments(arguments: str) -> dict[str, Any] | None:
    """A call's JSON arguments as an object, or None if they are not one."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def custom_arguments(text: str) -> str:
    """A custom tool call's input as the arguments of the function the model called."""
    return json.dumps({"input": text}, ensure_ascii=False)


def custom_input(arguments: str) -> str:
    """A custom tool call's input from the function's arguments: their `input`,
    or the arguments as they came if they hold no `input` string."""
    parsed = call_arguments(arguments)
    text = parsed.get("input") if parsed is not None else None
    return text if isinstance(text, str) else arguments


def shell_arguments(action: dict[str, Any]) -> str:
    """A local_shell_call's action as the arguments of the `local_shell` function."""
    arguments = {"command": action.get("command") or []}
    if action.get("working_directory"):
        arguments["workdir"] = action["working_directory"]
    if action.get("timeout_ms") is not None:
        arguments["timeout_ms"] = action["timeout_ms"]
    return json.dumps(arguments, ensure_ascii=False)


def shell_action(arguments: str) -> rs.LocalShellAction:
    """The `local_shell` function's arguments as a local_shell_call's action;
    a field of the wrong type is left out."""
    parsed = call_arguments(arguments) or {}
    command = parsed.get("command")
    if isinstance(command, str):
        command = [command]
    workdir, timeout = parsed.get("workdir"), parsed.get("timeout_ms")
    return rs.LocalShellAction(
        command=[str(part) for part in command] if isinstance(command, list) else [],
        working_directory=workdir if isinstance(workdir, str) else None,
        timeout_ms=timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else None,
    )
