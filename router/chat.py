"""POST /v1/chat/completions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from modelyard.adapters.base import ChatRequest, TokenLogprob, ToolCalling
from modelyard.router.agent_plan import AgentPlan, agent_runtime, checked_plan
from modelyard.router.agent_tools import HostedTool
from modelyard.router.chat_agentic import AgenticTimeline
from modelyard.router.deps import get_yard, resolve_model
from modelyard.router.errors import invalid_request
from modelyard.router.events import (
    ContentDelta,
    Event,
    Finish,
    HostedCallDone,
    HostedCallStarted,
    PromptSize,
    ReasoningDelta,
    TokenLogprobs,
    ToolArgumentsDelta,
    ToolCallOpened,
)
from modelyard.router.file_inputs import Attachment, Found, attach, file_parts_of, from_data_url
from modelyard.router.generation import ChoiceBuilder, choices, wire_logprobs
from modelyard.router.image_inputs import ImageSource, content_of, detail_of, image_part, resolve_images
from modelyard.router.limits import check_chat_request, check_message_count, limits_for, reject_lone_surrogates
from modelyard.router.openai_chunks import OpenAIChunks
from modelyard.router.sampling import constraint_from, sampling_from, seed_for_choice
from modelyard.router.surface import COMMENT_KEEPALIVE, Frame, answer
from modelyard.schemas import openai as oa

router = APIRouter()
ENDPOINT = "/v1/chat/completions"


def reject_unsupported(body: oa.ChatCompletionRequest) -> None:
    for name, neutral in oa.NOT_SUPPORTED.items():
        value = getattr(body, name)
        allowed = neutral if isinstance(neutral, tuple) else (neutral,)
        if value not in allowed:
            raise invalid_request(f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter")
    if body.top_logprobs and not body.logprobs:
        raise invalid_request("top_logprobs needs logprobs set to true.", param="top_logprobs")


def content_of_message(content: Any, index: int) -> str | list[dict[str, Any]]:
    """OpenAI content (a string or a list of parts) as a backend message's: its
    text, or (with images) its text and image parts in order."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        if isinstance(part, oa.TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, oa.RefusalPart):
            parts.append({"type": "text", "text": part.refusal})
        elif isinstance(part, oa.ImagePart):
            param = f"messages[{index}].content[{number}]"
            detail = detail_of(part.image_url.detail, f"{param}.image_url.detail")
            parts.append(image_part(ImageSource(param, url=part.image_url.url, detail=detail)))
        else:
            raise invalid_request(
                f"Content of type '{part.type}' is not supported by this model; send text.",
                param=f"messages[{index}].content",
            )
    return content_of(parts)


