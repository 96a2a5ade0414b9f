"""The file store behind the Files API (router/files.py) and the images
served by URL (router/images.py): bytes on disk in `[storage] files_dir`,
metadata in the SQLite database of stored Responses (table `files`).

Every sqlite3 call runs on one dedicated thread; file reads and writes run
on a small pool of their own: the event loop never blocks on the disk.

Each file belongs to an owner (the API key's name, "" with keys off) and
is invisible to every other. A file with an `expires_at` in the past is
gone at once for every reader, and its bytes are removed by `sweep()`.

Interface for other modules (reach the store as `yard.files`, router/deps.py):

    await yard.files.get(owner, file_id) -> StoredFile | None
        The metadata (id, filename, bytes, purpose, created_at, expires_at,
        content_type), or None when there is no such file for this owner
        (or it has expired).
    await yard.files.read(owner, file_id, limit=None) -> bytes | None
        The file's bytes (at most `limit` of them), read off the event loop,
        or None as for get(). A file deleted while it is being read is either
        read whole or None: never an exception.

An upload is written to a temporary file in the files folder (`.upload-*`)
and renamed to its id only when complete and within its limits; any failure
removes it. Deleting a file unlinks it: a reader that has it open keeps
reading (POSIX).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from modelyard.router.storage import SqliteThread

log = logging.getLogger("modelyard.files")

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    content_type TEXT NOT NULL
)
"""
COLUMNS = "id, filename, bytes, purpose, created_at, expires_at, content_type"
TEMP_PREFIX = ".upload-"
STALE_TEMP_SECONDS = 3600  # a temporary file untouched this long belongs to no running upload
CHUNK = 256 * 1024


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int  # Unix seconds
    expires_at: int | None  # Unix seconds; None: kept until deleted
    content_type: str


class TooLarge(Exception):
    """An upload went over its limit (the message says which)."""


def content_type_of(filename: str, given: str | None = None) -> str:
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if guessed:
        return guessed
    if given and given.lower() not in ("application/octet-stream", ""):
        return given
    return "application/octet-stream"


def new_id() -> str:
    return "file-" + secrets.token_hex(12)


class Upload:
    """One upload being written to a temporary file; `write` runs on a thread.
    `abort` may come from another thread: the lock keeps it from closing the
    file under a write."""

    def __init__(self, directory: Path, limit: int, too_large: str) -> None:
        self.path = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        self.limit = limit
        self.too_large = too_large
        self.size = 0
        self.lock = threading.Lock()
        self.file: IO[bytes] | None = None
        self.done = False

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.done:
                return
            self.size += len(data)
            if self.size > self.limit:
                raise TooLarge(self.too_large)
            if self.file is None:
                self.file = open(self.path, "xb")  # noqa: SIM115  # closed by finish() or abort()
            self.file.write(data)

    def finish(self, final: Path) -> None:
        with self.lock:
            if self.file is None:
                self.file = open(self.path, "xb")  # noqa: SIM115  # an empty file
            self.file.close()
            os.replace(self.path, final)
            self.done = True

    def abort(self) -> None:
        with self.lock:
            self.done = True
            if self.file is not None:
                self.file.close()
            self.path.unlink(missing_ok=True)


