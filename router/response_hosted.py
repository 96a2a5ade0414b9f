"""What the Responses API shows of the agent loop (router/agent_loop.py): each
hosted call the server ran becomes OpenAI's own output item and stream
events, and the answer written from them carries citations.

- web search: a `web_search_call` item (`ws_…`; `action` of type `search`
  with the query; its `sources` with include
  ["web_search_call.action.sources"]), streamed as
  `response.web_search_call.in_progress`, `.searching`, `.completed`;
- code interpreter: a `code_interpreter_call` item (`ci_…`, the code, the
  `container_id`; its `outputs`, the logs and the images as URLs of
  /v1/files, with include ["code_interpreter_call.outputs"], null
  otherwise), streamed as `response.code_interpreter_call.in_progress`,
  `response.code_interpreter_call_code.delta` / `.done`,
  `response.code_interpreter_call.interpreting`, `.completed`;
- shell: a `shell_call` item (`sh_…`, the commands, the container as its
  `environment`) with `response.shell_call_command.added` / `.delta` /
  `.done` per command, then a `shell_call_output` item (`sho_…`) with
  `response.shell_call_output_content.delta` / `.done` per command.

A call that failed (the search provider down, the code raising or timing
out) has status `failed` where the item allows it (web search, code); its
`.completed` event is not sent. A shell_call_output has no failed status:
it is completed, and each command's outcome (`exit` with its code, or
`timeout`) and stderr say what went wrong. The model is told in every case
and goes on.

The final message's text gets `url_citation` annotations for the sources of
the searches (router/agent_tools.py cited_spans) and `container_file_citation`
annotations for the files the code and commands wrote, each announced by a
`response.output_text.annotation.added` event.

The store keeps every field; what `include` did not ask for is left out of
what the client sees (`shown_item`), so that a later GET with `include` can
show it, as OpenAI's does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelyard.router import events as ev
from modelyard.router.agent_tools import CodeOutcome, OutputFile, SearchOutcome, SearchSource, ShellOutcome, cited_spans, with_new_sources
from modelyard.router.response_runs import Event, ResponseRun, new_id
from modelyard.router.response_tools import ToolTarget
from modelyard.schemas import responses as rs
from modelyard.schemas import responses_hosted as hs
from pydantic import BaseModel


def shown_item(item: dict[str, Any], include: Iterable[str]) -> dict[str, Any]:
    """A stored output item as a client that asked for `include` sees it."""
    kind = item.get("type")
    if kind == "web_search_call" and hs.SOURCES_INCLUDE not in include:
        action = item.get("action")
        if isinstance(action, dict) and "sources" in action:
            item = {**item, "action": {k: v for k, v in action.items() if k != "sources"}}
    elif kind == "code_interpreter_call" and hs.OUTPUTS_INCLUDE not in include and item.get("outputs") is not None:
        item = {**item, "outputs": None}
    return item


def shown_response(response: dict[str, Any], include: Iterable[str]) -> dict[str, Any]:
    wanted = set(include)
    return {**response, "output": [shown_item(item, wanted) for item in response.get("output", [])]}


def file_spans(text: str, files: list[OutputFile]) -> list[tuple[int, int, OutputFile]]:
    """Where an answer names the files a run wrote; a file it does not name is cited by the whole answer."""
    if not text:
        return []
    spans: list[tuple[int, int, OutputFile]] = []
    for file in files:
        found = False
        start = text.find(file.filename)
        while start != -1:
            found = True
            spans.append((start, start + len(file.filename), file))
            start = text.find(file.filename, start + len(file.filename))
        if not found:
            spans.append((0, len(text), file))
    return spans


class AgentRun(ResponseRun):
    """A response whose run went through the agent loop: ResponseRun, plus the hosted calls and citations."""

    def __init__(
        self,
        response: rs.ResponseObject,
        reasoning_tags: list[str],
        parse_tools: bool,
        targets: dict[str, ToolTarget] | None = None,
        seal_reasoning: bool = False,
        *,
        container_id: str,
        files_url: str,
        include: Iterable[str] = (),
    ) -> None:
        super().__init__(response, reasoning_tags, parse_tools, targets, seal_reasoning)
        self.container_id = container_id  # the session the code and commands run in
        self.files_url = files_url.rstrip("/")  # …/v1/files of this server, for image URLs
        self.include = frozenset(include)
        self.calls: dict[str, list[Any]] = {}  # call id → the call's items, with their output indexes
        self.sources: list[SearchSource] = []  # of every search, each URL once
        self.files: list[OutputFile] = []  # written by the code and commands, each once

    def snapshot(self) -> dict[str, Any]:
        return shown_response(self.stored(), self.include)

    def _item_json(self, item: BaseModel) -> dict[str, Any]:
        return shown_item(super()._item_json(item), self.include)

    def apply(self, event: ev.Event) -> list[Event]:
        if isinstance(event, ev.HostedCallStarted):
            self.pending_space = ""  # whitespace before a call makes no message
            return self._close() + self._started(event)
        if isinstance(event, ev.HostedCallDone):
            return self._done(event)
        if isinstance(event, ev.Finish):
            events: list[Event] = []
            output = self.response.output
            if self.open is None and output and output[-1].type in hs.HOSTED_ITEM_TYPES:
                events += self._open_message()  # the model said nothing after its tools: still a message
            return events + self._annotate() + super().apply(event)
        return super().apply(event)

    # items

    def _put(self, item: hs.HostedItem) -> tuple[int, list[Event]]:
        self.response.output.append(item)
        index = len(self.response.output) - 1
        return index, [self._event("response.output_item.added", output_index=index, item=self._item_json(item))]

    def _item_done(self, index: int, item: hs.HostedItem) -> Event:
        return self._event("response.output_item.done", output_index=index, item=self._item_json(item))

    def _phase(self, kind: str, index: int, item: hs.HostedItem) -> Event:
        return self._event(kind, output_index=index, item_id=item.id)

    def _started(self, event: ev.HostedCallStarted) -> list[Event]:
        if event.tool == "web_search":
            return self._search_started(event)
        if event.tool == "code_interpreter":
            return self._code_started(event)
        return self._shell_started(event)

    def _done(self, event: ev.HostedCallDone) -> list[Event]:
        outcome = event.outcome
        if isinstance(outcome, SearchOutcome):
            return self._search_done(event.call_id, outcome)
        if isinstance(outcome, CodeOutcome):
            events = self._code_done(event.call_id, outcome)
        else:
            events = self._shell_done(event.call_id, outcome)
        known = {f.file_id for f in self.files}
        self.files += [f for f in outcome.files if f.file_id not in known]
        return events

    # web search

    def _search_started(self, event: ev.HostedCallStarted) -> list[Event]:
        query = str(event.arguments.get("query", ""))
        item = hs.WebSearchCallOutput(id=new_id("ws"), action=hs.WebSearchAction(query=query, queries=[query] if query else []))
        index, events = self._put(item)
        self.calls[event.call_id] = [index, item]
        events.append(self._phase("response.web_search_call.in_progress", index, item))
        item.status = "searching"
        events.append(self._phase("response.web_search_call.searching", index, item))
        return events

    def _search_done(self, call_id: str, outcome: SearchOutcome) -> list[Event]:
        index, item = self.calls[call_id]
        item.action.sources = [hs.WebSearchSource(url=source.url) for source in outcome.sources]
        self.sources = with_new_sources(self.sources, outcome.sources)
        events = []
        if outcome.failed:
            item.status = "failed"
        else:
            item.status = "completed"
            events.append(self._phase("response.web_search_call.completed", index, item))
        return events + [self._item_done(index, item)]

    # code interpreter

    def _code_started(self, event: ev.HostedCallStarted) -> list[Event]:
        code = str(event.arguments.get("code", ""))
        item = hs.CodeInterpreterCallOutput(id=new_id("ci"), container_id=self.container_id)
        index, events = self._put(item)
        self.calls[event.call_id] = [index, item]
        events.append(self._phase("response.code_interpreter_call.in_progress", index, item))
        if code:
            events.append(self._event("response.code_interpreter_call_code.delta", output_index=index, item_id=item.id, delta=code))
        item.code = code
        events.append(self._event("response.code_interpreter_call_code.done", output_index=index, item_id=item.id, code=code))
        item.status = "interpreting"
        events.append(self._phase("response.code_interpreter_call.interpreting", index, item))
        return events

    def _code_done(self, call_id: str, outcome: CodeOutcome) -> list[Event]:
        index, item = self.calls[call_id]
        logs = outcome.stdout + outcome.stderr
        if outcome.error is not None and outcome.error not in logs:
            logs += ("\n" if logs and not logs.endswith("\n") else "") + outcome.error
        outputs: list[hs.CodeInterpreterLogs | hs.CodeInterpreterImage] = [hs.CodeInterpreterLogs(logs=logs)] if logs else []
        outputs += [hs.CodeInterpreterImage(url=f"{self.files_url}/{image.file_id}/content") for image in outcome.images]
        item.outputs = outputs
        events = []
        if outcome.failed:
            item.status = "failed"
        else:
            item.status = "completed"
            events.append(self._phase("response.code_interpreter_call.completed", index, item))
        return events + [self._item_done(index, item)]

    # shell

    def _shell_started(self, event: ev.HostedCallStarted) -> list[Event]:
        commands = [str(command) for command in event.arguments.get("commands", [])]
        call = hs.ShellCallOutput(
            id=new_id("sh"), call_id=event.call_id, environment=hs.ContainerEnvironment(container_id=self.container_id)
        )
        index, events = self._put(call)
        for number, command in enumerate(commands):
            where = {"output_index": index, "command_index": number}
            events.append(self._event("response.shell_call_command.added", **where, command=""))
            events.append(self._event("response.shell_call_command.delta", **where, delta=command))
            call.action.commands.append(command)
            events.append(self._event("response.shell_call_command.done", **where, command=command))
        call.status = "completed"
        events.append(self._item_done(index, call))
        result = hs.ShellResultOutput(id=new_id("sho"), call_id=event.call_id)
        result_index, added = self._put(result)
        self.calls[event.call_id] = [result_index, result]
        return events + added

    def _shell_done(self, call_id: str, outcome: ShellOutcome) -> list[Event]:
        index, result = self.calls[call_id]
        contents = [shell_content(r.stdout, r.stderr, r.exit_code, r.timed_out, r.error) for r in outcome.results]
        if outcome.error is not None:
            if contents:
                last = contents[-1]
                last.stderr += ("\n" if last.stderr and not last.stderr.endswith("\n") else "") + outcome.error
            else:
                contents = [shell_content("", outcome.error, None, False, None)]
        events = []
        for number, content in enumerate(contents):
            where = {"item_id": result.id, "output_index": index, "command_index": number}
            delta = {"stdout": content.stdout, "stderr": content.stderr}
            events.append(self._event("response.shell_call_output_content.delta", **where, delta=delta))
            events.append(self._event("response.shell_call_output_content.done", **where, output=[content.model_dump(mode="json")]))
            result.output.append(content)
        result.status = "completed"
        return events + [self._item_done(index, result)]

    # citations

    def _annotate(self) -> list[Event]:
        message = self.open
        if not isinstance(message, rs.OutputMessage) or not (self.sources or self.files):
            return []
        part = message.content[0]
        found: list[tuple[int, int, dict[str, Any]]] = [
            (start, end, {"type": "url_citation", "start_index": start, "end_index": end, "url": s.url, "title": s.title})
            for start, end, s in cited_spans(part.text, self.sources)
        ]
        found += [
            (start, end, {"type": "container_file_citation", "start_index": start, "end_index": end,
                          "container_id": self.container_id, "file_id": f.file_id, "filename": f.filename})
            for start, end, f in file_spans(part.text, self.files)
        ]  # fmt: skip
        found.sort(key=lambda span: (span[0], span[1]))
        events = []
        for number, (_, _, annotation) in enumerate(found):
            part.annotations.append(annotation)
            events.append(
                self._event(
                    "response.output_text.annotation.added",
                    item_id=message.id,
                    output_index=len(self.response.output) - 1,
                    content_index=0,
                    annotation_index=number,
                    annotation=annotation,
                )
            )
        return events


def shell_content(stdout: str, stderr: str, exit_code: int | None, timed_out: bool, error: str | None) -> hs.ShellContent:
    """One command's output; a reason the command was killed (cpu_limit, a signal) is added to its stderr."""
    if error is not None and not timed_out and error not in stderr:
        stderr += ("\n" if stderr and not stderr.endswith("\n") else "") + f"[{error}]"
    outcome: hs.ShellExit | hs.ShellTimeout = (
        hs.ShellTimeout() if timed_out else hs.ShellExit(exit_code=exit_code if exit_code is not None else -1)
    )
    return hs.ShellContent(stdout=stdout, stderr=stderr, outcome=outcome)
