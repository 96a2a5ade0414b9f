"""What a Messages response shows of the agent loop, as Anthropic's API shows
its server tools: each hosted call as a `server_tool_use` block (id
`srvtoolu_…`) followed by its result block (`web_search_tool_result`,
`code_execution_tool_result`, `bash_code_execution_tool_result`), the text
written after a search with `web_search_result_location` citations,
`usage.server_tool_use`, and the `container` (this server's session) when
code ran.

Streamed as Anthropic streams them: a server_tool_use block opens with an
empty input, gets its whole input in one input_json_delta and stops; the
result block is one content_block_start (with all of its content) and a
content_block_stop. A text block's citations go out as citations_delta
events just before its content_block_stop (they are known once its text
is). The whole message has the blocks in the order the stream sent them, so
the SDK's `get_final_message()` equals the answer of a request that does not
stream.

Search results' `encrypted_content` is the result's text, base64-encoded
(Anthropic's is encrypted; ours only has to come back): an assistant turn
sent back rebuilds from it the tool result the model read
(router/anthropic_server_tools.py). A citation's `encrypted_index` is the
base64 of the result's position among the request's search results.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.router.agent_loop import CALL_LIMIT_REACHED
from modelyard.router.agent_plan import AgentPlan
from modelyard.router.agent_tools import (
    CodeOutcome,
    HostedTool,
    SearchOutcome,
    SearchSource,
    ShellOutcome,
    cited_spans,
    with_new_sources,
)
from modelyard.router.anthropic_render import MessageRenderer, stop_reason_of
from modelyard.router.anthropic_server_tools import encoded, wire_name
from modelyard.router.events import Event, Finish, HostedCallDone, HostedCallStarted
from modelyard.router.surface import Frame
from modelyard.schemas import anthropic as an

CITED_TEXT_CHARS = 150  # Anthropic's cited_text: up to 150 characters of the cited result


def server_tool_id(call_id: str) -> str:
    return "srvtoolu_" + call_id.removeprefix("call_")


def wire_input(tool: HostedTool, arguments: dict[str, Any]) -> dict[str, Any]:
    """A server_tool_use block's input: what the call was given, as Anthropic's tool takes it ({} when the
    model's arguments were unusable)."""
    if not arguments:
        return {}
    if tool == "shell":
        return {"command": "\n".join(arguments["commands"])}  # the commands run one after another
    return dict(arguments)


def search_error_code(outcome: SearchOutcome, arguments: dict[str, Any]) -> str:
    if outcome.error == CALL_LIMIT_REACHED:
        return "max_uses_exceeded"
    return "invalid_tool_input" if not arguments else "unavailable"


def run_error_code(outcome: CodeOutcome | ShellOutcome, arguments: dict[str, Any]) -> str | None:
    """The error_code of a code or bash call that produced no result, or None for one that ran (whatever its
    exit code: a Python exception is a result with return_code 1 and the traceback in stderr)."""
    if not arguments:
        return "invalid_tool_input"
    if isinstance(outcome, CodeOutcome):
        if outcome.timed_out or outcome.error in ("timeout", "cpu_limit"):
            return "execution_time_exceeded"
        return "unavailable" if outcome.exit_code is None else None
    if any(r.timed_out or r.error in ("timeout", "cpu_limit") for r in outcome.results):
        return "execution_time_exceeded"
    return "unavailable" if not outcome.results else None


def result_block(event: HostedCallDone) -> dict[str, Any]:
    """The result block of a hosted call that ended."""
    tool_use_id = server_tool_id(event.call_id)
    outcome = event.outcome
    content: list[dict[str, Any]] | dict[str, Any]
    if isinstance(outcome, SearchOutcome):
        if outcome.error is not None:
            content = {"type": "web_search_tool_result_error",
                       "error_code": search_error_code(outcome, event.arguments)}
        else:
            content = [{"type": "web_search_result", "url": s.url, "title": s.title,
                        "encrypted_content": encoded(s.text), "page_age": None} for s in outcome.sources]
        return {"type": "web_search_tool_result", "tool_use_id": tool_use_id, "content": content}
    kind = "code_execution" if isinstance(outcome, CodeOutcome) else "bash_code_execution"
    error = run_error_code(outcome, event.arguments)
    if error is not None:
        content = {"type": f"{kind}_tool_result_error", "error_code": error}
    else:
        if isinstance(outcome, CodeOutcome):
            stdout, stderr, code = outcome.stdout, outcome.stderr, outcome.exit_code
        else:
            stdout = "".join(r.stdout for r in outcome.results)
            stderr = "".join(r.stderr for r in outcome.results)
            code = outcome.results[-1].exit_code
        content = {"type": f"{kind}_result", "stdout": stdout, "stderr": stderr,
                   "return_code": code if code is not None else -1,
                   "content": [{"type": f"{kind}_output", "file_id": f.file_id} for f in outcome.files]}
    return {"type": f"{kind}_tool_result", "tool_use_id": tool_use_id, "content": content}


def citation(source: SearchSource, position: int) -> dict[str, Any]:
    return {
        "type": "web_search_result_location",
        "url": source.url,
        "title": source.title,
        "cited_text": source.text.strip()[:CITED_TEXT_CHARS],
        "encrypted_index": base64.b64encode(str(position).encode("ascii")).decode("ascii"),
    }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ServerToolRenderer(MessageRenderer):
    """A Messages answer written over the agent loop's events (router/agent_loop.py)."""

    def __init__(self, message_id: str, model: str, plan: AgentPlan, show_thinking: bool = True,
                 session_idle: float = 1800.0) -> None:
        super().__init__(message_id, model, show_thinking)
        self.plan = plan
        self.session_idle = session_idle
        self.sources: list[SearchSource] = []  # of every search so far, each URL once
        self.searches = 0  # searches that ran (not refused)
        self.session_id: str | None = None  # the session code ran in: the response's container
        self.container: dict[str, str] | None = None
        self.last_round = 0  # the last round that called a hosted tool

    def render(self, event: Event) -> list[Frame]:
        if not isinstance(event, HostedCallStarted | HostedCallDone):
            return super().render(event)
        frames = [] if self.started else self._message_start()
        frames += self._close()
        if isinstance(event, HostedCallStarted):
            self.last_round = max(self.last_round, event.round)
            block = {"type": "server_tool_use", "id": server_tool_id(event.call_id), "name": wire_name(event.tool),
                     "input": wire_input(event.tool, event.arguments)}
            frames += self._opened({**block, "input": {}})
            self.blocks[-1] = block
            if block["input"]:
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}
                frames.append(self.frame("content_block_delta", index=len(self.blocks) - 1, delta=delta))
        else:
            self._note(event)
            frames += self._opened(result_block(event))
        return frames + [self.frame("content_block_stop", index=len(self.blocks) - 1)]

    def _opened(self, block: dict[str, Any]) -> list[Frame]:
        self.blocks.append(block)
        return [self.frame("content_block_start", index=len(self.blocks) - 1, content_block=dict(block))]

    def _note(self, event: HostedCallDone) -> None:
        outcome = event.outcome
        if isinstance(outcome, SearchOutcome):
            if event.arguments and outcome.error != CALL_LIMIT_REACHED:
                self.searches += 1
            self.sources = with_new_sources(self.sources, outcome.sources)
        elif outcome.session_id is not None:
            self.session_id = outcome.session_id

    def _close(self) -> list[Frame]:
        frames: list[Frame] = []
        if self.open and self.blocks[-1]["type"] == "text":
            citations = self._citations(self.blocks[-1]["text"])
            if citations:
                self.blocks[-1]["citations"] = citations
                index = len(self.blocks) - 1
                frames = [self.frame("content_block_delta", index=index, delta={"type": "citations_delta", "citation": c})
                          for c in citations]
        return frames + super()._close()

    def _citations(self, text: str) -> list[dict[str, Any]]:
        """The search results a text block cites (each once), when it was written after a search."""
        if not text.strip():
            return []
        cited: dict[str, dict[str, Any]] = {}
        for _, _, source in cited_spans(text, self.sources):
            if source.url not in cited:
                cited[source.url] = citation(source, self.sources.index(source))
        return list(cited.values())

    def stop_reason(self, finish: Finish) -> str:
        """Anthropic's pause_turn when the rounds ran out (the loop made the model answer without tools)."""
        reason = stop_reason_of(finish)
        return "pause_turn" if reason == "end_turn" and self.last_round >= self.plan.max_rounds else reason

    def usage(self, finish: Finish) -> dict[str, Any]:
        usage = super().usage(finish)
        if "web_search" in self.plan.tools:
            usage["server_tool_use"] = {"web_search_requests": self.searches, "web_fetch_requests": 0}
        return usage

    def ending(self) -> dict[str, Any]:
        if self.session_id is None:
            return {}
        if self.container is None:
            expires = datetime.now(UTC) + timedelta(seconds=self.session_idle)
            self.container = {"id": self.session_id, "expires_at": rfc3339(expires)}
        return {"container": self.container}

    def result(self) -> dict[str, Any]:
        finish = self.finish
        assert finish is not None
        content = [self._whole(block) for block in self.blocks]
        message = an.Message(
            id=self.message_id,
            content=content,
            model=self.model,
            stop_reason=self.stop_reason(finish),  # type: ignore[arg-type]
            stop_sequence=finish.stop_sequence,
            usage=an.Usage(**super().usage(finish)),
        ).model_dump(mode="json")
        message["usage"] = self.usage(finish)
        message.update(self.ending())
        return message

    @staticmethod
    def _whole(block: dict[str, Any]) -> dict[str, Any]:
        """A block as the whole message has it (as the stream built it up)."""
        if block["type"] == "tool_use":
            return {"type": "tool_use", "id": block["id"], "name": block["name"],
                    "input": json.loads(block["arguments"] or "{}")}
        return dict(block)
