"""A Responses request's input as the conversation a chat model takes.

The request's input items (messages, tool calls and their outputs,
reasoning) are checked and kept as stored items, each with an id and a
status, so that `previous_response_id` and `input_items` can hand them
back; `chat_messages` turns those stored items, with the instructions, into
the plain chat messages of a ChatRequest. The way back, from the model's
output to the response, is `modelyard.router.response_runs`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from modelyard.router import reasoning
from modelyard.router.errors import invalid_request
from modelyard.router.file_inputs import Attachment, Found, file_id_of_url, from_data_url
from modelyard.router.image_inputs import IMAGE, ImageSource, content_of, detail_of, image_part, joined, text_only
from modelyard.router.response_hosted_input import hosted_call
from modelyard.router.response_runs import new_id
from modelyard.router.response_tools import LOCAL_SHELL, custom_arguments, shell_arguments
from modelyard.router.response_tools import model_name as tools_model_name
from modelyard.schemas import responses as rs
from starlette.requests import Request


def _parts(content: str | list[Any], role: str, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if role == "assistant":
            return [{"type": "output_text", "text": content, "annotations": []}]
        return [{"type": "input_text", "text": content}]
    parts = []
    for index, part in enumerate(content):
        if isinstance(part, rs.OtherPart):
            raise invalid_request(
                f"Content of type '{part.type}' is not supported by this model; send text or images.",
                param=f"{param}[{index}]",
            )
        parts.append(part.model_dump(mode="json", exclude_none=True))
    return parts


def _stored(item: Any, prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = item.model_dump(mode="json", exclude_none=True)
    data["id"] = data.get("id") or new_id(prefix)
    return data


def normalize_input(value: str | list[Any]) -> list[dict[str, Any]]:
    """The request's input as stored items, each with an id and a status."""
    if isinstance(value, str):
        value = [rs.MessageItem(role="user", content=value)]
    items: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if isinstance(item, rs.MessageItem):
            items.append(
                {
                    "id": item.id or new_id("msg"),
                    "type": "message",
                    "role": item.role,
                    "content": _parts(item.content, item.role, f"{param}.content"),
                    "status": "completed",
                }
            )
        elif isinstance(item, rs.FunctionCallItem):
            call = {
                "id": item.id or new_id("fc"),
                "type": "function_call",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": item.arguments,
                "status": "completed",
            }
            if item.namespace:
                call["namespace"] = item.namespace
            items.append(call)
        elif isinstance(item, rs.FunctionCallOutputItem | rs.CustomToolCallOutputItem):
            output = item.output if isinstance(item.output, str) else _parts(item.output, "tool", f"{param}.output")
            prefix = "fco" if item.type == "function_call_output" else "ctco"
            items.append({"id": item.id or new_id(prefix), "type": item.type, "call_id": item.call_id, "output": output, "status": "completed"})
        elif isinstance(item, rs.LocalShellCallOutputItem):
            call_id = item.call_id or item.id
            if not call_id:
                raise invalid_request("A local_shell_call_output needs the call's id (call_id or id).", param=f"{param}.call_id")
            items.append({"id": item.id or call_id, "type": item.type, "call_id": call_id, "output": item.output, "status": "completed"})
        elif isinstance(item, rs.CustomToolCallItem | rs.LocalShellCallItem | rs.ReasoningItem):
            prefix = {"custom_tool_call": "ctc", "local_shell_call": "lsh", "reasoning": "rs"}[item.type]
            items.append(_stored(item, prefix))
        elif item.type in rs.HOSTED_ITEM_TYPES:
            items.append(hosted_input(item.model_dump(mode="json", exclude_none=True), param))
        elif item.type in rs.UNREAD_ITEM_TYPES:
            # Kept in the history (input_items); left out of the prompt.
            items.append({**item.model_dump(mode="json", exclude_none=True), "id": getattr(item, "id", None) or new_id("item")})
        else:
            raise invalid_request(
                f"Input items of type '{item.type}' are not supported by this server; send messages, tool calls "
                "and their outputs, and reasoning items.",
                param=f"{param}.type",
            )
    return items


def parts_holding(item: dict[str, Any], index: int, first: int, part_type: str) -> tuple[str, list[Any], str] | None:
    """The key of an item's parts (a message's content, a tool output), its
    parts, and where they are for errors, if one of them is of `part_type`;
    else None. Items before `first` come from previous_response_id."""
    key = "content" if item["type"] == "message" else "output"
    parts = item.get(key)
    if not isinstance(parts, list) or not any(part.get("type") == part_type for part in parts):
        return None
    where = f"input[{index - first}].{key}" if index >= first else f"previous_response_id: item '{item.get('id')}'"
    return key, parts, where


