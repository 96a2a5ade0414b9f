"""Read config.toml into a validated `Config`, or fail with a ConfigError that
names the file, the key path, the line (where it can be found) and the reason.

Steps: parse with tomlkit → expand ${VAR} → validate with pydantic → check
each model's backend, its options (against the adapter's own options
model) and its source → cross-key checks.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from modelyard.adapters.catalog import backends
from modelyard.adapters.sources import (
    ASSEMBLE_PREFIX,
    JOIN_PREFIX,
    SourceError,
    check_assemble,
    check_join,
    resolve_local,
    resolved_in_worker,
)
from modelyard.schemas.config import Config, ModelConfig
from pydantic import ValidationError
from tomlkit.exceptions import ParseError

Loc = tuple[str | int, ...]
ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Problem:
    loc: Loc
    reason: str
    line: int | None = None

    def key(self) -> str:
        return format_loc(self.loc)


class ConfigError(Exception):
    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"invalid config {self.file}:"] if len(self.problems) > 1 else []
        for p in self.problems:
            where = self.file + (f":{p.line}" if p.line else "")
            key = p.key()
            text = f"{where}: {key}: {p.reason}" if key else f"{where}: {p.reason}"
            lines.append(("  " if len(self.problems) > 1 else "") + text)
        return "\n".join(lines)


@dataclass
class LoadedConfig:
    """A validated config plus what was resolved while checking it."""

    config: Config
    file: str  # where it came from ("<command line>" for -m)
    base_dir: Path
    paths: dict[str, Path | None] = field(default_factory=dict)  # model id → local path (None: hub)
    digest: str = ""

    def model_path(self, model: ModelConfig) -> Path | None:
        return self.paths.get(model.id)


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def expand_env(value: Any, loc: Loc, problems: list[Problem]) -> Any:
    """Replace ${VAR} (and ${VAR:-default}) in every string; a missing VAR is an error."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(Problem(loc, f"environment variable {name} is not set"))
            return ""

        return ENV_PATTERN.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, (*loc, i), problems) for i, v in enumerate(value)]
    return value


def locate_line(text: str, loc: Loc) -> int | None:
    """Best-effort line number of a key path in TOML source.

    tomlkit keeps no positions for values, so walk the text: find the table
    header (counting `[[models]]` entries for an index), then the key.
    """
    lines = text.splitlines()
    start, end = 0, len(lines)
    header_re = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
    prefix: list[str] = []
    remaining = list(loc)
    found_line: int | None = None
    while remaining:
        part = remaining.pop(0)
        if isinstance(part, int):
            # The part-th `[[prefix]]` header between start and end.
            table = ".".join(prefix)
            count = -1
            for i in range(start, end):
                m = header_re.match(lines[i])
                if m and lines[i].strip().startswith("[[") and m.group(1).replace(" ", "") == table:
                    count += 1
                    if count == part:
                        start, found_line = i, i + 1
                        break
            else:
                return found_line
            # The entry runs to the next `[[table]]` of the same name or an unrelated table.
            for j in range(start + 1, len(lines)):
                m = header_re.match(lines[j])
                if m and not m.group(1).replace(" ", "").startswith(table + "."):
                    end = j
                    break
            else:
                end = len(lines)
            continue
        key_re = re.compile(rf"^\s*(\"?){re.escape(str(part))}\1\s*=")
        sub_header = ".".join([*prefix, str(part)])
        hit = None
        for i in range(start, end):
            m = header_re.match(lines[i])
            if m and m.group(1).replace(" ", "") == sub_header:
                hit = ("table", i)
                break
            if key_re.match(lines[i]):
                hit = ("key", i)
                break
        if hit is None:
            # A table named only inside a dotted header (`[server.cors]` with
            # no `[server]`, or `[[auth.keys]]`) has no line of its own: go on
            # looking for its parts in the same range.
            implicit = any(
                (m := header_re.match(lines[i])) and m.group(1).replace(" ", "").startswith(sub_header + ".")
                for i in range(start, end)
            )
            if not implicit:
                return found_line
            prefix.append(str(part))
            continue
        kind, i = hit
        found_line = i + 1
        prefix.append(str(part))
        if kind == "key":
            return found_line
        start = i
        if not remaining or not isinstance(remaining[0], int):
            for j in range(i + 1, end):
                m = header_re.match(lines[j])
                if m and not m.group(1).replace(" ", "").startswith(sub_header + "."):
                    end = j
                    break
    return found_line


