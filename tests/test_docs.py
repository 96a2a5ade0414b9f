"""The docs are tested like code: generated parts are current, examples validate, names exist.

Model-free: nothing here starts a server or loads a model.
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from modelyard.adapters.catalog import BUILTIN_BACKENDS
from modelyard.router import config_docs
from modelyard.router.cli import build_parser, main
from modelyard.router.config import ConfigError, validate
from modelyard.schemas.config import ApiKey, ServerConfig

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIG_MD = ROOT / "docs" / "config.md"
ARCHITECTURE_MD = ROOT / "docs" / "architecture.md"
README = ROOT / "README.md"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- docs/config.md is generated ---------------------------------------------------


def test_committed_config_reference_is_current() -> None:
    committed, generated = read(CONFIG_MD), config_docs.render()
    diff = difflib.unified_diff(committed.splitlines(), generated.splitlines(), "committed", "generated", lineterm="")
    assert committed == generated, "docs/config.md is stale: run `make docs`\n" + "\n".join(list(diff)[:40])


def test_docs_command_writes_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "config.md"
    assert main(["docs", "-o", str(out)]) == 0
    assert read(out) == config_docs.render()
    assert main(["docs"]) == 0
    assert capsys.readouterr().out == config_docs.render()


def test_every_field_of_every_config_model_has_a_row() -> None:
    """Each model (schemas/config.py and every built-in backend's options) gets a table with a row per field."""
    docs = read(CONFIG_MD)
    models = {**config_docs.config_models(), **config_docs.options_models()}
    assert len(config_docs.options_models()) >= len(BUILTIN_BACKENDS)
    for model in models.values():
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in docs, f"{model.__name__}.{name} has no row in docs/config.md"
            if field.description:
                row = config_docs._cell(field.description)
                assert row in docs, f"{model.__name__}.{name}: its description is not in docs/config.md"


def test_a_changed_description_makes_the_reference_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    field = ServerConfig.model_fields["port"]
    monkeypatch.setattr(field, "description", "A port, described differently.")
    assert "A port, described differently." in config_docs.render()
    assert config_docs.render() != read(CONFIG_MD)


def test_a_note_for_a_missing_field_is_an_error() -> None:
    notes = config_docs.load_notes()
    notes.setdefault("ServerConfig", {})["no_such_key"] = "a note that outlived its key"
    with pytest.raises(config_docs.DocsError, match="no_such_key"):
        config_docs.render(notes=notes)


def test_missing_sources_are_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed wheel has no docs/: the command says so instead of a traceback."""
    monkeypatch.setattr(config_docs, "TEMPLATE", tmp_path / "missing.md")
    assert main(["docs"]) == 1
    assert "runs in a source checkout" in capsys.readouterr().err


def test_a_model_without_a_table_is_an_error() -> None:
    template = read(config_docs.TEMPLATE).replace("<!-- config-table: StorageConfig storage -->", "")
    with pytest.raises(config_docs.DocsError, match="StorageConfig"):
        config_docs.render(template=template)


def test_notes_reach_their_rows() -> None:
    docs = read(CONFIG_MD)
    rows = [line for line in docs.splitlines() if line.startswith("| `rpm` |")]
    assert len(rows) == 1 and "Counted per key name across reloads." in rows[0]


@pytest.mark.parametrize(
    ("model", "field", "type_text", "default"),
    [
        (ServerConfig, "port", "integer, 1–65535", "`1234`"),
        (ServerConfig, "body_limit", "integer (bytes) or size string", '`"50MiB"` (52428800)'),
        (ServerConfig, "shutdown_grace", "seconds or duration", "`30`"),
        (ServerConfig, "max_loaded_models", "integer ≥ 1 or unset", "unset"),
        (ServerConfig, "cors", "table", "see `[server.cors]`"),
        (ApiKey, "key", "string, ≥ 8 characters", "required"),
        (ApiKey, "models", "array of strings", '`["*"]`'),
    ],
)
def test_types_and_defaults_read_as_written(model: Any, field: str, type_text: str, default: str) -> None:
    info = model.model_fields[field]
    assert config_docs.type_text(info.annotation, info.metadata) == type_text
    path = "server" if model is ServerConfig else "auth.keys"
    assert config_docs.default_text(info, path, field) == default


# --- the docs show what the code does -------------------------------------------


def section(text: str, heading: str) -> str:
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, flags=re.DOTALL | re.MULTILINE)
    assert match, f"no section {heading!r}"
    return match.group(1)


@pytest.mark.parametrize("backend", [b.name for b in BUILTIN_BACKENDS])
def test_every_backend_has_its_options_section_and_memory_limit(backend: str) -> None:
    docs = read(CONFIG_MD)
    options = section(docs, f'`[models.options]` for `backend = "{backend}"`')
    assert "| Key | Type | Default | Description |" in options
    assert f"`{backend}`" in section(docs, "Worker containment"), f"the memory limit table does not name {backend}"


def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["serve"]
    return parser


def test_every_serve_flag_is_documented() -> None:
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", serve_parser().format_help())) - {"--help"}
    assert {"--host", "--config", "--model", "--no-watch", "--log-level"} <= flags  # the parse found them
    docs = read(CONFIG_MD) + read(README)
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", docs))
    assert not flags - documented, (
        f"serve flags missing from docs/config.md and README.md: {sorted(flags - documented)}"
    )


def toml_blocks(path: Path) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", read(path), flags=re.DOTALL | re.MULTILINE)


def stand_in_sources(data: dict[str, Any], tmp_path: Path) -> None:
    """A local path in an example names the writer's files: point it at a file that exists.

    package:, hf: and assemble: sources are checked as written.
    """
    for index, model in enumerate(data.get("models", [])):
        source = model.get("source")
        if isinstance(source, str) and not re.match(r"^(package|hf|assemble):", source):
            stand_in = tmp_path / f"model-{index}"
            stand_in.mkdir()
            (stand_in / "model.gguf").write_bytes(b"GGUF")
            model["source"] = str(stand_in / "model.gguf") if source.endswith(".gguf") else str(stand_in)


@pytest.mark.parametrize("doc", [CONFIG_MD, README], ids=lambda p: p.name)
def test_every_toml_example_is_a_valid_config(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = toml_blocks(doc)
    assert len(blocks) >= 3, f"{doc.name}: expected TOML examples"
    for number, block in enumerate(blocks):
        for var in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", block):
            monkeypatch.setenv(var, f"example-secret-{var.lower()}")
        data = tomllib.loads(block)
        here = tmp_path / f"block-{number}"
        here.mkdir()
        stand_in_sources(data, here)
        try:
            validate(data, f"{doc.name} TOML block {number + 1}", here, block)
        except ConfigError as exc:
            pytest.fail(f"{exc}\n--- the block ---\n{block}")


def test_an_invalid_example_would_fail() -> None:
    block = "[server]\nport = 99999\n"
    with pytest.raises(ConfigError, match="server.port"):
        validate(tomllib.loads(block), "example", ROOT, block)


# --- docs/architecture.md names what exists --------------------------------------

PATH_PATTERN = re.compile(r"`((?:router|adapters|schemas|tests|docs|configs|bench|examples|modelyard)/[\w./*-]+)`")


def test_architecture_paths_exist() -> None:
    named = set(PATH_PATTERN.findall(read(ARCHITECTURE_MD)))
    assert len(named) >= 30, "docs/architecture.md should walk through the code file by file"
    missing = sorted(path for path in named if not list(ROOT.glob(path)))
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_architecture_names_every_module() -> None:
    """A new module of router/ or adapters/ needs a line in docs/architecture.md saying what it is for."""
    named = set(PATH_PATTERN.findall(read(ARCHITECTURE_MD)))
    modules = {
        f"{folder}/{path.name}"
        for folder in ("router", "adapters")
        for path in (ROOT / folder).glob("*.py")
        if path.name != "__init__.py"
    }
    missing = sorted(modules - named)
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def readme_architecture() -> str:
    text = read(README)
    match = re.search(r"^## Architecture\n(.*?)(?=^## |\Z)", text, flags=re.DOTALL | re.MULTILINE)
    assert match, "README.md has no ## Architecture section"
    return match.group(1)


def test_readme_architecture_points_to_the_docs_and_names_every_backend() -> None:
    section = readme_architecture()
    assert "docs/architecture.md" in section
    for backend in BUILTIN_BACKENDS:
        assert f"`{backend.name}`" in section, f"README architecture section does not name the {backend.name} backend"


def test_docs_command_as_a_user_runs_it() -> None:
    result = run_cli("docs", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == read(CONFIG_MD)


# --- links between the docs -------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def test_github_anchor() -> None:
    assert github_anchor('`[models.options]` for `backend = "llama-cpp"`') == "modelsoptions-for-backend--llama-cpp"
    assert github_anchor("Reload safety") == "reload-safety"


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.name)
def test_links_between_docs_resolve(doc: Path) -> None:
    """A relative link names a file that exists, and its #anchor a heading in it."""
    text = read(doc)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"^[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), f"{doc.name}: link to {link!r}: no such file"
        if anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", read(path), flags=re.MULTILINE)
            assert anchor in {github_anchor(h) for h in headings}, f"{doc.name}: link to {link!r}: no such heading"
