"""The hosted tools of the agentic runtime as the model sees them, and what
each call produced: the one vocabulary between the tool loop
(router/agent_loop.py), the tools that run (web search: router/web_search.py;
code and shell: router/agent_sessions.py over router/sandbox.py) and the API
surfaces that show a timeline of what ran (chat's `agentic_tool_calls`,
Responses' `web_search_call` / `code_interpreter_call` / `shell_call` items,
Messages' `server_tool_use` blocks).

A chat model knows one kind of tool: a function with JSON arguments. So each
hosted tool is offered as a function (`FUNCTIONS`); when the model calls one,
the loop runs it and feeds `Outcome.for_model()` back as the tool message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

HostedTool = Literal["web_search", "code_interpreter", "shell"]

FUNCTIONS: dict[str, dict[str, Any]] = {
    "web_search": {
        "name": "web_search",
        "description": "Search the web (or the server's document collection) and get back the top results with "
        "their URLs, titles and text. Cite the URLs you use.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for."}},
            "required": ["query"],
        },
    },
    "code_interpreter": {
        "name": "code_interpreter",
        "description": "Run Python 3 code in a sandbox and get back its stdout and stderr. State (variables, "
        "imports, files in the current folder) persists across calls of one conversation. Print what you want to see. "
        "Files written to the current folder are returned to the user.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
    "shell": {
        "name": "shell",
        "description": "Run shell commands (/bin/sh) in a sandbox, one after another in the same working folder, and "
        "get back each one's stdout, stderr and exit code. No network.",
        "parameters": {
            "type": "object",
            "properties": {
                "commands": {"type": "array", "items": {"type": "string"}, "description": "The command lines to run."}
            },
            "required": ["commands"],
        },
    },
}


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


@dataclass(frozen=True)
class OutputFile:
    """A file a run wrote and named as output, now in the /v1/files store."""

    file_id: str
    filename: str
    bytes: int
    content_type: str

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


@dataclass(frozen=True)
class SearchSource:
    url: str
    title: str
    text: str  # the provider's snippet, or the fetched page's text


@dataclass(frozen=True)
class SearchOutcome:
    query: str
    sources: tuple[SearchSource, ...] = ()
    error: str | None = None  # the provider failed (down, slow, refused): the model is told and goes on
    duration: float = 0.0
    tool: HostedTool = field(default="web_search", init=False)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def for_model(self, limit: int) -> str:
        if self.error is not None:
            return f"The search failed: {self.error}"
        if not self.sources:
            return f"No results for {self.query!r}."
        lines = [f"[{n}] {s.title}\nURL: {s.url}\n{s.text}" for n, s in enumerate(self.sources, 1)]
        return cut("\n\n".join(lines), limit)

    def timeline(self) -> dict[str, Any]:
        """mistral.rs's `data` of a complete web search (`agentic_tool_call_progress`)."""
        data: dict[str, Any] = {"tool_type": "web_search", "query": self.query, "results_count": len(self.sources),
                                "sources": [s.url for s in self.sources], "titles": [s.title for s in self.sources]}
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class CodeOutcome:
    code: str
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # why the run failed: "timeout", "cpu_limit", an exception's last line, a refusal
    exit_code: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    files: tuple[OutputFile, ...] = ()  # images included
    session_id: str | None = None
    state_lost: str | None = None  # this ran in a fresh interpreter: why the earlier calls' state is gone
    tool: HostedTool = field(default="code_interpreter", init=False)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def images(self) -> tuple[OutputFile, ...]:
        return tuple(f for f in self.files if f.is_image)

    def for_model(self, limit: int) -> str:
        parts = []
        if self.state_lost is not None:
            parts.append(f"note: this ran in a fresh Python interpreter ({self.state_lost}): variables, imports and "
                         "definitions of earlier calls are gone; files in the working folder remain.")
        if self.stdout:
            parts.append(f"stdout:\n{self.stdout}")
        if self.stderr:
            parts.append(f"stderr:\n{self.stderr}")
        if self.error is not None:
            parts.append(f"error: {self.error}")
        if self.files:
            parts.append("files written: " + ", ".join(f.filename for f in self.files))
        return cut("\n".join(parts) or "(no output)", limit)

    def timeline(self) -> dict[str, Any]:
        """mistral.rs's `data` of a complete code execution, with the files it wrote (ids in /v1/files)."""
        data: dict[str, Any] = {
            "tool_type": "code_execution",
            "code": self.code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "state_lost": self.state_lost,
            "execution_time_ms": round(self.duration * 1000),
            "images": [f.file_id for f in self.images],
            "file_ids": [f.file_id for f in self.files],
        }
        if self.error is not None:
            data["exception"] = self.error
        return data


@dataclass(frozen=True)
class CommandResult:
    command: str
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None  # "timeout", "cpu_limit", "file_size_limit", "signal SIGKILL", a refusal


