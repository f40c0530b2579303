"""Safe zip extraction and atomic directory replacement.

Archives come from the network or from users; a member must never escape the target
folder, be a link or special file, or inflate beyond a stated bound (zip bomb).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from brainseg.errors import BrainsegError

_CHUNK = 1 << 20


class UnsafeArchiveError(BrainsegError, ValueError):
    """The archive holds a member that must not be extracted."""


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "'..' in path"
    # Unix tools store the file type in the high bits; zips made elsewhere leave them 0.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        return "link or special file"
    return None


def safe_extract_zip(archive: Path, target: Path, max_bytes: int) -> int:
    """Extract `archive` into the existing empty folder `target`; return the number of files.

    Checks every member before writing anything, and counts the bytes actually written so a
    member whose header lies about its size is still stopped at `max_bytes`.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise UnsafeArchiveError(f"{archive}: not a zip archive (truncated download?)") from None
    with zf:
        members = zf.infolist()
        for info in members:
            problem = _member_problem(info)
            if problem:
                raise UnsafeArchiveError(f"{archive}: refusing member {info.filename!r}: {problem}")
        declared = sum(info.file_size for info in members)
        if declared > max_bytes:
            raise UnsafeArchiveError(
                f"{archive}: uncompressed size {declared} bytes exceeds the bound of {max_bytes} "
                "(raise data.max_archive_mb if the archive is trusted)"
            )
        written = 0
        files = 0
        for info in members:
            dest = target / info.filename
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise UnsafeArchiveError(f"{archive}: inflates past the bound of {max_bytes} bytes")
                    out.write(chunk)
            files += 1
    return files


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_abandoned(parent: Path, prefix: str) -> list[Path]:
    """Remove `parent/<prefix><pid>...` entries whose process no longer runs; return them.

    A killed run (SIGKILL, power loss) cannot clean its scratch folders; the next run does. Entries
    of a process that still runs are kept: it may be a concurrent run using them.
    """
    removed = []
    for entry in parent.glob(f"{prefix}*") if parent.is_dir() else ():
        digits = entry.name[len(prefix):].split("-", 1)[0]
        if digits.isdigit() and not _pid_running(int(digits)):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
    return removed


@contextmanager
def scratch_dir(parent: Path, prefix: str):
    """A temporary folder `parent/<prefix><pid>-<random>`, removed on exit; first removes what killed
    earlier runs left under the same prefix."""
    parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staging_dir(final: Path):
    """Yield a temporary folder beside `final`; on success it atomically becomes `final`.

    On any error the temporary folder is removed and `final` is left exactly as it was. Staging and
    replaced folders that a killed run left beside `final` are removed first.
    """
    remove_abandoned(final.parent, f".{final.name}.old-")
    with scratch_dir(final.parent, f".{final.name}.tmp-") as tmp:
        yield tmp
        replace_dir(tmp, final)


def replace_dir(src: Path, final: Path) -> None:
    """Move the folder `src` to `final`, replacing any old folder there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(src, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def temp_sibling(path: Path) -> Path:
    """Where to write `path` before renaming it into place (this process's name; what killed runs
    left under such names is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(path.parent, f".{path.name}.tmp-")
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = temp_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
