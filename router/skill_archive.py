"""A skill's zip, checked before it is stored; and a folder upload made into one.

A skill is a folder whose `SKILL.md` starts with YAML front matter (between
`---` lines) holding its `name` and `description`. A zip may hold that
folder, or the folder's files at its root. Refused, each with a 400 that
says why: a zip bomb (an entry whose size is over `skill_max_compression_ratio`
times its compressed size, more than `skill_max_entries` entries, or more
than `skill_max_uncompressed_bytes` in all, counting the sizes the zip
declares and the bytes really read: an entry longer than it declares is
refused too), absolute paths and `..` parts, symlinks, encrypted entries, a
corrupt zip, a missing SKILL.md and front matter without a valid name or
description.

Everything here is blocking (zipfile, YAML): callers run it in a thread.
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass

import yaml
from modelyard.router.errors import APIError, invalid_request
from modelyard.schemas.config import StorageConfig

SKILL_FILE = "SKILL.md"
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
XML_TAG = re.compile(r"<[^<>]+>")
FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)^---[ \t]*$", re.DOTALL | re.MULTILINE)
RESERVED_WORDS = ("anthropic", "claude")  # Anthropic refuses names that hold them
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_SKILL_FILE = 1024 * 1024
RATIO_FLOOR = 1024 * 1024  # entries smaller than this are not held to the compression ratio
CHUNK = 64 * 1024
IGNORED_TOPS = ("__MACOSX",)  # macOS Finder's resource forks


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int
    max_uncompressed: int
    max_entries: int
    max_ratio: int

    @classmethod
    def of(cls, storage: StorageConfig) -> ArchiveLimits:
        return cls(
            int(storage.skill_max_bytes),
            int(storage.skill_max_uncompressed_bytes),
            storage.skill_max_entries,
            storage.skill_max_compression_ratio,
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    root: str  # the folder that holds SKILL.md ("" for the zip's root)
    files: tuple[str, ...]


def refused(message: str) -> APIError:
    return invalid_request(f"Invalid skill: {message}", param="files", code="invalid_skill")


def check_path(path: str) -> None:
    if not path or "\0" in path:
        raise refused(f"the entry name {path!r} is empty or holds a NUL character.")
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        raise refused(f"the entry '{path}' has an absolute path.")
    parts = re.split(r"[\\/]", path.rstrip("/"))
    if ".." in parts:
        raise refused(f"the entry '{path}' has a '..' part (it would land outside the skill's folder).")
    if "" in parts or "." in parts:
        raise refused(f"the entry '{path}' has an empty or '.' part.")


def check_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise refused(f"{what} is {size} bytes; this server allows at most {limit} (skill_max_bytes).")


def read_skill_zip(data: bytes, limits: ArchiveLimits, *, anthropic: bool = False, built: bool = False) -> Manifest:
    """The skill in `data`, a zip, once every check passed; else a 400 saying which failed."""
    check_size(len(data), limits.max_bytes, "the zip")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise refused(f"the upload is not a readable zip archive ({exc}).") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise refused(f"the zip has {len(infos)} entries; this server allows at most {limits.max_entries} (skill_max_entries).")
        files = check_entries(infos, limits, built)
        contents = read_entries(archive, infos, limits)
    root = skill_root(files)
    text = contents[f"{root}/{SKILL_FILE}" if root else SKILL_FILE]
    name, description = read_front_matter(text, anthropic)
    return Manifest(name, description, root, tuple(files))


def check_entries(infos: list[zipfile.ZipInfo], limits: ArchiveLimits, built: bool) -> list[str]:
    """The file entries' names, once names, types and declared sizes are checked."""
    seen: set[str] = set()
    files: list[str] = []
    declared = 0
    for info in infos:
        name = info.filename
        check_path(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise refused(f"the entry '{name}' is a symbolic link; skills may hold regular files and folders only.")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise refused(f"the entry '{name}' is not a regular file or folder.")
        if info.flag_bits & 0x1:
            raise refused(f"the entry '{name}' is encrypted.")
        if name in seen:
            raise refused(f"the entry '{name}' appears twice.")
        seen.add(name)
        declared += info.file_size
        if declared > limits.max_uncompressed:
            raise refused(
                f"its files would unzip to more than {limits.max_uncompressed} bytes (skill_max_uncompressed_bytes)."
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if not built and info.file_size > RATIO_FLOOR and ratio > limits.max_ratio:
            raise refused(
                f"the entry '{name}' unzips to {ratio:.0f} times its compressed size; this server allows at most "
                f"{limits.max_ratio} (skill_max_compression_ratio): it looks like a zip bomb."
            )
        if not info.is_dir():
            files.append(name)
    folders = {name.rstrip("/").rsplit("/", 1)[0] for name in seen if "/" in name.rstrip("/")}
    clash = sorted(folders & set(files))
    if clash:
        raise refused(f"the entry '{clash[0]}' is a file and also a folder of other entries.")
    return files


def read_entries(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> dict[str, str]:
    """Read every entry, counting the bytes that really come out (a zip may
    declare less than it holds); return the text of each SKILL.md."""
    total = 0
    skill_files: dict[str, str] = {}
    for info in infos:
        if info.is_dir():
            continue
        keep = info.filename.rsplit("/", 1)[-1] == SKILL_FILE
        kept = bytearray()
        read = 0
        try:
            with archive.open(info) as entry:
                while chunk := entry.read(CHUNK):
                    read += len(chunk)
                    total += len(chunk)
                    if read > info.file_size:
                        raise refused(f"the entry '{info.filename}' holds more bytes than its declared size: it looks like a zip bomb.")
                    if total > limits.max_uncompressed:
                        raise refused(
                            f"its files unzip to more than {limits.max_uncompressed} bytes (skill_max_uncompressed_bytes)."
                        )
                    if keep and len(kept) <= MAX_SKILL_FILE:
                        kept += chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
            raise refused(f"the entry '{info.filename}' cannot be read ({exc}).") from None
        if keep:
            if len(kept) > MAX_SKILL_FILE:
                raise refused(f"'{info.filename}' is larger than {MAX_SKILL_FILE} bytes.")
            try:
                skill_files[info.filename] = kept.decode("utf-8")
            except UnicodeDecodeError:
                raise refused(f"'{info.filename}' is not UTF-8 text.") from None
    return skill_files


def skill_root(files: list[str]) -> str:
    """The folder holding SKILL.md: the zip's root, or its one top-level folder."""
    if SKILL_FILE in files:
        return ""
    tops = {f.split("/", 1)[0] for f in files if "/" in f and f.split("/", 1)[0] not in IGNORED_TOPS}
    loose = [f for f in files if "/" not in f]
    if len(tops) == 1 and not loose:
        top = tops.pop()
        if f"{top}/{SKILL_FILE}" in files:
            return top
        raise refused(f"the folder '{top}' has no {SKILL_FILE}.")
    if len(tops) > 1:
        raise refused(f"there is no {SKILL_FILE} at the root, and the files are in more than one top-level folder.")
    raise refused(f"there is no {SKILL_FILE} (at the root or in the skill's one top-level folder).")


def read_front_matter(text: str, anthropic: bool = False) -> tuple[str, str]:
    """SKILL.md's `name` and `description`, from its YAML front matter."""
    match = FRONT_MATTER.match(text)
    if match is None:
        raise refused(f"{SKILL_FILE} does not start with YAML front matter (a '---' line, 'name:' and 'description:', a '---' line).")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise refused(f"the front matter of {SKILL_FILE} is not valid YAML ({problem}).") from None
    if not isinstance(meta, dict):
        raise refused(f"the front matter of {SKILL_FILE} is not a mapping of keys to values.")
    name, description = meta.get("name"), meta.get("description")
    if not isinstance(name, str) or not name.strip():
        raise refused(f"the front matter of {SKILL_FILE} has no 'name' (a string).")
    if not isinstance(description, str) or not description.strip():
        raise refused(f"the front matter of {SKILL_FILE} has no 'description' (a string).")
    name, description = name.strip(), description.strip()
    check_name(name, anthropic)
    if len(description) > MAX_DESCRIPTION:
        raise refused(f"the description is {len(description)} characters long; at most {MAX_DESCRIPTION} are allowed.")
    if XML_TAG.search(description):
        raise refused("the description may not hold XML tags.")
    return name, description


def check_name(name: str, anthropic: bool) -> None:
    if len(name) > MAX_NAME or not NAME.match(name):
        raise refused(
            f"the name '{name[:100]}' is not valid: at most {MAX_NAME} lowercase letters, digits and single hyphens "
            "(not at the start or end)."
        )
    if anthropic:
        for word in RESERVED_WORDS:
            if word in name:
                raise refused(f"the name '{name}' holds the reserved word '{word}'.")


def zip_folder(files: list[tuple[str, bytes]], limits: ArchiveLimits) -> bytes:
    """A folder upload (`files[]`, each named by its path) as a zip, once the
    paths are checked: one top-level folder (or none), no file twice."""
    if len(files) > limits.max_entries:
        raise refused(f"{len(files)} files were uploaded; this server allows at most {limits.max_entries} (skill_max_entries).")
    check_size(sum(len(data) for _, data in files), limits.max_bytes, "the upload")
    tops: set[str] = set()
    for path, _ in files:
        check_path(path)
        tops.add(path.split("/", 1)[0] if "/" in path else "")
    if len(tops) > 1:
        raise refused("the files must all be in one top-level folder (holding SKILL.md).")
    buffer = io.BytesIO()
    seen: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files:
            if path in seen:
                raise refused(f"the file '{path}' was uploaded twice.")
            seen.add(path)
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")
