"""Output files: names checked and folders proven writable before any work starts; written under a temporary
name and published without ever replacing a file silently; leftovers of killed runs cleaned up.

The rules, for the command line and the nodes alike:

- A name part (a file name, ComfyUI's ``filename_prefix``) is refused when it is empty, holds a NUL or another
  control character, starts with a dot (a hidden file nobody asked for), has a ``..`` component, or is longer than
  the filesystem allows once the suffix and counter are added (255 bytes per component).
- ``prepare_output(path)``: the folder exists or is created, a probe file can be created in it, the target is not
  a folder, and it does not exist unless ``overwrite`` — all before the model is loaded.
- ``partial_path(path)`` names the temporary file (hidden, with this process's id, in the same folder so the final
  rename is atomic); ``publish(tmp, path, overwrite)`` moves it into place. Without ``overwrite`` this is a hard
  link plus unlink, which fails if a file appeared under the final name meanwhile (two runs writing the same name
  at once): the later run then gets a clear error and its temporary file is removed.
- ``remove_stale_partials(folder)`` deletes temporary files of this program whose process is gone (a run killed
  with SIGKILL cannot clean up after itself; the next run in that folder does). Files in the naming of earlier
  versions (``.<stem>.<8 hex>.partial.mp4``, no process id) are removed once unchanged for OLD_PARTIAL_AGE seconds
  (a live writer touches its file every few frames).
"""

from __future__ import annotations

import errno
import os
import re
import time
import uuid
from pathlib import Path

from ovi_core.errors import OviInputError

MAX_COMPONENT_BYTES = 255  # ext4, xfs, btrfs, APFS, NTFS (in UTF-16 units; bytes is the stricter bound here)
PARTIAL_MARK = ".ovi-partial"
_PARTIAL_RE = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d+)-(?P<tag>[0-9a-f]{8})" + re.escape(PARTIAL_MARK) + r"(?P<suffix>\.[^.]*)?$")
_OLD_PARTIAL_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.partial(\.[^.]+)?$")  # mux.temporary_path before outpaths
OLD_PARTIAL_AGE = 120.0  # seconds
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OutputPathError(OviInputError):
    """An output name or folder that cannot be used; the message says which and why."""


def check_name_part(text, what: str = "file name", reserve: int = 0, allow_folders: bool = False) -> str:
    """``text`` if it is a usable file name (or relative path with ``allow_folders``), else OutputPathError.

    ``reserve`` bytes are kept free in the last component for what gets appended (a counter, a suffix)."""
    if not isinstance(text, str):
        raise OutputPathError(f"{what} must be text, got {type(text).__name__}")
    if not text.strip():
        raise OutputPathError(f"{what} is empty; give a name such as 'Ovi/clip'")
    if "\x00" in text or _CONTROL.search(text):
        bad = _CONTROL.search(text).group()
        raise OutputPathError(f"{what} {text[:60]!r} contains the control character {bad!r}; use letters, digits, "
                              "spaces, '-', '_' and '/' for folders")
    parts = re.split(r"[\\/]", text) if allow_folders else [text]
    if not allow_folders and ("/" in text or "\\" in text):
        raise OutputPathError(f"{what} {text!r} must be a plain file name without a folder part")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part in ("", ".") and not last and i > 0:
            continue  # "a//b" or "a/./b": harmless
        if part == "..":
            raise OutputPathError(f"{what} {text!r} must stay inside the output folder (no '..')")
        if last and not part.strip():
            raise OutputPathError(f"{what} {text!r} ends with a folder separator; add a file name after it")
        if part.startswith("."):
            raise OutputPathError(f"{what} {text!r}: {part!r} starts with a dot, which makes a hidden "
                                  f"{'file' if last else 'folder'}; drop the dot")
        room = MAX_COMPONENT_BYTES - (reserve if last else 0)
        if len(part.encode("utf-8", "surrogateescape")) > room:
            raise OutputPathError(f"{what}: {part[:40]!r}... is {len(part.encode('utf-8', 'surrogateescape'))} bytes "
                                  f"long; file systems allow {MAX_COMPONENT_BYTES} bytes per name"
                                  + (f", and {reserve} are needed for the counter and extension" if reserve else "")
                                  + f": shorten it to at most {room} bytes")
    return text