def file_parts(items: list[dict[str, Any]], first: int, request: Request) -> tuple[list[dict[str, Any]], Found]:
    """The items for the prompt, and their `input_file` parts (of messages
    and tool outputs), each with the callback that puts its text in its
    place in those items (copies: the stored items keep the file parts).
    Items before `first` come from previous_response_id."""
    prompt: list[dict[str, Any]] = []
    found: Found = []
    for index, item in enumerate(items):
        holding = parts_holding(item, index, first, "input_file")
        if holding is None:
            prompt.append(item)
            continue
        key, parts, where = holding
        parts = list(parts)
        prompt.append({**item, key: parts})
        for number, part in enumerate(parts):
            if part.get("type") != "input_file":
                continue

            put = partial(parts.__setitem__, number)
            attachment = input_file(part, f"{where}[{number}]", request)
            found.append((attachment, lambda text, put=put: put({"type": "input_text", "text": text})))
    return prompt, found


def image_parts(items: list[dict[str, Any]], first: int) -> list[dict[str, Any]]:
    """The items for the prompt with each `input_image` part (of messages and
    tool outputs) as an image part to read (router/image_inputs.py), in
    copies: the stored items keep the parts as sent. Items before `first`
    come from previous_response_id."""
    prompt: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        holding = parts_holding(item, index, first, "input_image")
        if holding is None:
            prompt.append(item)
            continue
        key, parts, where = holding
        parts = [input_image(part, f"{where}[{number}]") if part.get("type") == "input_image" else part
                 for number, part in enumerate(parts)]
        prompt.append({**item, key: parts})
    return prompt


def input_image(part: dict[str, Any], param: str) -> dict[str, Any]:
    sources = [key for key in ("image_url", "file_id") if part.get(key) is not None]
    if len(sources) != 1:
        raise invalid_request(f"{param}: an input_image needs one of image_url and file_id.", param=param)
    detail = detail_of(part.get("detail"), f"{param}.detail")
    if sources[0] == "file_id":
        return image_part(ImageSource(param, file_id=part["file_id"], detail=detail))
    return image_part(ImageSource(param, url=part["image_url"], detail=detail))


def input_file(part: dict[str, Any], param: str, request: Request) -> Attachment:
    sources = [key for key in ("file_id", "file_data", "file_url") if part.get(key) is not None]
    if len(sources) != 1:
        raise invalid_request(f"{param}: an input_file needs one of file_id, file_data and file_url.", param=param)
    filename = part.get("filename")
    if sources[0] == "file_id":
        return Attachment(f"{param}.file_id", file_id=part["file_id"], filename=filename)
    if sources[0] == "file_url":
        file_id = file_id_of_url(part["file_url"], f"{param}.file_url", request)
        return Attachment(f"{param}.file_url", file_id=file_id, filename=filename)
    return from_data_url(part["file_data"], f"{param}.file_data", filename)