def to_backend_messages(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if isinstance(message, oa.FunctionMessage):
            raise invalid_request("The deprecated 'function' role is not supported; use 'tool'.", param=f"messages[{index}].role")
        # Most chat templates know no "developer" role; it is the system prompt.
        role = "system" if message.role == "developer" else message.role
        plain: dict[str, Any] = {"role": role, "content": content_of_message(message.content, index)}
        if isinstance(message, oa.AssistantMessage) and message.tool_calls:
            plain["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if isinstance(message, oa.ToolMessage):
            plain["tool_call_id"] = message.tool_call_id
        out.append(plain)
    return out


def file_parts(body: oa.ChatCompletionRequest) -> Found:
    """The request's `file` parts, each with the callback that puts its text in its place."""
    found: Found = []
    for index, number, part, replace_part in file_parts_of(body.messages, oa.FilePart):
        param = f"messages[{index}].content[{number}].file"
        file = part.file
        if (file.file_id is None) == (file.file_data is None):
            raise invalid_request(f"{param}: send either file_id or file_data.", param=param)
        if file.file_id is not None:
            attachment = Attachment(f"{param}.file_id", file_id=file.file_id, filename=file.filename)
        else:
            assert file.file_data is not None
            attachment = from_data_url(file.file_data, f"{param}.file_data", file.filename)
        found.append((attachment, lambda text, put=replace_part: put(oa.TextPart(type="text", text=text))))
    return found


def function_tools(body: oa.ChatCompletionRequest) -> list[oa.FunctionTool]:
    return [tool for tool in body.tools or [] if isinstance(tool, oa.FunctionTool)]


def hosted_tools(body: oa.ChatCompletionRequest) -> list[tuple[HostedTool, str]]:
    """The hosted tools a request asks for, each with the param that asked."""
    wanted: list[tuple[HostedTool, str]] = []
    if body.web_search_options is not None:
        wanted.append(("web_search", "web_search_options"))
    for index, tool in enumerate(body.tools or []):
        if not isinstance(tool, oa.FunctionTool):
            wanted.append((tool.type, f"tools[{index}]"))
    return wanted


def agent_plan(body: oa.ChatCompletionRequest, request: Request) -> AgentPlan | None:
    wanted = hosted_tools(body)
    if not wanted:
        if body.max_tool_rounds is not None or body.session_id is not None:
            param = "max_tool_rounds" if body.max_tool_rounds is not None else "session_id"
            raise invalid_request(f"'{param}' needs a hosted tool (web_search_options, or a code_interpreter, "
                                  "web_search or shell tool).", param=param)
        return None
    if (body.n or 1) > 1:
        raise invalid_request("n must be 1 when the server runs hosted tools.", param="n")
    hosted = {tool for tool, _ in wanted}
    names = {tool.function.name for tool in function_tools(body)}
    clash = hosted & names
    if clash:
        raise invalid_request(f"The function name '{sorted(clash)[0]}' is the name of a hosted tool of this request.",
                              param="tools")
    choice = body.tool_choice
    forced: str | None = None
    if isinstance(choice, oa.NamedToolChoice) and choice.function.name in hosted:
        forced = choice.function.name
    elif choice == "required":
        forced = "required"
    elif choice == "none":
        raise invalid_request("tool_choice 'none' turns off the hosted tools this request asks for.", param="tool_choice")
    return checked_plan(request, wanted, forced=forced, max_rounds=body.max_tool_rounds)


def tool_calling(body: oa.ChatCompletionRequest, hosted: AgentPlan | None = None) -> ToolCalling | None:
    choice = body.tool_choice
    tools = function_tools(body)
    if hosted is not None and (hosted.forced is not None or not tools):
        choice = "auto"  # the agent loop forces the first round itself (router/agent_loop.py)
    if choice == "none" or (not tools and choice in (None, "auto")):
        return None
    if not tools:
        raise invalid_request("tool_choice needs tools to choose from.", param="tool_choice")
    definitions = [tool.model_dump(exclude_none=True) for tool in tools]
    parallel = body.parallel_tool_calls is not False
    if isinstance(choice, oa.NamedToolChoice):
        names = [tool.function.name for tool in tools]
        if choice.function.name not in names:
            raise invalid_request(
                f"tool_choice names '{choice.function.name}', which is not among the tools ({', '.join(names)}).",
                param="tool_choice",
            )
        return ToolCalling(definitions, mode="named", name=choice.function.name, parallel=False)
    return ToolCalling(definitions, mode=choice or "auto", parallel=parallel)


def backend_request(body: oa.ChatCompletionRequest, hosted: AgentPlan | None = None) -> ChatRequest:
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return ChatRequest(
        messages=to_backend_messages(body.messages),
        sampling=sampling_from(body, max_tokens=body.token_limit(), logprobs=logprobs),
        constraint=constraint_from(body.response_format, body.grammar),
        tools=tool_calling(body, hosted),
    )


@router.post(ENDPOINT, response_model=oa.ChatCompletion, responses={400: {"model": oa.ErrorResponse}})
async def create_chat_completion(body: oa.ChatCompletionRequest, request: Request) -> Response:
    entry = resolve_model(request, body.model, "chat", ENDPOINT)
    reject_unsupported(body)
    limits = limits_for(request)
    check_message_count(len(body.messages), limits, "messages")  # cheap, before anything walks them
    reject_lone_surrogates(body)
    plan = agent_plan(body, request)
    attached = await attach(request, file_parts(body))
    base = backend_request(body, plan)
    base.attached_files = attached
    check_chat_request(
        base,
        limits,
        prompt_param="messages",
        schema_param="response_format.json_schema.schema",
        parameters_param="tools[{}].function.parameters",
    )
    await resolve_images(request, entry, base)
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    if plan is not None:
        renderer = ChatRenderer(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), entry.id, 1, include_usage)
        renderer.session_id = body.session_id
        runtime = agent_runtime(request)
        agent = await runtime.events(request, entry, base, plan, session_id=body.session_id)
        return await answer(request, agent, renderer, bool(body.stream))
    n = body.n or 1
    requests = [replace(base, sampling=replace(base.sampling, seed=seed_for_choice(base.sampling.seed, i))) for i in range(n)]
    builders = [ChoiceBuilder(i, entry.model.reasoning_tags, base.tools is not None) for i in range(n)]
    renderer = ChatRenderer(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), entry.id, n, include_usage)
    events = choices(lambda r: entry.stream("chat", r), requests, builders, entry.admission.capacity)
    return await answer(request, events, renderer, bool(body.stream))