def partial_path(path: Path) -> Path:
    """The temporary name ``path`` is written under: hidden, this process's id, same folder."""
    path = Path(path)
    stem = path.stem
    limit = MAX_COMPONENT_BYTES - 40 - len(path.suffix.encode())
    if len(stem.encode("utf-8", "surrogateescape")) > limit:  # keep the temporary name legal too
        stem = stem.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")
    return path.with_name(f".{stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_MARK}{path.suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete temporary files of this program in ``folder`` whose writing process no longer runs."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        m = _PARTIAL_RE.match(p.name)
        if m:
            stale = not _pid_alive(int(m.group("pid")))
        elif _OLD_PARTIAL_RE.match(p.name):
            try:
                stale = p.is_file() and now - p.stat().st_mtime > OLD_PARTIAL_AGE
            except OSError:
                stale = False
        else:
            stale = False
        if stale:
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _explain(exc: OSError) -> str:
    return {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted (immutable or protected)",
            errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
            errno.ENAMETOOLONG: "the name is too long", errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "a file of that name exists", errno.EDQUOT: "the disk quota is exceeded",
            }.get(exc.errno, exc.strerror or type(exc).__name__)


def prepare_output(path, *, overwrite: bool = False, what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written; create its folder. Returns the path.

    Refused (OutputPathError): an illegal name, a folder that cannot be created or written, a target that is a
    folder, an existing file without ``overwrite`` (or one that cannot be replaced with it)."""
    path = Path(path)
    check_name_part(path.name, f"{what} name", reserve=len(PARTIAL_MARK) + 20)
    folder = path.parent
    for part in folder.parts:  # a folder name too long for the file system fails every call below
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise OutputPathError(f"cannot write {what} {path.name}: the folder name {part[:40]!r}... is longer than "
                                  f"the {MAX_COMPONENT_BYTES} bytes file systems allow; shorten it")
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputPathError(f"cannot write {path}: {folder} is a file, not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"cannot create the folder {folder} for the {what}: {_explain(exc)}") from None
        if path.is_dir():
            raise OutputPathError(f"{what} {path} is a folder; give a file name")
        exists = path.exists() or path.is_symlink()
    except OutputPathError:
        raise
    except OSError as exc:  # e.g. a path too long in total, or a folder that cannot be searched
        raise OutputPathError(f"cannot use {path} for the {what}: {_explain(exc)}") from None
    if exists:
        if not overwrite:
            raise OutputPathError(f"{what} {path} exists already; pass --overwrite to replace it, or choose another "
                                  "name")
        if not os.access(path, os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {path} exists and cannot be replaced: permission denied")
    probe = partial_path(path)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"cannot write into {folder} ({what} {path.name}): {_explain(exc)}") from None
    remove_stale_partials(folder)
    return path


def publish(tmp: Path, path: Path, *, overwrite: bool = False) -> None:
    """Move the finished temporary file to its final name. Without ``overwrite`` an existing final file (say one
    that another run wrote meanwhile) is never replaced: OutputPathError, and ``tmp`` is removed."""
    tmp, path = Path(tmp), Path(path)
    try:
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic, and fails if path exists
        except FileExistsError:
            raise OutputPathError(f"{path} appeared while this clip was being written (another run?); it was left "
                                  "as it is and this clip was not saved — choose another name or pass --overwrite") \
                from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # file systems without hard links (FAT, some network mounts): check, then rename (a small race remains)
            if path.exists():
                raise OutputPathError(f"{path} appeared while this clip was being written; it was left as it is") \
                    from None
            os.rename(tmp, path)
            return
        tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
