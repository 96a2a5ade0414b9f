"""An Anthropic Messages request → the backend-neutral ChatRequest: the
system prompt and turns (server tool calls and results sent back become the
prompt's tool calls and tool results), the thinking kept from earlier turns
(`context_management`), custom tools (the server tools this server runs are
offered by the agent loop, the others left out), the reasoning budget
(`thinking`) and structured output (`output_config.format`).
What is accepted and ignored is listed in docs/compatibility.md."""

from __future__ import annotations

import json
import logging
from typing import Any

from modelyard.adapters.base import ChatRequest, Constraint, Reasoning, Sampling, ToolCalling
from modelyard.router.agent_plan import AgentPlan
from modelyard.router.anthropic_server_tools import history_call, history_result, hosted_tool
from modelyard.router.errors import invalid_request
from modelyard.router.file_inputs import Attachment, Found, file_parts_of
from modelyard.router.image_inputs import ImageSource, content_of, image_part
from modelyard.schemas import anthropic as an

log = logging.getLogger("modelyard.anthropic")

# Claude Code puts its version and entry point into the system prompt as a
# text block for Anthropic's billing; it says nothing to the model and would
# only change the prompt's prefix between versions.
BILLING_HEADER = "x-anthropic-billing-header:"
CLEAR_THINKING = "clear_thinking_"


def text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for index, block in enumerate(content):
        if isinstance(block, an.TextBlock):
            parts.append(block.text)
        else:
            raise invalid_request(
                f"{where}.{index}: content blocks of type '{block.type}' are not supported here; send text.",
                param=f"{where}.{index}.type",
            )
    return "\n".join(parts)


def image_of(block: an.ImageBlock, where: str) -> dict[str, Any]:
    """An image block as an image part to read (router/image_inputs.py)."""
    source = block.source
    if isinstance(source, an.Base64Source):
        return image_part(ImageSource(where, data=source.data, media_type=source.media_type))
    if isinstance(source, an.URLSource):
        return image_part(ImageSource(where, url=source.url))
    if isinstance(source, an.FileSource):
        return image_part(ImageSource(where, file_id=source.file_id))
    raise invalid_request(
        f"{where}.source.type: image sources of type '{source.type}' are not supported; send a base64, url or file source.",
        param=f"{where}.source.type",
    )


def tool_result_content(block: an.ToolResultBlock, where: str) -> str | list[dict[str, Any]]:
    """A tool result's text, or its text and image parts in order; an error result says so first."""
    content = block.content
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "text": content})
    for index, item in enumerate(content if isinstance(content, list) else []):
        if isinstance(item, an.TextBlock):
            parts.append({"type": "text", "text": item.text})
        elif isinstance(item, an.ImageBlock):
            parts.append(image_of(item, f"{where}.{index}"))
        else:
            raise invalid_request(
                f"{where}.{index}: content blocks of type '{item.type}' are not supported here; send text or images.",
                param=f"{where}.{index}.type",
            )
    if block.is_error:
        if parts and parts[0]["type"] == "text":
            parts[0] = {"type": "text", "text": "Error: " + parts[0]["text"]}
        else:
            parts.insert(0, {"type": "text", "text": "Error: "})
    if not parts:
        return ""
    return content_of(parts)


