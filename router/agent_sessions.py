"""Sessions of the agentic runtime: a working folder, a persistent Python
interpreter (router/interpreter.py) and the tool loop's history, kept between
the requests that name the same `session_id` (or Responses container id).

Sessions live in this process's memory: a restart ends them all (their
folders are removed at the next start). Each belongs to an owner (the API
key's name, "" with keys off) and ids are per owner: two keys that both say
`session_id = "work"` get two separate sessions, and neither can see, use or
delete the other's. A request without an id gets an ephemeral session, removed
at `release`. A session expires `[agent] session_idle` after its last use;
past `max_sessions`, the least recently used one not in use is closed.

Runs of one session go one at a time (a lock): code and shell commands share
its folder. After each run the files it wrote (new or changed, not hidden,
not under skills/) go to the file store (`yard.files`) as purpose
"assistants_output" and are listed on the outcome and on the session
(`Session.files`, served by router/sessions.py as the container's files).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelyard.router import session_folder
from modelyard.router.agent_tools import CodeOutcome, CommandResult, OutputFile, ShellOutcome
from modelyard.router.file_store import FileStore, TooLarge
from modelyard.router.interpreter import Interpreter
from modelyard.router.sandbox import INSIDE, Sandbox
from modelyard.router.skill_archive import ArchiveLimits
from modelyard.router.skill_requests import SkillRequest, skill_zip
from modelyard.schemas.config import AgentConfig, StorageConfig

if TYPE_CHECKING:
    from modelyard.router.skill_store import SkillStore

log = logging.getLogger("modelyard.sessions")
T = TypeVar("T")

SESSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_OUTPUT_FILES = 10  # per run; more are left in the folder, unlisted
OUTPUT_PURPOSE = "assistants_output"  # what OpenAI calls files its code interpreter wrote
OUTPUT_FILE_TTL = 24 * 3600  # seconds a run's file stays in the file store
# With the server as root, each session's processes run as a host user of its own, from this range (no real user
# has such ids): the kernel counts RLIMIT_NPROC per host user, so sessions as one user (nobody) would share
# max_processes, and a few live interpreters (3 processes each) or one session's fork bomb would stop every other.
# Host users for sessions when the server is root: each server takes a block of its own at random, since the
# kernel counts RLIMIT_NPROC per host user across every process, other servers' sandboxes included. Below 2**31:
# bwrap cannot map a larger uid ("setting up uid map: Invalid argument").
SESSION_UID_BASE, SESSION_UID_BLOCK = 2_000_000_000, 4096
SESSION_UID_BLOCKS = (2**31 - 1 - SESSION_UID_BASE) // SESSION_UID_BLOCK


def session_uids() -> range:
    start = SESSION_UID_BASE + secrets.randbelow(SESSION_UID_BLOCKS) * SESSION_UID_BLOCK
    return range(start, start + SESSION_UID_BLOCK)
NOT_ENABLED = "code execution is not enabled on this server ([agent] tools lists neither code_interpreter nor shell)"


class SessionClosed(Exception):
    """The session was deleted, expired or evicted (before or while a run)."""


@dataclass(frozen=True)
class SessionFile:
    """A file a run wrote, now in the file store under `file_id`."""

    file_id: str
    path: str  # where the code saw it (/sandbox/... under bubblewrap)
    bytes: int
    created_at: int


@dataclass(eq=False)
class Session:
    id: str
    owner: str
    workdir: Path
    created_at: float
    last_used: float
    ephemeral: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # the tool loop's own messages
    files: list[SessionFile] = field(default_factory=list)
    interpreter: Interpreter | None = None  # started by the first run_code
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # requests holding it (open .. release): never expired or evicted under them
    closed: bool = False
    running: asyncio.Task[Any] | None = None  # the sandbox work in progress, cancelled by delete
    uid: int | None = None  # its host user (session_uids()), when the server is root
    _sent: list[dict[str, Any]] = field(default_factory=list)  # the messages the last request sent

    def remember(self, sent: list[dict[str, Any]], transcript: list[dict[str, Any]]) -> None:
        """Keep a request's whole conversation, tool exchanges included (`transcript`), and what it sent."""
        self._sent, self.history = list(sent), list(transcript)

    def resumed(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The next request's messages with the kept transcript in place of the part it repeats: a client sends
        back the conversation and the answer without the hosted tool exchanges, which the model should see again.
        A client that changed the conversation gets its own messages as they are, and so does one that sent the
        exchanges back itself (Anthropic's server tool blocks: a result of a call the transcript holds)."""
        sent = self._sent
        if not self.history or messages[: len(sent)] != sent or len(messages) <= len(sent):
            return messages
        rest = messages[len(sent):]
        kept = {m.get("tool_call_id") for m in self.history if m.get("role") == "tool"}
        if any(m.get("role") == "tool" and m.get("tool_call_id") in kept for m in rest):
            return messages
        answer = self.history[-1]
        if rest[0].get("role") == "assistant" and answer.get("role") == "assistant":
            rest = rest[1:]  # the answer the client got back, which the transcript ends with
        return [*self.history, *rest]


def check_id(session_id: str) -> str:
    if not SESSION_ID.fullmatch(session_id) or session_id in (".", ".."):
        raise ValueError(f"a session id is 1 to 128 letters, digits, '_', '.' or '-' (not '.' or '..'); "
                         f"got {session_id[:140]!r}")
    return session_id


class SessionStore:
    def __init__(self, config: AgentConfig, sandbox: Callable[[], Sandbox | None] | Sandbox | None, folder: Path,
                 files: Callable[[], FileStore | None], *, skills: Callable[[], SkillStore | None] | None = None,
                 skill_limits: ArchiveLimits | None = None, file_ttl: int | None = OUTPUT_FILE_TTL) -> None:
        """`sandbox`: the one runs use, or what gives the current one (a reload may rebuild it); None: no code
        tool is configured, and runs say so. `skills`: the skill store, for skills attached by reference."""
        self.config = config
        self._sandbox = sandbox if callable(sandbox) else (lambda: sandbox)
        self._skills = skills
        self.folder = folder
        self.files = files
        self.skill_limits = skill_limits or ArchiveLimits.of(StorageConfig())
        self.file_ttl = file_ttl
        self.root: Path | None = None  # this process's sessions: folder/run-<pid>-<hex>
        self._sessions: dict[tuple[str, str], Session] = {}
        self._ephemeral: set[Session] = set()
        self._uid_range = session_uids()
        self._uids: set[int] = set()  # the host users of live sessions, from _uid_range
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def sandbox(self) -> Sandbox | None:
        return self._sandbox()

    def reconfigure(self, config: AgentConfig) -> None:
        """A reloaded [agent]: its session_idle and max_sessions from now on; a new sandbox's limits apply to
        each interpreter from its next start."""
        self.config = config

    @staticmethod
    def new_id() -> str:
        """A server-made id, as Responses' containers have."""
        return "cntr_" + secrets.token_hex(24)

    # --- life ------------------------------------------------------------------

    async def start(self) -> None:
        self.root = await asyncio.to_thread(session_folder.make_root, self.folder)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="session-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        sessions = [*self._sessions.values(), *self._ephemeral]
        await asyncio.gather(*(self._close(s) for s in sessions), return_exceptions=True)
        if self.root is not None:
            await asyncio.to_thread(session_folder.remove_tree, self.root)

    async def _sweep_forever(self) -> None:
        every = min(60.0, max(self.config.session_idle / 4, 0.05))
        while True:
            await asyncio.sleep(every)
            try:
                await self.expire()
            except Exception:
                log.exception("the session sweep failed")

    async def expire(self) -> int:
        """Close the sessions idle for longer than `session_idle`; return how many."""
        cutoff = time.time() - self.config.session_idle
        idle = [s for s in [*self._sessions.values(), *self._ephemeral] if s.last_used < cutoff and _idle(s)]
        for session in idle:
            log.info("session %r of %r expired", session.id, session.owner)
            await self._close(session)
        return len(idle)

    # --- sessions --------------------------------------------------------------

    def count(self) -> int:
        """Live sessions with an id (ephemeral ones not counted), for /health."""
        return len(self._sessions)

    async def open(self, owner: str, session_id: str | None) -> Session:
        """The owner's session `session_id` (created if new), or an ephemeral one (None). Raises ValueError
        for an invalid id. Call `release` when the request is done with it."""
        assert self.root is not None, "the session store is not started"
        now = time.time()
        if session_id is None:
            session = Session(f"tmp_{secrets.token_hex(12)}", owner, self.root / "ephemeral" / secrets.token_hex(12),
                              now, now, ephemeral=True, users=1, uid=self._take_uid())
            self._ephemeral.add(session)
            return session
        key = (owner, check_id(session_id))
        session = self._sessions.get(key)  # (its folder is made by its first run)
        if session is None:
            # A folder of its own per Session (the suffix): a session of the same id still being closed removes
            # its own folder, never the new one's.
            owner_folder = self.root / "owners" / hashlib.sha256(owner.encode()).hexdigest()[:32]
            folder = owner_folder / f"{session_id}-{secrets.token_hex(4)}"
            session = self._sessions[key] = Session(session_id, owner, folder, now, now, uid=self._take_uid())
        session.users += 1
        session.last_used = now
        try:
            await asyncio.shield(self._evict())  # a client that leaves meanwhile does not stop the eviction half-way
        except BaseException:
            session.users -= 1  # nobody will release it
            raise
        return session

    async def release(self, session: Session) -> None:
        session.users = max(session.users - 1, 0)
        session.last_used = time.time()
        if session.ephemeral:
            await self._close(session)

    async def get(self, owner: str, session_id: str) -> Session | None:
        return self._sessions.get((owner, session_id))

    async def delete(self, owner: str, session_id: str) -> bool:
        session = self._sessions.get((owner, session_id))
        if session is None:
            return False
        await self._close(session)
        return True

    def _take_uid(self) -> int | None:
        if os.geteuid() != 0:
            return None
        uid = next(u for u in self._uid_range if u not in self._uids)
        self._uids.add(uid)
        return uid

    def expires_at(self, session: Session) -> float:
        return session.last_used + self.config.session_idle

    async def _evict(self) -> None:
        while len(self._sessions) > self.config.max_sessions:
            idle = [s for s in self._sessions.values() if _idle(s)]
            if not idle:
                log.warning("%d sessions are in use, over max_sessions = %d", len(self._sessions),
                            self.config.max_sessions)
                return
            # The owner (API key) holding the most sessions gives one up, its least recently used idle one: one
            # key opening many sessions closes its own, not other keys' idle ones.
            held = collections.Counter(s.owner for s in self._sessions.values())
            oldest = min(idle, key=lambda s: (-held[s.owner], s.last_used))
            log.info("closing session %r of %r, the least recently used of the key with the most sessions "
                     "(max_sessions = %d)", oldest.id, oldest.owner, self.config.max_sessions)
            await self._close(oldest)

    async def _close(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        if self._sessions.get((session.owner, session.id)) is session:
            del self._sessions[(session.owner, session.id)]
        self._ephemeral.discard(session)
        if session.running is not None:
            session.running.cancel()
        # Shielded: a caller cancelled meanwhile (a client that left) does not leave the folder or the uid behind.
        await asyncio.shield(self._tear_down(session))

    async def _tear_down(self, session: Session) -> None:
        try:
            if session.interpreter is not None:
                await session.interpreter.close()
            async with session.lock:  # the cancelled run is done with the folder
                await asyncio.to_thread(session_folder.remove_tree, session.workdir)
        finally:
            if session.uid is not None:
                self._uids.discard(session.uid)  # its processes are gone: free to reuse

    # --- runs ------------------------------------------------------------------

    async def run_code(self, session: Session, code: str) -> CodeOutcome:
        """Run Python in the session's interpreter; the files it wrote are on the outcome."""
        sandbox = self.sandbox
        if sandbox is None:
            return CodeOutcome(code, error=NOT_ENABLED, session_id=session.id)
        try:
            async with self._use(session) as before:
                if session.interpreter is None:
                    session.interpreter = Interpreter(sandbox, session.workdir, session.uid)
                session.interpreter.sandbox = sandbox  # (a reload's new one, from the next start)
                outcome = await self._guarded(session, session.interpreter.run(code))
                written = await self._collect(session, before)
        except SessionClosed:
            return CodeOutcome(code, error="the session was closed (deleted or expired)", session_id=session.id)
        except (OSError, ValueError) as exc:  # the sandbox could not start: a folder, bwrap, permissions, an argv
            log.error("the sandbox could not run code in %s: %s", session.workdir, exc)
            return CodeOutcome(code, error=f"the sandbox could not start ({exc})", session_id=session.id)
        return replace(outcome, files=written, session_id=session.id)

    async def run_shell(self, session: Session, commands: list[str]) -> ShellOutcome:
        """Run each command line with /bin/sh in the session's folder, one after another; stop at the first
        that timed out."""
        started = time.monotonic()
        sandbox = self.sandbox
        if sandbox is None:
            return ShellOutcome(tuple(commands), error=NOT_ENABLED, session_id=session.id)
        results: list[CommandResult] = []
        written: tuple[OutputFile, ...] = ()
        try:
            async with self._use(session) as before:
                for command in commands:
                    run = await self._guarded(session, sandbox.run_shell(command, session.workdir, uid=session.uid))
                    note = "\n[output cut at the sandbox's max_output_bytes]" if run.truncated else ""
                    results.append(CommandResult(
                        command, stdout=run.stdout.decode(errors="replace") + note,
                        stderr=run.stderr.decode(errors="replace"), exit_code=run.exit_code,
                        timed_out=run.timed_out, error=run.killed_reason,
                    ))  # fmt: skip
                    if run.timed_out:
                        break
                written = await self._collect(session, before)
        except SessionClosed:
            error: str | None = "the session was closed (deleted or expired)"
        except (OSError, ValueError) as exc:
            log.error("the sandbox could not run a command in %s: %s", session.workdir, exc)
            error = f"the sandbox could not start ({exc})"
        else:
            error = None
        return ShellOutcome(tuple(commands), tuple(results), error=error, duration=time.monotonic() - started,
                            files=written, session_id=session.id)

    async def add_skills(self, session: Session, skills: Iterable[SkillRequest | bytes]) -> list[str]:
        """Unpack attached skills (a request's, or zips) into the session's skills/<name>/ folders, for the shell
        tool; their names. A zip is checked as an upload is and refused with the same 400; an unknown skill is a
        404 (APIError). A `local` environment's skills are on the client's machine: nothing to unpack."""
        store = self._skills() if self._skills is not None else None
        zips = [data for wanted in skills if (data := await skill_zip(wanted, session.owner, store)) is not None]
        names = []
        async with self._use(session):
            for data in zips:
                names.append(await asyncio.to_thread(session_folder.unpack_skill, session.workdir, data,
                                                     self.skill_limits))
        return names

    @contextlib.asynccontextmanager
    async def _use(self, session: Session) -> AsyncIterator[session_folder.Snapshot]:
        """One run at a time; yields the folder's snapshot before it."""
        async with session.lock:
            if session.closed:
                raise SessionClosed
            session.last_used = time.time()
            try:
                yield await asyncio.to_thread(session_folder.ready, session.workdir)
            finally:
                session.last_used = time.time()

    async def _guarded(self, session: Session, work: Awaitable[T]) -> T:
        """`work` as a task the session's deletion can cancel (the caller's own cancellation cancels it too)."""
        if session.closed:
            raise SessionClosed
        task = asyncio.ensure_future(work)
        session.running = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if session.closed and current is not None and not current.cancelling():
                raise SessionClosed from None
            raise
        finally:
            session.running = None

    async def _collect(self, session: Session, before: session_folder.Snapshot) -> tuple[OutputFile, ...]:
        """Put the files the run wrote into the file store, one at a time (each read off the event loop)."""
        store, sandbox = self.files(), self.sandbox
        if store is None or session.closed or sandbox is None:
            return ()
        inside = sandbox.isolation == "bubblewrap"
        limit = min(store.max_file_bytes, int(sandbox.config.max_file_bytes))
        paths = await asyncio.to_thread(session_folder.changes, session.workdir, before, MAX_OUTPUT_FILES)
        written = []
        for relative in paths:
            data = await asyncio.to_thread(session_folder.read_inside, session.workdir, relative, limit)
            if data is None:
                continue
            try:
                stored = await store.put_bytes(session.owner, data, os.path.basename(relative), OUTPUT_PURPOSE,
                                               self.file_ttl)
            except TooLarge as exc:
                log.info("a file a run wrote (%s) is not kept: %s", relative, exc)
                continue
            written.append(OutputFile(stored.id, stored.filename, stored.bytes, stored.content_type))
            seen_at = f"{INSIDE}/{relative}" if inside else str(session.workdir / relative)
            session.files.append(SessionFile(stored.id, seen_at, stored.bytes, stored.created_at))
        return tuple(written)


def _idle(session: Session) -> bool:
    return session.users == 0 and not session.lock.locked()