def hosted_input(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A hosted tool call item sent as input (a stateless client hands back an earlier output)."""
    if item["type"] in ("shell_call", "shell_call_output") and not isinstance(item.get("call_id"), str):
        raise invalid_request(f"A {item['type']} needs the call's call_id.", param=f"{param}.call_id")
    for path, value, kinds in _hosted_fields(item):
        if value is not None and not isinstance(value, kinds):
            names = " or ".join("an object" if k is dict else "an array" if k is list else "a string" for k in kinds)
            raise invalid_request(f"{param}.{path} must be {names}.", param=f"{param}.{path}")
    prefix = {"web_search_call": "ws", "code_interpreter_call": "ci", "shell_call": "sh", "shell_call_output": "sho"}
    return {**item, "id": item.get("id") or new_id(prefix[item["type"]])}


def _hosted_fields(item: dict[str, Any]) -> list[tuple[str, Any, tuple[type, ...]]]:
    """The fields of a hosted call item that router/response_hosted_input.py reads, with the types it takes,
    as (path, value, types): a client's item of another shape is a 400, not a 500."""
    fields: list[tuple[str, Any, tuple[type, ...]]] = []

    def each(path: str, values: Any, kinds: tuple[type, ...]) -> None:
        if isinstance(values, list):
            fields.extend((f"{path}[{i}]", v, kinds) for i, v in enumerate(values))

    kind = item["type"]
    if kind == "web_search_call":
        action = item.get("action")
        fields.append(("action", action, (dict,)))
        if isinstance(action, dict):
            fields += [("action.type", action.get("type"), (str,)), ("action.query", action.get("query"), (str,)),
                       ("action.queries", action.get("queries"), (list,)), ("action.sources", action.get("sources"), (list,))]
            each("action.queries", action.get("queries"), (str,))
    elif kind == "code_interpreter_call":
        fields += [("code", item.get("code"), (str,)), ("outputs", item.get("outputs"), (list,))]
        outputs = item.get("outputs")
        for i, output in enumerate(outputs if isinstance(outputs, list) else []):
            if isinstance(output, dict):
                fields += [(f"outputs[{i}].logs", output.get("logs"), (str,)), (f"outputs[{i}].url", output.get("url"), (str,))]
    elif kind == "shell_call":
        action = item.get("action")
        fields.append(("action", action, (dict,)))
        if isinstance(action, dict):
            fields.append(("action.commands", action.get("commands"), (list,)))
    else:
        fields.append(("output", item.get("output"), (list,)))
        output = item.get("output")
        for i, content in enumerate(output if isinstance(output, list) else []):
            if isinstance(content, dict):
                fields.append((f"output[{i}].outcome", content.get("outcome"), (dict,)))
    return fields


def unread_items(items: list[dict[str, Any]]) -> list[str]:
    """The types of the items the model will not see (tools this server does not run, compaction)."""
    return sorted({item["type"] for item in items if item["type"] in rs.UNREAD_ITEM_TYPES})


def _content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A message's or tool output's parts as a chat message's content: text, or text and image parts."""
    if isinstance(content, str):
        return content
    parts = [part if part.get("type") == IMAGE else {"type": "text", "text": part.get("text", part.get("refusal", ""))}
             for part in content]
    return content_of(parts)


def _text(content: str | list[dict[str, Any]], role: str) -> str:
    return text_only(_content(content), role)


def _reasoning_text(item: dict[str, Any], so_far: int) -> str:
    """The reasoning an item carries: this server's encoded content, or its
    reasoning_text parts. `so_far` characters of reasoning came before it."""
    budget = reasoning.MAX_REASONING_CHARS - so_far
    try:
        opened = reasoning.unseal(item.get("encrypted_content"), budget)
    except reasoning.ReasoningTooLong as exc:
        raise invalid_request(f"input: {exc}.", param="input", code="limit_exceeded") from None
    if opened is not None:
        return opened
    parts = item.get("content") or ()
    # Parts of other shapes (not OpenAI's {"type": "reasoning_text", "text": ...}) carry nothing to show.
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and part.get("type") == "reasoning_text" and isinstance(part.get("text"), str)
    )


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_messages(
    instructions: str | None, items: list[dict[str, Any]], reasoning_tags: list[str] | None = None
) -> list[dict[str, Any]]:
    """Stored items as the plain chat messages a ChatRequest takes.

    `instructions` and the system and developer messages before the first
    other item become one leading system message (strict chat templates take
    one, first). A system or developer message later in the conversation
    becomes a user turn that starts with `[developer message]` (or
    `[system message]`), and consecutive user turns are joined, so that
    templates that insist on alternating turns accept the conversation.
    Reasoning items after the last user message (the reasoning of the turn
    in progress) go back into the prompt inside the model's reasoning tags,
    before the assistant text or calls that followed them; older ones, as
    chat templates do, are left out. The calls of the hosted tools this
    server runs become calls of their functions and their results
    (router/response_hosted_input.py); other hosted calls are left out.
    """
    system = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    users = [i for i, item in enumerate(items) if item["type"] == "message" and item["role"] == "user"]
    current_turn = users[-1] if users else -1
    thinking = ""  # reasoning items waiting for the model output they came with
    shell_commands: dict[str, list[str]] = {}  # a shell call's commands, for its output

    def assistant(text: str) -> dict[str, Any]:
        """A new assistant turn, led by the pending reasoning."""
        nonlocal thinking
        if thinking and reasoning_tags:
            text = f"{reasoning_tags[0]}{thinking}{reasoning_tags[1]}" + (f"\n{text}" if text else "")
        thinking = ""
        message = {"role": "assistant", "content": text}
        messages.append(message)
        return message

    def calling() -> dict[str, Any]:
        """The assistant turn a tool call belongs to: the one just written, or a new one."""
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and not thinking:
            return last
        return assistant("")

    def user(content: str | list[dict[str, Any]]) -> None:
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "user":
            last["content"] = joined(last["content"], content, "\n\n")
        else:
            messages.append({"role": "user", "content": content})

    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "message" and item["role"] in ("system", "developer"):
            if not messages:
                system.append(_text(item["content"], item["role"]))
            else:
                user(f"[{item['role']} message]\n{_text(item['content'], item['role'])}")
        elif kind == "message" and item["role"] == "user":
            user(_content(item["content"]))
        elif kind == "message":
            last = messages[-1] if messages else None
            text = _text(item["content"], "assistant")
            if last is not None and last["role"] == "assistant" and not thinking and not last.get("tool_calls"):
                last["content"] = "\n".join(t for t in (last["content"], text) if t)
            else:
                assistant(text)
        elif kind == "reasoning":
            if index > current_turn:
                thinking += _reasoning_text(item, len(thinking))
        elif kind == "function_call":
            name = tools_model_name(item["name"], item.get("namespace"))
            calling().setdefault("tool_calls", []).append(_call(item["call_id"], name, item["arguments"]))
        elif kind == "custom_tool_call":
            name = tools_model_name(item["name"], item.get("namespace"))
            calling().setdefault("tool_calls", []).append(_call(item["call_id"], name, custom_arguments(item["input"])))
        elif kind == "local_shell_call":
            call = _call(item["call_id"], LOCAL_SHELL, shell_arguments(item.get("action") or {}))
            calling().setdefault("tool_calls", []).append(call)
        elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            messages.append({"role": "tool", "content": _content(item["output"]), "tool_call_id": item["call_id"]})
        elif kind in rs.HOSTED_ITEM_TYPES:
            written = hosted_call(item, shell_commands)
            if written is not None:
                call, result = written
                if call is not None:
                    calling().setdefault("tool_calls", []).append(call)
                if result is not None:
                    messages.append(result)
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return messages