@dataclass(frozen=True)
class ShellOutcome:
    commands: tuple[str, ...]
    results: tuple[CommandResult, ...] = ()
    error: str | None = None  # the call itself failed (bad arguments, no sandbox)
    duration: float = 0.0
    files: tuple[OutputFile, ...] = ()
    session_id: str | None = None
    tool: HostedTool = field(default="shell", init=False)

    @property
    def failed(self) -> bool:
        return self.error is not None or any(r.timed_out or r.error is not None for r in self.results)

    def for_model(self, limit: int) -> str:
        if self.error is not None and not self.results:
            return f"error: {self.error}"
        blocks = []
        for r in self.results:
            lines = [f"$ {r.command}"]
            if r.stdout:
                lines.append(r.stdout.rstrip("\n"))
            if r.stderr:
                lines.append(f"stderr: {r.stderr.rstrip()}")
            lines.append(f"exit code: {r.exit_code}" + (f" ({r.error})" if r.error else ""))
            blocks.append("\n".join(lines))
        return cut("\n\n".join(blocks), limit)

    def timeline(self) -> dict[str, Any]:
        """mistral.rs's `data` of a complete shell call (stdout and stderr of all its commands, the last exit
        code), with each command's own result in `outputs`."""
        last = self.results[-1] if self.results else None
        data: dict[str, Any] = {
            "tool_type": "shell",
            "commands": list(self.commands),
            "stdout": "".join(r.stdout for r in self.results),
            "stderr": "".join(r.stderr for r in self.results),
            "exit_code": last.exit_code if last is not None else None,
            "timed_out": any(r.timed_out for r in self.results),
            "status": "failed" if self.failed else "completed",
            "outputs": [
                {"command": r.command, "stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code,
                 "timed_out": r.timed_out, "error": r.error}
                for r in self.results
            ],
            "execution_time_ms": round(self.duration * 1000),
            "file_ids": [f.file_id for f in self.files],
        }
        if self.error is not None:
            data["error"] = self.error
        return data


Outcome = SearchOutcome | CodeOutcome | ShellOutcome
TOOL_TYPES = {"web_search": "web_search", "code_interpreter": "code_execution", "shell": "shell"}  # mistral.rs's tool_type


def calling_data(tool: HostedTool, arguments: dict[str, Any]) -> dict[str, Any]:
    """mistral.rs's `data` of a call that starts: its tool type and arguments."""
    return {"tool_type": TOOL_TYPES[tool], **arguments}


def parse_arguments(tool: str, arguments: str) -> dict[str, Any] | str:
    """A hosted call's arguments, checked: the dict the tool takes, or why not (told to the model)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        return f"the arguments are not JSON ({exc.msg})"
    if not isinstance(parsed, dict):
        return "the arguments must be a JSON object"
    unusable = _unusable_text(parsed)
    if unusable is not None:
        return unusable
    if tool == "web_search":
        query = parsed.get("query")
        return {"query": query.strip()} if isinstance(query, str) and query.strip() else "give a non-empty `query` string"
    if tool == "code_interpreter":
        code = parsed.get("code")
        return {"code": code} if isinstance(code, str) and code.strip() else "give the Python `code` to run, as a string"
    commands = parsed.get("commands", parsed.get("command"))
    if isinstance(commands, str):
        commands = [commands]
    if isinstance(commands, list) and commands and all(isinstance(c, str) for c in commands):
        return {"commands": commands}
    return "give `commands`, a list of command lines"


def _unusable_text(value: Any) -> str | None:
    """Why strings in the arguments cannot reach a program (a lone surrogate is not UTF-8; a NUL byte cannot
    be in an argv string), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "the arguments hold text that is not valid Unicode (a lone surrogate)"
        return "the arguments hold a NUL character" if "\0" in value else None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            found = _unusable_text(item)
            if found is not None:
                return found
    return None


def with_new_sources(sources: list[SearchSource], found: tuple[SearchSource, ...]) -> list[SearchSource]:
    """`sources` (an answer's, from every search so far) and the ones of `found` whose URL it lacks, in order."""
    known = {source.url for source in sources}
    return sources + [source for source in found if source.url not in known]


def cited_spans(text: str, sources: list[SearchSource]) -> list[tuple[int, int, SearchSource]]:
    """Where an answer cites the sources a search gave it: each source's URL where the text quotes it, each
    `[n]` marker (the numbering of `SearchOutcome.for_model`); when it cites none that way, the whole answer
    cites every source it was given (the answer was written from them). Sorted by position."""
    if not sources or not text:
        return []
    spans: list[tuple[int, int, SearchSource]] = []
    for source in sources:
        start = text.find(source.url)
        while start != -1:
            spans.append((start, start + len(source.url), source))
            start = text.find(source.url, start + len(source.url))
    for number, source in enumerate(sources, 1):
        marker = f"[{number}]"
        start = text.find(marker)
        while start != -1:
            spans.append((start, start + len(marker), source))
            start = text.find(marker, start + len(marker))
    if not spans:
        spans = [(0, len(text), source) for source in sources]
    return sorted(spans, key=lambda span: (span[0], span[1]))
