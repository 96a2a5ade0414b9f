"""What chat completions show of the agent loop, as mistral.rs does: a named
SSE event `agentic_tool_call_progress` per call as it starts and ends, the
`agentic_tool_calls` records of a whole answer, and `url_citation`
annotations on an answer written from a search."""

from __future__ import annotations

import json
from typing import Any

from modelyard.router.agent_tools import SearchOutcome, SearchSource, calling_data, cited_spans, with_new_sources
from modelyard.router.events import HostedCallDone, HostedCallStarted


class AgenticTimeline:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.sources: list[SearchSource] = []  # of every search, in order, each URL once

    def progress(self, event: HostedCallStarted | HostedCallDone) -> dict[str, Any]:
        """The payload of one `agentic_tool_call_progress` event; a finished call is also recorded."""
        if isinstance(event, HostedCallStarted):
            phase, data = "calling", calling_data(event.tool, event.arguments)
        else:
            phase, data = "complete", event.outcome.timeline()
            self._record(event)
        # `choices: []`: an SDK that reads every SSE event as a chunk sees one without choices, as it does
        # the usage chunk, instead of failing on it.
        return {"type": "agentic_tool_call_progress", "round": event.round, "tool_name": event.tool, "phase": phase,
                "call_id": event.call_id, "data": data, "choices": []}

    def _record(self, event: HostedCallDone) -> None:
        outcome = event.outcome
        if isinstance(outcome, SearchOutcome):
            self.sources = with_new_sources(self.sources, outcome.sources)
        files = getattr(outcome, "files", ())
        self.records.append({
            "round": event.round,
            "name": event.tool,
            "call_id": event.call_id,
            "arguments": json.dumps(event.arguments, ensure_ascii=False),
            "result_content": outcome.for_model(1_000_000),
            "failed": outcome.failed,
            "file_ids": [f.file_id for f in files],
            "data": outcome.timeline(),
        })

    def citations(self, content: str) -> list[dict[str, Any]]:
        """OpenAI's `url_citation` annotations of an answer, when a search ran."""
        return [
            {"type": "url_citation", "url_citation": {"start_index": start, "end_index": end, "url": s.url, "title": s.title}}
            for start, end, s in cited_spans(content, self.sources)
        ]