def system_text(system: str | list[an.TextBlock] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(block.text for block in system if not block.text.startswith(BILLING_HEADER))


def thinking_turns_kept(body: an.MessagesRequest) -> int | None:
    """How many of the latest assistant turns with thinking keep it in the
    prompt: None for all. Without a `clear_thinking_*` edit, none do (earlier
    thinking is not shown to the model, as Anthropic does for most models);
    an edit without `keep` keeps the last one, Anthropic's default."""
    edits = (body.context_management.edits or []) if body.context_management is not None else []
    kept = 0
    for edit in edits:
        if not edit.type.startswith(CLEAR_THINKING):
            continue  # clear_tool_uses_*, compact_*: accepted, not applied
        keep = edit.keep
        if keep is None:
            kept = 1
        elif keep == "all" or isinstance(keep, an.AllThinkingTurns):
            return None
        else:
            assert isinstance(keep, an.ThinkingTurns)
            kept = keep.value
    return kept


def with_thinking(message: an.MessageParam) -> bool:
    return not isinstance(message.content, str) and any(isinstance(b, an.ThinkingBlock) for b in message.content)


def to_backend_messages(body: an.MessagesRequest, tags: tuple[str, str] | None, tool_output_limit: int = 8000) -> list[dict[str, Any]]:
    """Anthropic's turns → the OpenAI-style messages the adapters render.
    System messages stay where they are (adapters merge them for templates
    that take one leading system message only); kept thinking is written
    back inside the model's reasoning tags. An assistant turn with server
    tool blocks is split where each result stands: the text and calls before
    it, then the result as a tool message (at most `tool_output_limit`
    characters, as the agent loop shows results)."""
    out: list[dict[str, Any]] = []
    system = system_text(body.system)
    if system:
        out.append({"role": "system", "content": system})
    keep = thinking_turns_kept(body) if tags else 0
    thinking_turns = [i for i, m in enumerate(body.messages) if m.role == "assistant" and with_thinking(m)]
    kept = set(thinking_turns) if keep is None else set(thinking_turns[-keep:]) if keep else set()
    for index, message in enumerate(body.messages):
        where = f"messages.{index}.content"
        if message.role == "system":
            out.append({"role": "system", "content": text_of(message.content, where)})
            continue
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[dict[str, Any]] = []  # text and image parts
        calls: list[dict[str, Any]] = []
        server_inputs: dict[str, dict[str, Any]] = {}  # server_tool_use id → its input, for its result
        for number, block in enumerate(message.content):
            if isinstance(block, an.TextBlock):
                texts.append({"type": "text", "text": block.text})
            elif isinstance(block, an.ImageBlock) and message.role == "user":
                texts.append(image_of(block, f"{where}.{number}"))
            elif isinstance(block, an.ToolUseBlock) and message.role == "assistant":
                function = {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}
                calls.append({"id": block.id, "type": "function", "function": function})
            elif isinstance(block, an.ServerToolUseBlock) and message.role == "assistant":
                calls.append(history_call(block, f"{where}.{number}"))
                server_inputs[block.id] = block.input
            elif isinstance(block, an.ServerToolResultBlock) and message.role == "assistant":
                _flush(out, message.role, texts, calls)
                out.append(history_result(block, server_inputs, tool_output_limit, f"{where}.{number}"))
            elif isinstance(block, an.ToolResultBlock) and message.role == "user":
                result = tool_result_content(block, f"{where}.{number}.content")
                out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": result})
            elif isinstance(block, an.ThinkingBlock):
                if index in kept and tags is not None and block.thinking:
                    texts.append({"type": "text", "text": f"{tags[0]}{block.thinking}{tags[1]}"})
            elif isinstance(block, an.RedactedThinkingBlock):
                continue  # opaque: nothing the model could read
            else:
                why = "by this model; send text" if isinstance(block, an.DocumentBlock) else "here"
                raise invalid_request(
                    f"{where}.{number}: content blocks of type '{block.type}' are not supported {why}.",
                    param=f"{where}.{number}.type",
                )
        _flush(out, message.role, texts, calls)
    return out


def _flush(out: list[dict[str, Any]], role: str, texts: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
    """The turn's text (and images) and calls so far as one message (if any), then start afresh."""
    if texts or calls:
        entry: dict[str, Any] = {"role": role, "content": content_of(texts)}
        if calls:
            entry["tool_calls"] = list(calls)
        out.append(entry)
    texts.clear()
    calls.clear()


def document_blocks(body: an.MessagesRequest) -> Found:
    """The `document` blocks of the user turns, each with the callback that
    puts the document's text in its place. Citations are refused: a cited
    answer has citation blocks this server cannot make."""
    found: Found = []
    for index, number, block, replace_block in file_parts_of(body.messages, an.DocumentBlock):
        where = f"messages.{index}.content.{number}"
        if block.citations is not None and block.citations.enabled:
            raise invalid_request(
                f"{where}.citations: citations are not supported by this server; "
                "leave them out or set citations.enabled to false.",
                param=f"{where}.citations.enabled",
            )
        source = block.source
        param = f"{where}.source"
        if isinstance(source, an.TextSource):
            attachment = Attachment(param, filename=block.title or "document", text=source.data, media_type=source.media_type)
        elif isinstance(source, an.Base64Source):
            attachment = Attachment(param, filename=block.title or "document", data=source.data, media_type=source.media_type)
        elif isinstance(source, an.FileSource):
            attachment = Attachment(f"{param}.file_id", file_id=source.file_id, filename=block.title)
        else:
            raise invalid_request(
                f"{param}.type: document sources of type '{source.type}' are not supported by this server "
                "(it fetches nothing); send a text, base64 or file source.",
                param=f"{param}.type",
            )
        attachment.context = block.context
        found.append((attachment, lambda text, put=replace_block: put(an.TextBlock(type="text", text=text))))
    return found


def custom_tools(tools: list[an.Tool | an.ServerTool] | None) -> list[tuple[int, an.Tool]]:
    """The custom tools the model may call, with their index in the request.
    The server tools this server runs (web search, code execution) are the
    agent loop's to offer (router/anthropic_server_tools.py); the others are
    left out of the prompt with a warning."""
    server = [t for t in tools or [] if isinstance(t, an.ServerTool) and hosted_tool(t) is None]
    if server:
        names = ", ".join(f"{t.name} ({t.type})" for t in server)
        log.warning("server tools left out of the prompt (this server does not run them): %s", names)
    return [(i, t) for i, t in enumerate(tools or []) if isinstance(t, an.Tool)]


def tool_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    # `$schema` only names the dialect (Claude Code sends draft 2020-12's URL): no use in the prompt.
    return {k: v for k, v in schema.items() if k != "$schema"}


def tool_calling(tools: list[tuple[int, an.Tool]], choice: an.ToolChoice | None) -> ToolCalling | None:
    if not tools or (choice is not None and choice.type == "none"):
        return None
    definitions = []
    for _, tool in tools:
        function = {"name": tool.name, "description": tool.description or "", "parameters": tool_parameters(tool.input_schema)}
        if tool.strict:
            function["strict"] = True
        definitions.append({"type": "function", "function": function})
    parallel = not (choice is not None and choice.disable_parallel_tool_use)
    if choice is None or choice.type == "auto":
        return ToolCalling(definitions, mode="auto", parallel=parallel)
    if choice.type == "any":
        return ToolCalling(definitions, mode="required", parallel=parallel)
    if not choice.name or choice.name not in [t.name for _, t in tools]:
        raise invalid_request(f"tool_choice names '{choice.name}', which is not among the tools.", param="tool_choice.name")
    return ToolCalling(definitions, mode="named", name=choice.name, parallel=False)


def reasoning_for(thinking: Any, tags: tuple[str, str] | None) -> Reasoning | None:
    """`thinking` on the model's reasoning tags; nothing for a model without them."""
    if thinking is None or tags is None:
        return None
    if isinstance(thinking, an.ThinkingDisabled):
        return Reasoning(tags, enabled=False, budget_tokens=0)
    if isinstance(thinking, an.ThinkingEnabled):
        return Reasoning(tags, enabled=True, budget_tokens=thinking.budget_tokens)
    return Reasoning(tags, enabled=True)  # adaptive: the model thinks as long as it likes


def output_schema(body: an.MessagesRequest) -> tuple[dict[str, Any], str] | None:
    """The JSON Schema the answer must follow, and its path in the request."""
    if body.output_config is not None and body.output_config.format is not None:
        if body.output_format is not None:
            raise invalid_request("Send either output_config.format or output_format, not both.", param="output_format")
        return body.output_config.format.schema_, "output_config.format.schema"
    if body.output_format is not None:
        return body.output_format.schema_, "output_format.schema"
    return None


def backend_request(body: an.MessagesRequest, reasoning_tags: list[str], plan: AgentPlan | None = None,
                    tool_output_limit: int = 8000) -> ChatRequest:
    """The backend request; with a `plan` that forces a hosted call, the custom tools are offered as "auto"
    (the agent loop forces round 1 itself)."""
    tags = (reasoning_tags[0], reasoning_tags[1]) if reasoning_tags else None
    choice = None if plan is not None and plan.forced is not None else body.tool_choice
    sampling = Sampling(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=[s for s in body.stop_sequences or [] if s],
    )
    schema = output_schema(body)
    return ChatRequest(
        messages=to_backend_messages(body, tags, tool_output_limit),
        sampling=sampling,
        constraint=Constraint(json_schema=schema[0]) if schema is not None else None,
        tools=tool_calling(custom_tools(body.tools), choice),
        reasoning=reasoning_for(body.thinking, tags),
    )
