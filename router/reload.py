"""Hot reload: watch the config file (and SIGHUP), validate, then apply.

An invalid file changes nothing: the old config keeps serving and the
reason is logged and shown at /health. Editors that save by writing a new
file and renaming it, and configs reached through a symlink, are handled by
watching the folders and comparing the file's content with what is applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import watchfiles

from router import logs
from router.config import ConfigError, LoadedConfig, load_config
from router.registry import Registry

log = logging.getLogger("modelyard.reload")


class Reloader:
    def __init__(self, registry: Registry, path: str, overrides: dict[str, Any] | None = None) -> None:
        self.registry = registry
        self.path = path
        self.overrides = overrides or {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()

    async def reload(self, reason: str) -> bool:
        """Validate and apply the file. True if a new config is now in force."""
        async with self._lock:
            try:
                # Reading and resolving sources touches the disk: off the loop.
                loaded = await asyncio.to_thread(load_config, self.path, self.overrides)
            except ConfigError as exc:
                self.registry.last_reload = {"ok": False, "error": str(exc), "at": time.time(), "reason": reason}
                log.error("config reload (%s) rejected; the previous config keeps serving:\n%s", reason, exc)
                if self.registry.metrics is not None:
                    self.registry.metrics.reloads.labels("rejected").inc()
                return False
            current = self.registry.current
            if current is not None and current.loaded.digest == loaded.digest:
                if not self.registry.last_reload["ok"]:
                    # The file went back to what is in force: nothing to apply, nothing wrong.
                    self.registry.last_reload = {"ok": True, "error": None, "at": time.time(), "reason": reason}
                return False
            self._warn_restart_needed(current.loaded if current else None, loaded)
            started = time.monotonic()
            generation = await self.registry.apply(loaded, wait_for_loads=True)
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

    async def _settled(self, quiet: float = 0.15, longest: float = 3.0) -> None:
        """Wait until the file has stopped changing. An editor that saves in
        place truncates, then writes: read in between, the file is empty or
        half written, and would be applied as a (valid, model-less) config."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + longest

        def stamp() -> tuple[float, int] | None:
            try:
                info = os.stat(self.path)
            except OSError:
                return None  # mid-rename
            return info.st_mtime, info.st_size

        before = stamp()
        while loop.time() < deadline:
            await asyncio.sleep(quiet)
            now = stamp()
            if now is not None and now == before:
                return
            before = now

    def install_sighup(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP")))
        except (NotImplementedError, RuntimeError):
            pass

    def stop(self) -> None:
        self._stop.set()