def parse_toml(text: str, file: str) -> dict[str, Any]:
    try:
        return tomlkit.parse(text).unwrap()
    except ParseError as exc:
        raise ConfigError(file, [Problem((), f"TOML syntax error: {exc}", exc.line)]) from None


def flatten(overrides: dict[str, Any], prefix: Loc = ()) -> list[Loc]:
    out: list[Loc] = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            out.extend(flatten(value, (*prefix, key)))
        else:
            out.append((*prefix, key))
    return out


def validate(
    data: dict[str, Any], file: str, base_dir: Path, text: str = "", overrides: dict[str, Any] | None = None
) -> LoadedConfig:
    """Validate parsed config data; `overrides` (already merged in) are the
    keys that came from the command line, so errors about them say so."""
    data = merge(data, overrides or {})
    problems: list[Problem] = []
    data = expand_env(data, (), problems)
    if not problems:
        try:
            config = Config.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                reason = err["msg"]
                if err["type"] == "extra_forbidden":
                    reason = "unknown key"
                elif err["type"] == "missing":
                    reason = "required key is missing"
                problems.append(Problem(loc, reason))
        else:
            loaded = LoadedConfig(config, file, base_dir)
            problems.extend(check_models(loaded))
            problems.extend(Problem(loc, reason) for loc, reason in config.cross_check())
            if not problems:
                loaded.digest = hashlib.sha256(text.encode()).hexdigest()
                return loaded
    from_cli = flatten(overrides or {})
    for p in problems:
        if any(p.loc[: len(loc)] == loc for loc in from_cli):
            p.reason += " (from the command line)"
        elif p.line is None and text:
            p.line = locate_line(text, p.loc)
    raise ConfigError(file, problems)


def check_models(loaded: LoadedConfig) -> list[Problem]:
    problems: list[Problem] = []
    known = backends()
    for index, model in enumerate(loaded.config.models):
        here: Loc = ("models", index)
        backend = known.get(model.backend)
        if backend is None:
            problems.append(Problem((*here, "backend"), f"unknown backend {model.backend!r}; known: {', '.join(sorted(known))}"))
            continue
        if model.modality not in backend.modalities:
            problems.append(
                Problem(
                    (*here, "modality"),
                    f"backend {backend.name!r} serves {', '.join(backend.modalities)}, not {model.modality!r}",
                )
            )
            continue
        try:
            options_model = backend.options_model(model.modality)
            options_model.model_validate(model.options)
        except ValidationError as exc:
            for err in exc.errors():
                reason = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append(Problem((*here, "options", *err["loc"]), reason))
        except Exception as exc:  # an adapter module that fails to import
            problems.append(Problem((*here, "backend"), f"cannot load backend {backend.name!r}: {exc}"))
        if backend.in_router:
            loaded.paths[model.id] = None
            if model.replicas != 1:
                problems.append(Problem((*here, "replicas"), f"backend {backend.name!r} balances over its upstreams; leave replicas at 1"))
            if model.source is not None:
                problems.append(Problem((*here, "source"), f"backend {backend.name!r} takes no source (its options name the upstreams)"))
            continue
        if model.source is None:
            problems.append(Problem((*here, "source"), "required key is missing"))
            continue
        if resolved_in_worker(model.source):
            loaded.paths[model.id] = None
            check = {ASSEMBLE_PREFIX: check_assemble, JOIN_PREFIX: check_join}.get(model.source.split(":", 1)[0] + ":")
            if check is not None:
                try:
                    check(model.source)
                except SourceError as exc:
                    problems.append(Problem((*here, "source"), str(exc)))
        else:
            try:
                loaded.paths[model.id] = resolve_local(model.source, loaded.base_dir)
            except SourceError as exc:
                problems.append(Problem((*here, "source"), str(exc)))
    return problems


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge command-line overrides ({"server": {"port": 8080}}) into config data."""
    out = dict(data)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Read and validate a config file. Raises ConfigError."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [Problem((), f"cannot read the file: {exc.strerror or exc}")]) from None
    data = parse_toml(text, file)
    # Relative sources are relative to the file as the user named it, even
    # when it is a symlink into another folder.
    return validate(data, file, Path(os.path.abspath(path)).parent, text, overrides)


def single_model_config(model_path: str, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """The config behind `modelyard serve -m model.gguf`: one chat model named "default"."""
    data: dict[str, Any] = {
        "models": [{"id": "default", "modality": "chat", "backend": "llama-cpp", "source": os.path.abspath(model_path)}],
    }
    return validate(data, "<command line>", Path.cwd(), overrides=overrides)
