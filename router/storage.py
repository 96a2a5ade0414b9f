"""Stored Responses in an embedded SQLite database.

One row per stored response: its owner (the API key's name, "" with keys
off), the response object and the input items it was made from, as JSON.
Every sqlite3 call runs on one dedicated thread, so the event loop never
blocks on the disk and the connection is only ever used from the thread
that made it.

A row that is `queued` or `in_progress` names the server process running it
(`runner`). When a server opens the database, such rows whose runner is gone
(the server stopped or crashed mid-run) are marked failed; rows of another
live server sharing the file are left alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("modelyard.storage")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    runner TEXT,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL
)
"""
RUNNING = ("queued", "in_progress")
STOPPED_MESSAGE = "The server stopped before this response finished."


def this_runner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def runner_alive(runner: str | None) -> bool:
    """Whether the server process named by `runner` still runs (another one than this)."""
    if not runner or ":" not in runner:
        return False
    host, _, pid_text = runner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def mark_failed(response: dict[str, Any], message: str) -> dict[str, Any]:
    """A response whose run ended without finishing."""
    response["status"] = "failed"
    response["error"] = {"code": "server_error", "message": message}
    for item in response.get("output", []):
        if item.get("status") == "in_progress":
            item["status"] = "incomplete"
    return response


class SqliteThread:
    """A SQLite database used from one dedicated thread only (WAL, NORMAL
    sync): `_run` runs a function there; `_setup(db)` makes the schema."""

    thread_name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None, f"the {self.thread_name} store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    async def _open_db(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        await self._run(self._connect)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self._setup(db)
        self._db = db

    def _setup(self, db: sqlite3.Connection) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db


class ResponseStore(SqliteThread):
    thread_name = "response-store"

    async def open(self) -> int:
        """Open (creating if needed) the database; return how many interrupted runs were marked failed."""
        await self._open_db()
        swept: int = await self._run(self._sweep)
        return swept

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute(SCHEMA)
        db.execute("CREATE INDEX IF NOT EXISTS responses_status ON responses (status)")

    def _sweep(self) -> int:
        db = self._conn()
        swept = 0
        rows = db.execute(
            "SELECT id, runner, response FROM responses WHERE status IN (?, ?)", RUNNING
        ).fetchall()
        for response_id, runner, text in rows:
            if runner_alive(runner):
                continue
            response = mark_failed(json.loads(text), STOPPED_MESSAGE)
            db.execute(
                "UPDATE responses SET status = ?, runner = NULL, response = ? WHERE id = ?",
                ("failed", json.dumps(response), response_id),
            )
            swept += 1
        return swept

    async def put(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Insert or replace a response (its id is the key)."""
        await self._run(self._put, owner, json.dumps(response), json.dumps(input_items), response)

    def _put(self, owner: str, response_text: str, items_text: str, response: dict[str, Any]) -> None:
        status = response["status"]
        self._conn().execute(
            "INSERT INTO responses (id, owner, created_at, status, runner, response, input_items) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "status = excluded.status, runner = excluded.runner, response = excluded.response, "
            "input_items = excluded.input_items",
            (
                response["id"],
                owner,
                response["created_at"],
                status,
                this_runner() if status in RUNNING else None,
                response_text,
                items_text,
            ),
        )

    async def get(self, response_id: str, owner: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The response and its input items, if `owner` stored it."""
        row = await self._run(self._get, response_id, owner)
        if row is None:
            return None
        return json.loads(row[0]), json.loads(row[1])

    def _get(self, response_id: str, owner: str) -> tuple[str, str] | None:
        row: tuple[str, str] | None = self._conn().execute(
            "SELECT response, input_items FROM responses WHERE id = ? AND owner = ?", (response_id, owner)
        ).fetchone()
        return row

    async def delete(self, response_id: str, owner: str) -> bool:
        deleted: bool = await self._run(self._delete, response_id, owner)
        return deleted

    def _delete(self, response_id: str, owner: str) -> bool:
        cursor = self._conn().execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner))
        return cursor.rowcount > 0
