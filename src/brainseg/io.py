"""Files written so that a reader never sees half of one: temp names, atomic renames, scratch
folders that killed runs leave behind and the next run removes; and file checksums.

Every output goes to a temporary name beside its final path (same file system) and is renamed
into place, which POSIX makes atomic: a crash leaves the old file or the new one, never a mix.
Temporary names carry the writer's pid, so a later run can tell abandoned ones from a live run's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

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


def temp_sibling(path: Path, clear_abandoned: bool = False) -> Path:
    """Where to write `path` before renaming it into place, named for this process.

    `clear_abandoned` first removes what killed runs left under such names: worth a folder listing
    for large files (models), not for each of thousands of small outputs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if clear_abandoned:
        remove_abandoned(path.parent, f".{path.name}.tmp-")
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_output(path: Path, clear_abandoned: bool = False, suffix: str = ""):
    """Yield a temporary path beside `path` to write; on success it replaces `path`.

    On any error the temporary file is removed and `path` is left as it was. `suffix` serves
    writers that choose the format from the name (matplotlib).
    """
    tmp = temp_sibling(path, clear_abandoned)
    tmp = tmp.with_name(tmp.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
