"""Responses API wire types of the hosted tools this server runs (web search,
code interpreter, shell): the tools a request declares, the hosted tool
choices, and the output items that show each call (OpenAI's
WebSearchToolCall, CodeInterpreterToolCall, FunctionShellCall and
FunctionShellCallOutput). The shell tool's own param is in
modelyard.schemas.skills (it carries the skills)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from modelyard.schemas.openai import Lenient, Strict
from pydantic import BaseModel, Field

WEB_SEARCH_TYPES = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")
# include values that add to hosted call items
SOURCES_INCLUDE = "web_search_call.action.sources"
OUTPUTS_INCLUDE = "code_interpreter_call.outputs"


# --- tools --------------------------------------------------------------------


class WebSearchFilters(Lenient):
    allowed_domains: list[str] | None = None


class WebSearchToolParam(Lenient):
    """`web_search` and its preview and dated names; newer keys are accepted."""

    type: Literal["web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"]
    filters: WebSearchFilters | None = None
    user_location: Any = None  # accepted, ignored: the provider is not asked by location
    search_context_size: str | None = None  # accepted, ignored: [agent.search] sets how much is shown
    # False (Codex's default, "cached" search): no live web access; see router/response_agent.py.
    external_web_access: bool | None = None


class CodeInterpreterAuto(Lenient):
    type: Literal["auto"]
    file_ids: list[str] | None = Field(default=None, max_length=50)
    memory_limit: Any = None  # accepted, ignored: [agent.sandbox] sets the limits
    network_policy: Any = None  # accepted, ignored: [agent.sandbox] network


class CodeInterpreterToolParam(Strict):
    type: Literal["code_interpreter"]
    # A container id (`cntr_…`: a session of this server) or a new container.
    container: str | CodeInterpreterAuto
    allowed_callers: Any = None


class HostedToolChoice(Strict):
    """OpenAI's hosted tool choice ({"type": "web_search_preview"}, ..., {"type": "shell"})."""

    type: Literal[
        "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11", "code_interpreter",
        "shell",
    ]


# --- output items -------------------------------------------------------------


class WebSearchSource(BaseModel):
    type: Literal["url"] = "url"
    url: str


def _absent_if_none(value: Any) -> bool:
    return value is None


class WebSearchAction(BaseModel):
    type: Literal["search"] = "search"
    query: str = ""
    queries: list[str] = Field(default_factory=list)
    # Shown with include ["web_search_call.action.sources"] (kept in the store either way).
    sources: list[WebSearchSource] | None = Field(default=None, exclude_if=_absent_if_none)


class WebSearchCallOutput(BaseModel):
    """A `web_search_call` output item: a search the server ran for the model."""

    id: str
    type: Literal["web_search_call"] = "web_search_call"
    status: Literal["in_progress", "searching", "completed", "failed"] = "in_progress"
    action: WebSearchAction = Field(default_factory=WebSearchAction)


class CodeInterpreterLogs(BaseModel):
    type: Literal["logs"] = "logs"
    logs: str


class CodeInterpreterImage(BaseModel):
    type: Literal["image"] = "image"
    url: str  # this server's /v1/files/{id}/content


class CodeInterpreterCallOutput(BaseModel):
    """A `code_interpreter_call` output item: Python the server ran in a container (a session)."""

    id: str
    type: Literal["code_interpreter_call"] = "code_interpreter_call"
    status: Literal["in_progress", "interpreting", "completed", "incomplete", "failed"] = "in_progress"
    container_id: str
    code: str | None = ""
    # With include ["code_interpreter_call.outputs"] (kept in the store either way); null otherwise.
    outputs: list[Annotated[CodeInterpreterLogs | CodeInterpreterImage, Field(discriminator="type")]] | None = None


class ShellAction(BaseModel):
    commands: list[str] = Field(default_factory=list)
    timeout_ms: int | None = None
    max_output_length: int | None = None


class ContainerEnvironment(BaseModel):
    type: Literal["container_reference"] = "container_reference"
    container_id: str


class ShellCallOutput(BaseModel):
    """A `shell_call` output item: commands the server ran in a container for the model."""

    id: str
    type: Literal["shell_call"] = "shell_call"
    call_id: str
    action: ShellAction = Field(default_factory=ShellAction)
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"
    environment: ContainerEnvironment | None = None


class ShellExit(BaseModel):
    type: Literal["exit"] = "exit"
    exit_code: int  # negative: the signal that ended it; -1: the command never ran


class ShellTimeout(BaseModel):
    type: Literal["timeout"] = "timeout"


class ShellContent(BaseModel):
    """What one command printed, and how it ended."""

    stdout: str = ""
    stderr: str = ""
    outcome: Annotated[ShellExit | ShellTimeout, Field(discriminator="type")]


class ShellResultOutput(BaseModel):
    """A `shell_call_output` output item: each command's output, in the order they ran."""

    id: str
    type: Literal["shell_call_output"] = "shell_call_output"
    call_id: str
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"
    output: list[ShellContent] = Field(default_factory=list)
    max_output_length: int | None = None


HostedItem = WebSearchCallOutput | CodeInterpreterCallOutput | ShellCallOutput | ShellResultOutput
HOSTED_ITEM_TYPES = ("web_search_call", "code_interpreter_call", "shell_call", "shell_call_output")
