"""The agentic runtime as the surfaces use it (`yard.agent`): which hosted
tools a request may call (the config's `[agent] tools`, narrowed by the
request, refused to a key with `agent = false`), the sandbox and the search
provider those tools run with, and the session a run belongs to.

Surfaces call `checked_plan` (router/agent_plan.py) while they validate a
request (so a refusal is a plain 400 or 403), then `events` for the loop's
typed events. The sandbox
and the search provider are built at start-up; a reload that changes
`[agent.sandbox]` or `[agent.search]` rebuilds them for the next request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.adapters.base import ChatRequest
from modelyard.router.agent_loop import agent_events
from modelyard.router.agent_plan import AgentPlan
from modelyard.router.agent_sessions import Session, SessionStore, check_id
from modelyard.router.agent_tools import HostedTool, Outcome, SearchOutcome
from modelyard.router.config import LoadedConfig
from modelyard.router.deps import get_yard, owner_of
from modelyard.router.errors import APIError, invalid_request
from modelyard.router.events import Event
from modelyard.router.registry import ModelEntry
from modelyard.router.response_service import storage_path
from modelyard.router.sandbox import Sandbox, SandboxUnavailable
from modelyard.router.skill_archive import ArchiveLimits
from modelyard.router.web_search import SearchProvider, provider_for, web_search
from modelyard.schemas.config import AgentConfig, SandboxConfig, SearchConfig
from starlette.requests import Request

if TYPE_CHECKING:
    from modelyard.router.file_store import FileStore
    from modelyard.router.skill_store import SkillStore
    from modelyard.router.skill_requests import SkillRequest

log = logging.getLogger("modelyard.agent")


class AgentRuntime:
    def __init__(self, loaded: LoadedConfig, files: Callable[[], FileStore | None],
                 skills: Callable[[], SkillStore | None] | None = None) -> None:
        self.files = files
        self.sandbox: Sandbox | None = None
        self._sandbox_config: SandboxConfig | None = None
        self.search: SearchProvider | None = None
        self._search_config: SearchConfig | None = None
        self._config_dir = loaded.base_dir
        self._lock = asyncio.Lock()
        folder = storage_path(loaded).parent / "sessions"
        self.sessions = SessionStore(loaded.config.agent, self._sandbox_for_sessions, folder, files, skills=skills,
                                     skill_limits=ArchiveLimits.of(loaded.config.storage))
        self._startup = loaded.config.agent

    def _sandbox_for_sessions(self) -> Sandbox | None:
        return self.sandbox  # None while [agent] tools run no code: the sessions then say code is not enabled

    async def start(self) -> None:
        await self.ensure(self._startup, self._config_dir)
        await self.sessions.start()

    async def close(self) -> None:
        await self.sessions.close()
        if self.search is not None:
            await self.search.close()

    @property
    def isolation(self) -> str | None:
        return self.sandbox.isolation if self.sandbox is not None else None

    async def ensure(self, config: AgentConfig, config_dir: Path) -> None:
        """Build the sandbox and the search provider of `config` if they differ from the ones in use."""
        async with self._lock:
            runs_code = bool({"code_interpreter", "shell"} & set(config.tools))
            if runs_code and config.sandbox != self._sandbox_config:
                # Sandbox() probes bwrap with a subprocess: not on the event loop. Only a config whose tools run
                # code needs one (so `mode = "on"` without bwrap stops only such a server from starting).
                self.sandbox = await asyncio.to_thread(Sandbox, config.sandbox)
                self._sandbox_config = config.sandbox
            self.sessions.reconfigure(config)
            if config.search != self._search_config or config_dir != self._config_dir:
                old, self.search = self.search, None
                if config.search.provider is not None:
                    provider = provider_for(config.search, config_dir)
                    await provider.start()
                    self.search = provider
                self._search_config, self._config_dir = config.search, config_dir
                if old is not None:
                    await old.close()

    async def events(
        self,
        request: Request,
        entry: ModelEntry,
        chat_request: ChatRequest,
        plan: AgentPlan,
        session_id: str | None = None,
        skills: Sequence[SkillRequest] = (),
        resume: bool = True,
    ) -> AsyncIterator[Event]:
        """The loop's events; the run's session opens when they start and is released when they end (so a stream
        that is never started holds none). A session id a client may not use is a 400 here.
        `resume`: put the session's kept tool exchanges back into a conversation the client re-sent without them
        (chat); Responses sends False: it writes a conversation's hosted calls back from their items itself."""
        loaded = get_yard(request).generation.loaded
        try:
            await self.ensure(loaded.config.agent, loaded.base_dir)
        except SandboxUnavailable as exc:  # a reload asked for mode = "on" on a machine without bubblewrap
            raise APIError(503, str(exc), code="sandbox_unavailable") from None
        if session_id is not None:
            try:
                check_id(session_id)
            except ValueError as exc:
                raise invalid_request(str(exc), param="session_id") from None
        return self._run(entry, chat_request, plan, owner_of(request), session_id, list(skills), loaded.config.agent,
                         resume)

    async def _run(self, entry: ModelEntry, chat_request: ChatRequest, plan: AgentPlan, owner: str,
                   session_id: str | None, skills: list[SkillRequest], config: AgentConfig,
                   resume: bool) -> AsyncIterator[Event]:
        session = await self.sessions.open(owner, session_id)
        try:
            if skills:
                await self.sessions.add_skills(session, skills)
            runner = SessionRunner(self, session, config, plan)
            sent = chat_request.messages
            if resume:
                chat_request.messages = session.resumed(sent)
            async for event in agent_events(lambda r: entry.stream("chat", r), chat_request, plan, runner,
                                            entry.model.reasoning_tags):
                yield event
            session.remember(sent, plan.transcript)
        finally:
            await self.sessions.release(session)


class SessionRunner:
    """Runs one request's hosted calls in its session."""

    def __init__(self, runtime: AgentRuntime, session: Session, config: AgentConfig, plan: AgentPlan) -> None:
        self.runtime = runtime
        self.session = session
        self.config = config
        self.plan = plan  # its web search filters (allowed_domains, blocked_domains)

    async def run(self, tool: HostedTool, arguments: dict[str, Any]) -> Outcome:
        if tool == "web_search":
            provider = self.runtime.search
            if provider is None:
                return SearchOutcome(query=arguments["query"], error="no search provider is configured")
            return await web_search(provider, self.config.search, arguments["query"],
                                    allowed_domains=self.plan.allowed_domains,
                                    blocked_domains=self.plan.blocked_domains)
        if tool == "code_interpreter":
            return await self.runtime.sessions.run_code(self.session, arguments["code"])
        return await self.runtime.sessions.run_shell(self.session, arguments["commands"])
