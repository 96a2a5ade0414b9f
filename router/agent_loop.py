"""The tool loop of the agentic runtime: the model answers, the server runs
the hosted tools it called, feeds their results back, and asks again, until
the model answers without a hosted call or the rounds run out.

Surfaces see one stream of typed events (router/events.py): the model's text
and reasoning of every round as they come, a HostedCallStarted and a
HostedCallDone around each tool that ran, the client's own function calls
(which end the loop: the client runs those), and one Finish whose token
counts add up every round. Hosted calls never reach the surface as
ToolCallOpened: each surface shows them in its own timeline shape.

Round 1 follows the request's tool_choice ("required" or a named hosted tool
forces a call); later rounds are "auto"; after `max_rounds` rounds with tool
calls, one more round offers no hosted tools, so the model must answer. The
same happens once `max_calls` hosted calls ran (Responses' max_tool_calls):
a call past it is not run (the model is told so, and no event shows it). A
tool whose `max_uses` are used up (Anthropic's max_uses) is no longer offered,
and a call of it past the cap gets CALL_LIMIT_REACHED as its error instead of
running.
Closing the event stream (a client that left) cancels the running tool,
which kills its processes (router/sandbox.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, Protocol

from modelyard.adapters.base import ChatRequest, ToolCalling
from modelyard.router.agent_plan import AgentPlan
from modelyard.router.agent_tools import (
    FUNCTIONS,
    CodeOutcome,
    HostedTool,
    Outcome,
    SearchOutcome,
    ShellOutcome,
    parse_arguments,
)
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    HostedCallDone,
    HostedCallStarted,
    PromptSize,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.router.generation import ChoiceBuilder, model_output

# The error of a call past the request's cap on that tool (AgentPlan.max_calls); surfaces recognise it.
CALL_LIMIT_REACHED = "this request's limit of calls to this tool is reached; answer with what you have"


class ToolRunner(Protocol):
    """What runs a hosted call (router/agent_runtime.py): never raises for a tool's own failure."""

    async def run(self, tool: HostedTool, arguments: dict[str, Any]) -> Outcome: ...


def failed_outcome(tool: HostedTool, reason: str) -> Outcome:
    """What a call with arguments the tool cannot take produced: the model is told why."""
    if tool == "web_search":
        return SearchOutcome(query="", error=reason)
    if tool == "code_interpreter":
        return CodeOutcome(code="", error=reason)
    return ShellOutcome(commands=(), error=reason)


def _calls_left(plan: AgentPlan, calls_run: int) -> bool:
    return plan.max_calls is None or calls_run < plan.max_calls


def _calling(request: ChatRequest, plan: AgentPlan, round_number: int, last: bool,
             used: dict[str, int]) -> ToolCalling | None:
    """The tools of one round; the `last` one (no more rounds or calls) offers no hosted tools, and a tool whose
    max_uses are used up is not offered."""
    client = request.tools
    client_tools = client.tools if client is not None else []
    offered = [tool for tool in plan.tools if tool not in plan.max_uses or used.get(tool, 0) < plan.max_uses[tool]]
    hosted = [] if last else [{"type": "function", "function": FUNCTIONS[tool]} for tool in offered]
    if not hosted and not client_tools:
        return None
    tools = client_tools + hosted
    if round_number == 1 and plan.forced is not None:
        if plan.forced == "required":
            return ToolCalling(tools, mode="required", parallel=False)
        return ToolCalling(tools, mode="named", name=plan.forced, parallel=False)
    if client is not None and round_number == 1:
        return replace(client, tools=tools)
    parallel = client.parallel if client is not None else True
    return ToolCalling(tools, mode="auto", parallel=parallel, free_arguments=client.free_arguments if client else [])


async def agent_events(
    call: Callable[[ChatRequest], AsyncIterator[Any]],
    request: ChatRequest,
    plan: AgentPlan,
    runner: ToolRunner,
    reasoning_tags: list[str],
) -> AsyncIterator[Event]:
    """The typed events of a whole tool loop; `call` starts one model call (entry.stream("chat", r))."""
    messages = list(request.messages)
    prompt_tokens = completion_tokens = cached_tokens = 0
    round_number = calls_run = 0
    used: dict[str, int] = {}  # calls run so far, by tool
    while True:
        round_number += 1
        # A round that offers no hosted tools (the rounds or the calls ran out) runs none: the model must answer.
        ran_out = round_number > plan.max_rounds or not _calls_left(plan, calls_run)
        tools = _calling(request, plan, round_number, ran_out, used)
        builder = ChoiceBuilder(0, reasoning_tags, tools is not None)
        this_round = replace(request, messages=messages, tools=tools)
        calls: dict[int, list[str]] = {}  # position → [id, name, arguments]
        text: list[str] = []
        client_calls = 0
        finish: Finish | None = None
        async for event in model_output(call(this_round), builder):
            if isinstance(event, PromptSize):
                if round_number == 1:
                    yield event
            elif isinstance(event, ToolCallOpened):
                calls[event.index] = [event.id, event.name, ""]
                if event.name not in plan.tools:
                    client_calls += 1
                    yield replace(event, index=client_calls - 1)
            elif isinstance(event, ToolArgumentsDelta):
                entry = calls[event.index]
                entry[2] += event.arguments
                if entry[1] not in plan.tools:
                    yield replace(event, index=_client_index(calls, event.index, plan))
            elif isinstance(event, Finish):
                finish = event
            else:
                if isinstance(event, ContentDelta):
                    text.append(event.text)
                yield event
        assert finish is not None  # model_output raises when the model stops without finishing
        prompt_tokens += finish.prompt_tokens
        completion_tokens += finish.completion_tokens
        if round_number == 1:
            cached_tokens = finish.cached_tokens
        hosted = [] if ran_out else [(i, c) for i, c in sorted(calls.items()) if c[1] in plan.tools]
        assistant: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
        if calls:
            assistant["tool_calls"] = [
                {"id": c[0], "type": "function", "function": {"name": c[1], "arguments": c[2] or "{}"}}
                for _, c in sorted(calls.items())
            ]
        messages.append(assistant)
        for _, (call_id, name, arguments) in hosted:
            if not _calls_left(plan, calls_run):
                refused = f"Not run: this request allows at most {plan.max_calls} hosted tool calls. Answer with what you have."
                messages.append({"role": "tool", "tool_call_id": call_id, "content": refused})
                continue
            calls_run += 1
            tool: HostedTool = name  # type: ignore[assignment]
            parsed = parse_arguments(tool, arguments)
            checked = parsed if isinstance(parsed, dict) else {}
            yield HostedCallStarted(round_number, call_id, tool, checked)
            if isinstance(parsed, str):
                outcome = failed_outcome(tool, parsed)
            elif tool in plan.max_uses and used.get(tool, 0) >= plan.max_uses[tool]:
                outcome = failed_outcome(tool, CALL_LIMIT_REACHED)
            else:
                used[tool] = used.get(tool, 0) + 1
                outcome = await runner.run(tool, parsed)
            yield HostedCallDone(round_number, call_id, tool, checked, outcome)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": outcome.for_model(plan.output_limit)})
        if not hosted or client_calls:
            plan.transcript = messages
            yield Finish(
                prompt_tokens,
                completion_tokens,
                finish.stop_reason,
                finish.stop_sequence,
                client_calls,
                cached_tokens,
            )
            return


def _client_index(calls: dict[int, list[str]], position: int, plan: AgentPlan) -> int:
    """A client call's position among the client calls only (hosted ones are not shown as tool_calls)."""
    return sum(1 for i, c in calls.items() if i < position and c[1] not in plan.tools)