class FileStore(SqliteThread):
    thread_name = "file-store"

    def __init__(self, db_path: Path, directory: Path, max_file_bytes: int, max_bytes_per_key: int) -> None:
        super().__init__(db_path)
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_bytes_per_key = max_bytes_per_key
        self._io: ThreadPoolExecutor | None = None

    # -- threads: sqlite on SqliteThread's, file work on a pool ---------

    async def io(self, fn: Any, *args: Any) -> Any:
        """Run blocking file work on the store's I/O threads."""
        assert self._io is not None, "the file store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._io, partial(fn, *args))

    def io_later(self, fn: Any, *args: Any) -> None:
        """Queue file work without waiting for it (cleanup on cancellation)."""
        if self._io is not None:
            self._io.submit(fn, *args)

    async def open(self) -> None:
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="file-io")
        await self.io(self.directory.mkdir, 0o777, True, True)
        await self._open_db()
        await self.sweep()

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute(SCHEMA)
        db.execute("CREATE INDEX IF NOT EXISTS files_owner ON files (owner, seq)")

    async def close(self) -> None:
        await super().close()
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None

    def path_of(self, file_id: str) -> Path:
        return self.directory / file_id

    # -- metadata -------------------------------------------------------
    async def get(self, owner: str, file_id: str) -> StoredFile | None:
        found: StoredFile | None = await self._run(self._get, owner, file_id)
        return found

    def _get(self, owner: str, file_id: str) -> StoredFile | None:
        row = self._conn().execute(
            f"SELECT {COLUMNS} FROM files WHERE id = ? AND owner = ? AND (expires_at IS NULL OR expires_at > ?)",
            (file_id, owner, int(time.time())),
        ).fetchone()
        return StoredFile(*row) if row else None

    async def list(
        self, owner: str, *, limit: int, descending: bool, after: str | None = None, before: str | None = None,
        purpose: str | None = None, ids: list[str] | None = None,
    ) -> tuple[list[StoredFile], bool]:  # fmt: skip
        """A page of `owner`'s files, newest first when `descending`, and whether more follow.
        `after` / `before`: ids of the file the page starts after / ends before."""
        page: tuple[list[StoredFile], bool] = await self._run(
            self._list, owner, limit, descending, after, before, purpose, ids
        )
        return page

    def _list(
        self, owner: str, limit: int, descending: bool, after: str | None, before: str | None,
        purpose: str | None, ids: list[str] | None,
    ) -> tuple[list[StoredFile], bool]:  # fmt: skip
        where = ["owner = ?", "(expires_at IS NULL OR expires_at > ?)"]
        args: list[Any] = [owner, int(time.time())]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if ids is not None:
            where.append(f"id IN ({', '.join('?' for _ in ids)})")
            args.extend(ids)
        # The page after a cursor runs in the list's order; the page before it, against it.
        forward = before is None
        cursor = after if forward else before
        if cursor is not None:
            seq = self._conn().execute("SELECT seq FROM files WHERE id = ? AND owner = ?", (cursor, owner)).fetchone()
            if seq is None:
                return [], False
            where.append("seq < ?" if descending == forward else "seq > ?")
            args.append(seq[0])
        direction = "DESC" if descending == forward else "ASC"
        rows = self._conn().execute(
            f"SELECT {COLUMNS} FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        files = [StoredFile(*row) for row in rows[:limit]]
        return (files if forward else files[::-1]), len(rows) > limit

    async def used(self, owner: str) -> int:
        total: int = await self._run(self._used, owner)
        return total

    def _used(self, owner: str) -> int:
        row = self._conn().execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM files WHERE owner = ? AND (expires_at IS NULL OR expires_at > ?)",
            (owner, int(time.time())),
        ).fetchone()
        return int(row[0])

    # -- content --------------------------------------------------------
    async def read(self, owner: str, file_id: str, limit: int | None = None) -> bytes | None:
        if await self.get(owner, file_id) is None:
            return None
        data: bytes | None = await self.io(self._read_file, self.path_of(file_id), limit)
        return data

    @staticmethod
    def _read_file(path: Path, limit: int | None) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except FileNotFoundError:
            return None

    async def open_content(self, owner: str, file_id: str) -> tuple[StoredFile, IO[bytes]] | None:
        """The metadata and an open handle on the bytes (the caller closes it,
        e.g. through `chunks`), or None. Once open, a delete does not stop the reading."""
        found = await self.get(owner, file_id)
        if found is None:
            return None
        handle: IO[bytes] | None = await self.io(self._open_file, self.path_of(file_id))
        return None if handle is None else (found, handle)

    @staticmethod
    def _open_file(path: Path) -> IO[bytes] | None:
        try:
            return open(path, "rb")  # noqa: SIM115  # closed by chunks()
        except FileNotFoundError:
            return None

    async def chunks(self, handle: IO[bytes]) -> AsyncIterator[bytes]:
        try:
            while chunk := await self.io(handle.read, CHUNK):
                yield chunk
        finally:
            self.io_later(handle.close)

    # -- writing --------------------------------------------------------
    async def start_upload(self, owner: str) -> Upload:
        """A temporary file for an upload by `owner`, limited to what the
        per-file limit and the owner's remaining quota allow."""
        room = self.max_bytes_per_key - await self.used(owner)
        if room < self.max_file_bytes:
            return Upload(self.directory, max(room, 0), self.quota_message())
        return Upload(self.directory, self.max_file_bytes, self.file_limit_message())

    def file_limit_message(self) -> str:
        return f"The file is larger than this server accepts ({self.max_file_bytes} bytes per file)."

    def quota_message(self) -> str:
        return (
            f"Storing this file would exceed this API key's storage limit ({self.max_bytes_per_key} bytes "
            "in total). Delete files to make room."
        )

    async def commit(
        self, upload: Upload, owner: str, filename: str, purpose: str, ttl: int | None, content_type: str
    ) -> StoredFile:
        """Make a complete upload a stored file; on any failure it is removed. Raises TooLarge over the quota."""
        file_id = new_id()
        final = self.path_of(file_id)
        now = int(time.time())
        stored = StoredFile(file_id, filename, upload.size, purpose, now, now + ttl if ttl else None, content_type)
        try:
            await self.io(upload.finish, final)
        except BaseException:
            self.io_later(upload.abort)
            raise
        try:
            inserted = await self._run(self._insert, owner, stored)
        except BaseException:
            self.io_later(final.unlink, True)
            raise
        if not inserted:
            await self.io(final.unlink, True)
            raise TooLarge(self.quota_message())
        return stored

    def _insert(self, owner: str, stored: StoredFile) -> bool:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._used(owner) + stored.bytes > self.max_bytes_per_key:
                db.execute("ROLLBACK")
                return False
            db.execute(
                f"INSERT INTO files (owner, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (owner, stored.id, stored.filename, stored.bytes, stored.purpose, stored.created_at,
                 stored.expires_at, stored.content_type),
            )  # fmt: skip
            db.execute("COMMIT")
            return True
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def put_bytes(self, owner: str, data: bytes, filename: str, purpose: str, ttl: int | None) -> StoredFile:
        """Store bytes made by the server (a generated image). Raises TooLarge over the limits."""
        upload = await self.start_upload(owner)
        try:
            await self.io(upload.write, data)
        except BaseException:
            self.io_later(upload.abort)
            raise
        return await self.commit(upload, owner, filename, purpose, ttl, content_type_of(filename))

    # -- removal --------------------------------------------------------
    async def delete(self, owner: str, file_id: str) -> bool:
        deleted: bool = await self._run(self._delete, owner, file_id)
        if deleted:
            await self.io(self.path_of(file_id).unlink, True)
        return deleted

    def _delete(self, owner: str, file_id: str) -> bool:
        cursor = self._conn().execute(
            "DELETE FROM files WHERE id = ? AND owner = ? AND (expires_at IS NULL OR expires_at > ?)",
            (file_id, owner, int(time.time())),
        )
        return cursor.rowcount > 0

    async def sweep(self) -> int:
        """Remove expired files and stale temporary files; return how many files expired."""
        expired: list[str] = await self._run(self._expire)
        await self.io(self._remove, expired)
        return len(expired)

    def _expire(self) -> list[str]:
        db = self._conn()
        now = int(time.time())
        ids = [row[0] for row in db.execute("SELECT id FROM files WHERE expires_at <= ?", (now,))]
        db.execute("DELETE FROM files WHERE expires_at <= ?", (now,))
        return ids

    def _remove(self, expired: list[str]) -> None:
        for file_id in expired:
            self.path_of(file_id).unlink(missing_ok=True)
        cutoff = time.time() - STALE_TEMP_SECONDS
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TEMP_PREFIX) and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)

    async def sweep_forever(self, every: float = 60) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                swept = await self.sweep()
            except Exception:
                log.exception("the file store's sweep failed")
                continue
            if swept:
                log.info("removed %d expired files", swept)
