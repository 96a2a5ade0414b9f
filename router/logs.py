"""Logging set-up: text or JSON lines, level changeable on reload."""

from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else was passed in `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str) -> None:
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_modelyard", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._modelyard = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(
        JSONFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root.setLevel(level.upper())
    # watchfiles logs every batch of changes at info.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
