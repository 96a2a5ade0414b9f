"""Uploaded skills: their metadata in the SQLite database of stored responses
(tables `skills` and `skill_versions`), their zips in a folder beside it
(`<skills_dir>/<skill id>/<version>.zip`).

Every sqlite3 call and file operation runs on one dedicated thread of this
store, so the event loop never blocks on the disk. Each skill belongs to an
owner (the API key's name, "" with keys off); every lookup is by owner, so
another key's skill is not found. Version numbers count up from 1 and are
never reused; a skill's name and description are its default version's.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.router.config import LoadedConfig
from modelyard.router.errors import APIError
from modelyard.router.response_service import storage_folder
from modelyard.router.skill_archive import Manifest
from modelyard.router.storage import SqliteThread
from modelyard.router.wire_values import whole_number

log = logging.getLogger("modelyard.skills")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS skills (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    display_name TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    default_version INTEGER,
    latest_version INTEGER,
    next_version INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS skill_versions (
    id TEXT PRIMARY KEY,
    skill_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    size INTEGER NOT NULL,
    UNIQUE (skill_id, version)
)""",
    "CREATE INDEX IF NOT EXISTS skills_owner ON skills (owner)",
)
SKILL_COLUMNS = (
    "s.id, s.owner, s.created_at, s.updated_at, s.display_name, s.name, s.description, s.default_version, "
    "s.latest_version, (SELECT v.id FROM skill_versions v WHERE v.skill_id = s.id AND v.version = s.latest_version)"
)
VERSION_COLUMNS = "id, skill_id, version, created_at, name, description, size"


@dataclass(frozen=True)
class Skill:
    id: str
    owner: str
    created_at: float
    updated_at: float
    display_name: str
    name: str
    description: str
    default_version: int | None
    latest_version: int | None
    latest_version_id: str | None


@dataclass(frozen=True)
class SkillVersion:
    id: str
    skill_id: str
    version: int
    created_at: float
    name: str
    description: str
    size: int


@dataclass(frozen=True)
class Page:
    items: list[Any]
    has_more: bool


class UnknownCursor(LookupError):
    """A page cursor (`after`) that names no item of the list."""


