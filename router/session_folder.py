"""Session folders as the server sees them (router/agent_sessions.py): the
store's root, each session's working folder, which files a run wrote, reading
them, unpacking skills into it, removing it.

The folder belongs to sandboxed code, which may still be running in the
background: it can swap any file or folder in it for a symlink (to
/etc/shadow, to the server's config) at any moment. So nothing here follows a
symlink: the folder is walked with os.fwalk (directory fds, no symlinks),
files are opened component by component with O_NOFOLLOW relative to their
folder's fd, and only regular files with one link are read. The server may be
root; the code is not.

Everything here blocks (disk): callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from modelyard.router.skill_archive import IGNORED_TOPS, ArchiveLimits, Manifest, read_skill_zip, refused

log = logging.getLogger("modelyard.sessions")

SKILLS = "skills"  # workdir/skills/<name>/: unpacked skills, not output
MAX_SCANNED = 10_000  # entries looked at per walk: a folder of a million files does not stall the server
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO does not hang us

Snapshot = dict[str, tuple[int, int]]  # relative path -> (size, mtime in ns), regular files only


def make_root(folder: Path) -> Path:
    """This process's folder of sessions, folder/run-<pid>-<hex> (o+x, not listable); the folders of servers
    that are gone are removed (sessions do not outlive their server)."""
    base = folder
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and any(not os.stat(p).st_mode & 0o001 for p in base.resolve().parents):
        # The sandbox runs as nobody and bwrap opens the folder by its path: every folder above must be
        # searchable by others. The storage folder's are not (e.g. under /root): use one in /tmp.
        base = _private_tmp_folder()
        log.warning("session folders are in %s: the folders above %s are not searchable by others (o+x), "
                    "which the sandbox (run as nobody) needs", base, folder)
    base.chmod(0o711)
    for entry in base.glob("run-*"):  # left by a server that died: its sessions are gone
        pid = entry.name.split("-")[1]
        if not pid.isdigit() or not _alive(int(pid)):
            remove_tree(entry)
    root = base / f"run-{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(mode=0o711)
    root.chmod(0o711)  # whatever the umask
    return root


def _private_tmp_folder() -> Path:
    """/tmp/modelyard-sessions-<uid>, if it is (or can be made) our own real folder; else a fresh one."""
    fixed = Path(tempfile.gettempdir()) / f"modelyard-sessions-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        fixed.mkdir(mode=0o711)
    st = os.lstat(fixed)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():  # not someone else's, not a symlink
        return fixed
    return Path(tempfile.mkdtemp(prefix="modelyard-sessions-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ready(path: Path) -> Snapshot:
    """The session's folder, made if new (it and the folders above it up to the store's root searchable by the
    sandbox's user, o+x, and not listable), and its snapshot."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o711)
        folder.chmod(0o711)  # whatever the umask
    return snapshot(path)


def snapshot(root: Path) -> Snapshot:
    """The regular files under `root` (not hidden ones, not skills/), by relative path."""
    found: Snapshot = {}
    seen = 0
    for folder, dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        relative = os.path.relpath(folder, root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (relative == "." and d == SKILLS))
        for name in sorted(files):
            seen += 1
            if seen > MAX_SCANNED:
                return found
            if name.startswith("."):
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[os.path.normpath(os.path.join(relative, name))] = (st.st_size, st.st_mtime_ns)
    return found


def changes(root: Path, before: Snapshot, most: int) -> list[str]:
    """Up to `most` files new or changed (size or mtime) since `before`, in path order."""
    after = snapshot(root)
    return sorted(path for path, state in after.items() if before.get(path) != state)[:most]


def read_inside(root: Path, relative: str, limit: int) -> bytes | None:
    """The bytes of the regular file `relative` under `root`, reached without following a symlink;
    None if it is not one (any more), has other hard links, or is over `limit` bytes."""
    parts = relative.split("/")
    fds: list[int] = []
    try:
        fds.append(os.open(root, OPEN_DIR))
        for part in parts[:-1]:
            fds.append(os.open(part, OPEN_DIR, dir_fd=fds[-1]))
        fd = os.open(parts[-1], OPEN_FILE, dir_fd=fds[-1])
    except OSError:
        return None
    finally:
        for opened in fds:
            os.close(opened)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > limit:
            return None
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def unpack_skill(root: Path, data: bytes, limits: ArchiveLimits) -> str:
    """Unpack a skill's zip (checked as an upload is: router/skill_archive.py) into root/skills/<name>/,
    replacing what was there; return its name. Raises the APIError of a refused zip."""
    manifest = read_skill_zip(data, limits)
    try:
        _unpack(root, data, manifest)
    except OSError as exc:  # the code swapped a folder for a symlink (ELOOP), or the like: refused, not a 500
        raise refused(f"it could not be unpacked into the session's folder ({exc.strerror or exc}).") from None
    return manifest.name


def _unpack(root: Path, data: bytes, manifest: Manifest) -> None:
    root_fd = os.open(root, OPEN_DIR)
    try:
        skills_fd = _fresh_folder(root_fd, SKILLS, keep=True)
        try:
            skill_fd = _fresh_folder(skills_fd, manifest.name, keep=False)
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    prefix = f"{manifest.root}/" if manifest.root else ""
                    for name in manifest.files:
                        if not name.startswith(prefix) or name.split("/", 1)[0] in IGNORED_TOPS:
                            continue
                        _write_inside(skill_fd, name[len(prefix):], archive.read(name))
            finally:
                os.close(skill_fd)
        finally:
            os.close(skills_fd)
    finally:
        os.close(root_fd)


def _fresh_folder(parent_fd: int, name: str, *, keep: bool) -> int:
    """The fd of folder `name` in `parent_fd`, made anew (or, with `keep`, reused if it is a real folder)."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not (keep and stat.S_ISDIR(st.st_mode)):
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # fd-based: symlinks inside are removed, not followed
        else:
            os.unlink(name, dir_fd=parent_fd)
        st = None
    if st is None:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, OPEN_DIR, dir_fd=parent_fd)


def _write_inside(base_fd: int, relative: str, data: bytes) -> None:
    parts = relative.rstrip("/").split("/")
    fds: list[int] = []
    try:
        here = base_fd
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=here)
            here = os.open(part, OPEN_DIR, dir_fd=here)
            fds.append(here)
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=here)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    finally:
        for opened in fds:
            os.close(opened)


def remove_tree(path: Path) -> None:
    """Remove a session's folder, whatever modes the code left on what is inside."""

    def opened_up(function: object, failed: str, exc_info: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=opened_up)
    if path.exists():
        log.warning("could not remove all of the session folder %s", path)
