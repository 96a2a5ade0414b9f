"""Hot reload: watch the config file (and SIGHUP), validate, then apply.

An invalid file changes nothing: the old config keeps serving and the
reason is logged and shown at /health. Editors that save by writing a new
file and renaming it, and configs reached through a symlink, are handled by
watching the folders and comparing the file's content with what is applied.

A file read while it is being written must not be applied, above all not
one that lost its `[[auth.keys]]` (that would open the API). So: the file
must keep the same content for `server.reload_settle` before it is read; an
empty file is always refused; a file that would remove every API key is
refused unless it says `keys = []` itself; a file that got smaller and
lost tables (as one cut off while being written does) must stay unchanged
four times as long; and the file
is read again after the decision, to be sure it did not change meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles
from modelyard.router import logs
from modelyard.router.config import ConfigError, LoadedConfig, Problem, parse_toml, validate
from modelyard.router.registry import Registry

log = logging.getLogger("modelyard.reload")


def blank_config(text: str) -> bool:
    """Nothing but whitespace and comments: what a truncated file looks like."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def table_counts(data: dict[str, Any], prefix: str = "") -> Counter[str]:
    """How many times each table path occurs (`models` 3, `models.options` 3, `auth.keys` 2)."""
    counts: Counter[str] = Counter()
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        tables = [value] if isinstance(value, dict) else [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        for table in tables:
            counts[path] += 1
            counts.update(table_counts(table, path))
    return counts


@dataclass
class Snapshot:
    """One read of the config file."""

    text: str
    digest: str
    tables: Counter[str]


class Refused(Exception):
    """A file that must not be applied; the message says why."""


class Reloader:
    def __init__(self, registry: Registry, path: str, overrides: dict[str, Any] | None = None) -> None:
        self.registry = registry
        self.path = path
        self.overrides = overrides or {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        # What the config in force was read from, to notice a file that shrank.
        self._applied_size, self._applied_tables = 0, Counter[str]()
        try:
            text = Path(path).read_text(encoding="utf-8")
            self._applied_size, self._applied_tables = len(text), table_counts(tomllib.loads(text))
        except (OSError, ValueError):
            pass

    def settle_seconds(self) -> float:
        current = self.registry.current
        return float(current.loaded.config.server.reload_settle) if current else 0.5

    def _read(self) -> Snapshot:
        try:
            raw = Path(self.path).read_bytes()
        except OSError as exc:
            raise ConfigError(self.path, [Problem((), f"cannot read the file: {exc.strerror or exc}")]) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(self.path, [Problem((), "the file is not UTF-8 text")]) from None
        return Snapshot(text, hashlib.sha256(raw).hexdigest(), Counter())

    def _digest_now(self) -> str | None:
        try:
            return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        except OSError:
            return None

    def _load(self) -> tuple[Snapshot, LoadedConfig, bool]:
        """Read, parse and validate the file (blocking: run off the loop).
        Returns the snapshot, the config, and whether the file itself says `[auth] keys`."""
        snapshot = self._read()
        if blank_config(snapshot.text):
            raise Refused(
                f"{self.path}: the file is empty (or only whitespace and comments), as a file caught while being "
                "written is; it is never applied."
            )
        data = parse_toml(snapshot.text, self.path)
        snapshot.tables = table_counts(data)
        auth = data.get("auth")
        explicit_keys = isinstance(auth, dict) and "keys" in auth
        loaded = validate(data, self.path, Path(os.path.abspath(self.path)).parent, snapshot.text, self.overrides)
        return snapshot, loaded, explicit_keys

    def _refuse(self, reason: str, message: str) -> bool:
        self.registry.last_reload = {"ok": False, "error": message, "at": time.time(), "reason": reason}
        log.error("config reload (%s) rejected; the previous config keeps serving:\n%s", reason, message)
        if self.registry.metrics is not None:
            self.registry.metrics.reloads.labels("rejected").inc()
        return False

    def _shrank(self, snapshot: Snapshot) -> bool:
        lost = [path for path, count in self._applied_tables.items() if snapshot.tables.get(path, 0) < count]
        return bool(lost) and len(snapshot.text) < self._applied_size

    async def _unchanged_for(self, digest: str, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if await asyncio.to_thread(self._digest_now) != digest:
                return False
            if loop.time() >= deadline:
                return True
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    async def reload(self, reason: str) -> bool:
        """Validate and apply the file. True if a new config is now in force."""
        async with self._lock:
            try:
                # Reading and resolving sources touches the disk: off the loop.
                snapshot, loaded, explicit_keys = await asyncio.to_thread(self._load)
            except (ConfigError, Refused) as exc:
                return self._refuse(reason, str(exc))
            current = self.registry.current
            if current is not None and current.loaded.digest == loaded.digest:
                if not self.registry.last_reload["ok"]:
                    # The file went back to what is in force: nothing to apply, nothing wrong.
                    self.registry.last_reload = {"ok": True, "error": None, "at": time.time(), "reason": reason}
                return False
            opens_api = current is not None and bool(current.keys) and not loaded.config.auth.keys
            if opens_api and not explicit_keys:
                return self._refuse(
                    reason,
                    f"{self.path}: this file has no [[auth.keys]], so applying it would turn authentication off and "
                    "open the API to anyone. If that is meant, write `keys = []` under `[auth]` in the file.",
                )
            if current is not None and self._shrank(snapshot):
                wait = 4 * self.settle_seconds()
                log.warning(
                    "config reload (%s): the file shrank from %d to %d bytes and lost tables (as a file cut off while "
                    "being written does); applying it only if it stays unchanged for %.1fs",
                    reason, self._applied_size, len(snapshot.text), wait,
                )  # fmt: skip
                if not await self._unchanged_for(snapshot.digest, wait):
                    log.warning("config reload (%s): the file changed again; waiting for the next save", reason)
                    return False
            # Read once more: what is applied must be what is in the file now.
            if await asyncio.to_thread(self._digest_now) != snapshot.digest:
                log.warning("config reload (%s): the file changed while it was read; waiting for the next save", reason)
                return False
            if opens_api:
                log.warning(
                    "!!! config reload (%s): %s sets `keys = []`: authentication is now OFF and the API is open to "
                    "anyone who can reach %s. !!!",
                    reason, self.path, loaded.config.server.host,
                )  # fmt: skip
            self._warn_restart_needed(current.loaded if current else None, loaded)
            started = time.monotonic()
            generation = await self.registry.apply(loaded, wait_for_loads=True)
            self._applied_size, self._applied_tables = len(snapshot.text), snapshot.tables
            logs.configure(loaded.config.logging.level, loaded.config.logging.format)
            self.registry.last_reload = {"ok": True, "error": None, "at": time.time(), "reason": reason}
            if self.registry.metrics is not None:
                self.registry.metrics.reloads.labels("applied").inc()
            log.info(
                "config reloaded (%s): generation %d with %d model(s) in %.2fs",
                reason,
                generation.number,
                len(generation.entries),
                time.monotonic() - started,
            )
            return True

    def _warn_restart_needed(self, old: LoadedConfig | None, new: LoadedConfig) -> None:
        if old is None:
            return
        before, after = old.config.server, new.config.server
        for name in ("host", "port"):
            if getattr(before, name) != getattr(after, name):
                log.warning(
                    "server.%s changed from %r to %r: this needs a restart; still listening on the old one",
                    name,
                    getattr(before, name),
                    getattr(after, name),
                )
        if before.ui != after.ui:
            log.warning("server.ui changed: this needs a restart")

    def watched(self) -> tuple[set[Path], set[str]]:
        """Folders to watch and file names that count as the config."""
        given = Path(os.path.abspath(self.path))
        real = Path(os.path.realpath(self.path))
        return {given.parent, real.parent}, {given.name, real.name}

    async def watch(self) -> None:
        folders, names = self.watched()
        log.debug("watching %s for changes to %s", folders, names)
        try:
            async for changes in watchfiles.awatch(
                *folders,
                stop_event=self._stop,
                debounce=200,
                step=50,
                recursive=False,
                watch_filter=lambda _change, path: Path(path).name in names,
                force_polling=os.environ.get("MODELYARD_WATCH_POLLING") == "1" or None,
            ):
                if changes:
                    await self._settled()
                    await self.reload("file changed")
        except Exception:
            log.exception("the config watcher stopped; SIGHUP still reloads")

    async def _settled(self, longest_factor: float = 10.0) -> None:
        """Wait until the file's content has stayed the same for the settle
        period. An editor that saves in place truncates, then writes; a slow
        writer pauses between pieces: read in between, the file is empty or
        half written. Gives up waiting after ten settle periods (or 3 s):
        reload()'s own checks still stand."""
        loop = asyncio.get_running_loop()
        quiet = self.settle_seconds()
        deadline = loop.time() + max(3.0, longest_factor * quiet)

        def stamp() -> tuple[float, int, str] | None:
            try:
                info = os.stat(self.path)
                digest = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
            except OSError:
                return None  # mid-rename
            return info.st_mtime, info.st_size, digest

        before = await asyncio.to_thread(stamp)
        since = loop.time()
        while loop.time() < deadline:
            await asyncio.sleep(min(0.05, quiet))
            now = await asyncio.to_thread(stamp)
            if now is None or now != before:
                before, since = now, loop.time()
            elif loop.time() - since >= quiet:
                return

    def install_sighup(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP")))
        except (NotImplementedError, RuntimeError):
            pass

    def stop(self) -> None:
        self._stop.set()