@dataclass
class ChoiceState:
    """What one choice said so far, for the whole message of a plain answer."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)  # [id, name, arguments]
    logprobs: list[TokenLogprob] | None = None
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)  # for the next chunk
    finish: Finish | None = None
    started: bool = False
    annotations: list[dict[str, Any]] = field(default_factory=list)  # url_citations of a searched answer

    def message(self) -> oa.ResponseMessage:
        content = "".join(self.content)
        tool_calls = [
            oa.ResponseToolCall(id=i, function=oa.FunctionCall(name=n, arguments=a)) for i, n, a in self.calls
        ]
        if tool_calls and not content.strip():
            content = ""
        return oa.ResponseMessage(
            content=content if (content or not tool_calls) else None,
            annotations=self.annotations,
            tool_calls=tool_calls or None,
            reasoning_content="".join(self.reasoning) or None,
        )


class ChatRenderer(OpenAIChunks):
    """Chat completions: `chat.completion.chunk` frames, or the whole `chat.completion`."""

    def __init__(self, completion_id: str, created: int, model: str, n: int, include_usage: bool = False) -> None:
        super().__init__(completion_id, "chat.completion.chunk", created, model, include_usage)
        self.choices = [ChoiceState() for _ in range(n)]
        self.timeline = AgenticTimeline()  # the hosted calls of the agent loop, if it ran
        self.session_id: str | None = None

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> Frame:
        state = self.choices[index]
        logprobs, state.pending_logprobs = wire_logprobs(state.pending_logprobs), []
        return self.chunk(
            {
                "index": index,
                "delta": delta,
                "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                "finish_reason": finish_reason,
            }
        )

    def keepalive(self) -> list[Frame]:
        return [COMMENT_KEEPALIVE]

    def render(self, event: Event) -> list[Frame]:
        state = self.choices[event.choice]
        frames = []
        if not state.started:  # the role chunk comes with the model's first event, before its first token
            state.started = True
            frames.append(self._chunk(event.choice, {"role": "assistant", "content": ""}))
        if isinstance(event, PromptSize):
            pass
        elif isinstance(event, HostedCallStarted | HostedCallDone):
            frames.append(Frame(self.timeline.progress(event), "agentic_tool_call_progress"))
        elif isinstance(event, TokenLogprobs):
            state.pending_logprobs += event.entries
            state.logprobs = (state.logprobs or []) + list(event.entries)
        elif isinstance(event, ContentDelta):
            state.content.append(event.text)
            frames.append(self._chunk(event.choice, {"content": event.text}))
        elif isinstance(event, ReasoningDelta):
            state.reasoning.append(event.text)
            frames.append(self._chunk(event.choice, {"reasoning_content": event.text}))
        elif isinstance(event, ToolCallOpened):
            state.calls.append([event.id, event.name, ""])
            function = {"name": event.name, "arguments": ""}
            call = {"index": event.index, "id": event.id, "type": "function", "function": function}
            frames.append(self._chunk(event.choice, {"tool_calls": [call]}))
        elif isinstance(event, ToolArgumentsDelta):
            state.calls[event.index][2] += event.arguments
            call = {"index": event.index, "function": {"arguments": event.arguments}}
            frames.append(self._chunk(event.choice, {"tool_calls": [call]}))
        elif isinstance(event, Finish):
            state.finish = event
            self.prompt_tokens = event.prompt_tokens
            if event.choice == 0:  # later choices find the prompt cached by the first
                self.cached_tokens = event.cached_tokens
            self.completion_tokens += event.completion_tokens
            citations = self.timeline.citations("".join(state.content))
            if citations:
                state.annotations = citations
                frames.append(self._chunk(event.choice, {"annotations": citations}))
            frames.append(self._chunk(event.choice, {}, event.finish_reason))
        return frames

    def result(self) -> dict[str, Any]:
        choices = []
        for index, state in enumerate(self.choices):
            assert state.finish is not None
            logprobs = wire_logprobs(state.logprobs) if state.logprobs is not None else None
            choices.append(
                oa.Choice(
                    index=index,
                    message=state.message(),
                    logprobs=oa.ChoiceLogprobs(content=logprobs) if logprobs is not None else None,  # type: ignore[arg-type]
                    finish_reason=state.finish.finish_reason,  # type: ignore[arg-type]
                )
            )
        completion = oa.ChatCompletion(
            id=self.head["id"],
            created=self.head["created"],
            model=self.head["model"],
            choices=choices,
            usage=oa.Usage(**self.usage()),
        )
        body = completion.model_dump(mode="json")
        if self.timeline.records:
            body["agentic_tool_calls"] = self.timeline.records
        if self.session_id is not None:
            body["session_id"] = self.session_id
        for choice in body["choices"]:
            message = choice["message"]
            for optional in ("tool_calls", "reasoning_content"):
                if message[optional] is None:
                    del message[optional]
        return body