def skills_folder(loaded: LoadedConfig) -> Path:
    """`[storage] skills_dir`, or `skills` beside the database file."""
    return storage_folder(loaded, loaded.config.storage.skills_dir, "skills")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class SkillStore(SqliteThread):
    thread_name = "skill-store"

    def __init__(self, path: Path, folder: Path) -> None:
        super().__init__(path)
        self.folder = folder
        self.unavailable: str | None = "the server is starting"

    async def start(self) -> None:
        """Open the store; if it cannot be opened, the Skills API answers 500 saying why."""
        try:
            await self._open_db()
        except Exception as exc:
            self.unavailable = f"{type(exc).__name__}: {exc}"
            log.error("cannot open the skill store %s (%s): %s", self.path, self.folder, self.unavailable)
            return
        self.unavailable = None

    def checked(self) -> SkillStore:
        if self.unavailable is not None:
            raise APIError(
                500,
                f"Skills are unavailable: the skill store could not be opened ({self.unavailable}). "
                "Fix [storage] path or skills_dir.",
                code="storage_unavailable",
            )
        return self

    def _setup(self, db: sqlite3.Connection) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for statement in SCHEMA:
            db.execute(statement)

    def _zip_path(self, skill_id: str, version: int) -> Path:
        return self.folder / skill_id / f"{version}.zip"

    def _write_zip(self, skill_id: str, version: int, data: bytes) -> Path:
        path = self._zip_path(skill_id, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial_path = path.with_suffix(".part")
        partial_path.write_bytes(data)
        os.replace(partial_path, path)
        return path

    # --- skills ---------------------------------------------------------------

    async def create(self, owner: str, display_name: str, manifest: Manifest, data: bytes) -> tuple[Skill, SkillVersion]:
        result: tuple[Skill, SkillVersion] = await self._run(self._create, owner, display_name, manifest, data)
        return result

    def _create(self, owner: str, display_name: str, manifest: Manifest, data: bytes) -> tuple[Skill, SkillVersion]:
        skill_id, now = new_id("skill"), time.time()
        path = self._write_zip(skill_id, 1, data)
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO skills VALUES (?, ?, ?, ?, ?, ?, ?, 1, 1, 2)",
                (skill_id, owner, now, now, display_name, manifest.name, manifest.description),
            )
            self._insert_version(skill_id, 1, now, manifest, len(data))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            path.unlink(missing_ok=True)
            raise
        skill, version = self._skill(skill_id, owner), self._version(skill_id, "1")
        assert skill is not None and version is not None
        return skill, version

    def _insert_version(self, skill_id: str, number: int, now: float, manifest: Manifest, size: int) -> None:
        self._conn().execute(
            f"INSERT INTO skill_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new_id("skillver"), skill_id, number, now, manifest.name, manifest.description, size),
        )

    def _skill(self, skill_id: str, owner: str) -> Skill | None:
        row = self._conn().execute(f"SELECT {SKILL_COLUMNS} FROM skills s WHERE s.id = ? AND s.owner = ?", (skill_id, owner)).fetchone()
        return Skill(*row) if row is not None else None

    async def get(self, skill_id: str, owner: str) -> Skill | None:
        skill: Skill | None = await self._run(self._skill, skill_id, owner)
        return skill

    async def list(self, owner: str, limit: int, order: str, after: str | None) -> Page:
        page: Page = await self._run(self._list, owner, limit, order, after)
        return page

    def _list(self, owner: str, limit: int, order: str, after: str | None) -> Page:
        where, args = "s.owner = ?", [owner]
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        if after is not None:
            cursor = self._conn().execute("SELECT rowid FROM skills WHERE id = ? AND owner = ?", (after, owner)).fetchone()
            if cursor is None:
                raise UnknownCursor(after)
            where += f" AND s.rowid {compare} ?"
            args.append(cursor[0])
        rows = self._conn().execute(
            f"SELECT {SKILL_COLUMNS} FROM skills s WHERE {where} ORDER BY s.rowid {direction} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([Skill(*row) for row in rows[:limit]], len(rows) > limit)

    async def delete(self, skill_id: str, owner: str) -> bool:
        deleted: bool = await self._run(self._delete, skill_id, owner)
        return deleted

    def _delete(self, skill_id: str, owner: str) -> bool:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute("DELETE FROM skills WHERE id = ? AND owner = ?", (skill_id, owner)).rowcount > 0
            if deleted:
                db.execute("DELETE FROM skill_versions WHERE skill_id = ?", (skill_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if deleted:
            shutil.rmtree(self.folder / skill_id, ignore_errors=True)
        return deleted

    async def set_default(self, skill_id: str, owner: str, version: SkillVersion) -> Skill | None:
        skill: Skill | None = await self._run(self._set_default, skill_id, owner, version)
        return skill

    def _set_default(self, skill_id: str, owner: str, version: SkillVersion) -> Skill | None:
        self._conn().execute(
            "UPDATE skills SET default_version = ?, name = ?, description = ?, updated_at = ? WHERE id = ? AND owner = ?",
            (version.version, version.name, version.description, time.time(), skill_id, owner),
        )
        return self._skill(skill_id, owner)

    # --- versions -------------------------------------------------------------

    async def add_version(self, skill_id: str, owner: str, manifest: Manifest, data: bytes, make_default: bool) -> SkillVersion | None:
        version: SkillVersion | None = await self._run(self._add_version, skill_id, owner, manifest, data, make_default)
        return version

    def _add_version(self, skill_id: str, owner: str, manifest: Manifest, data: bytes, make_default: bool) -> SkillVersion | None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        path: Path | None = None
        try:
            row = db.execute(
                "SELECT next_version, default_version FROM skills WHERE id = ? AND owner = ?", (skill_id, owner)
            ).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            number, now = row[0], time.time()
            path = self._write_zip(skill_id, number, data)
            self._insert_version(skill_id, number, now, manifest, len(data))
            db.execute("UPDATE skills SET next_version = ?, latest_version = ?, updated_at = ? WHERE id = ?", (number + 1, number, now, skill_id))
            if make_default or row[1] is None:
                db.execute(
                    "UPDATE skills SET default_version = ?, name = ?, description = ? WHERE id = ?",
                    (number, manifest.name, manifest.description, skill_id),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        return self._version(skill_id, str(number))

    def _version(self, skill_id: str, ref: str) -> SkillVersion | None:
        """A version by number, by id or `latest` (of a skill whose owner was checked)."""
        db = self._conn()
        if ref == "latest":
            query, args = "version = (SELECT latest_version FROM skills WHERE id = ?)", (skill_id,)
        elif (number := whole_number(ref)) is not None:
            query, args = "version = ?", (number,)  # type: ignore[assignment]
        else:
            query, args = "id = ?", (ref,)
        row = db.execute(f"SELECT {VERSION_COLUMNS} FROM skill_versions WHERE skill_id = ? AND {query}", (skill_id, *args)).fetchone()
        return SkillVersion(*row) if row is not None else None

    async def version(self, skill_id: str, owner: str, ref: str) -> tuple[Skill, SkillVersion | None] | None:
        """The skill (None if `owner` has no such skill) and its version `ref`."""
        found: tuple[Skill, SkillVersion | None] | None = await self._run(self._owned_version, skill_id, owner, ref)
        return found

    def _owned_version(self, skill_id: str, owner: str, ref: str) -> tuple[Skill, SkillVersion | None] | None:
        skill = self._skill(skill_id, owner)
        if skill is None:
            return None
        if ref == "default":
            return skill, self._version(skill_id, str(skill.default_version)) if skill.default_version else None
        return skill, self._version(skill_id, ref)

    async def versions(self, skill_id: str, limit: int, order: str, after: str | None) -> Page:
        page: Page = await self._run(self._versions, skill_id, limit, order, after)
        return page

    def _versions(self, skill_id: str, limit: int, order: str, after: str | None) -> Page:
        where, args = "skill_id = ?", [skill_id]
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        if after is not None:
            cursor = self._version(skill_id, after)
            if cursor is None:
                raise UnknownCursor(after)
            where += f" AND version {compare} ?"
            args.append(cursor.version)  # type: ignore[arg-type]
        rows = self._conn().execute(
            f"SELECT {VERSION_COLUMNS} FROM skill_versions WHERE {where} ORDER BY version {direction} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([SkillVersion(*row) for row in rows[:limit]], len(rows) > limit)

    async def delete_version(self, skill_id: str, version: SkillVersion) -> None:
        await self._run(self._delete_version, skill_id, version)

    def _delete_version(self, skill_id: str, version: SkillVersion) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM skill_versions WHERE id = ?", (version.id,))
            latest = db.execute("SELECT MAX(version) FROM skill_versions WHERE skill_id = ?", (skill_id,)).fetchone()[0]
            db.execute("UPDATE skills SET latest_version = ?, updated_at = ? WHERE id = ?", (latest, time.time(), skill_id))
            fallback = self._version(skill_id, str(latest)) if latest is not None else None
            db.execute(
                "UPDATE skills SET default_version = ? WHERE id = ? AND default_version = ?", (latest, skill_id, version.version)
            )
            if fallback is not None:
                db.execute(
                    "UPDATE skills SET name = ?, description = ? WHERE id = ? AND default_version = ?",
                    (fallback.name, fallback.description, skill_id, fallback.version),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._zip_path(skill_id, version.version).unlink(missing_ok=True)

    async def read_zip(self, version: SkillVersion) -> bytes | None:
        data: bytes | None = await self._run(self._read_zip, version)
        return data

    def _read_zip(self, version: SkillVersion) -> bytes | None:
        try:
            return self._zip_path(version.skill_id, version.version).read_bytes()
        except FileNotFoundError:
            return None
