"""Safe zip extraction.

Archives come from the network or from users; a member must never escape the target
folder, be a link or special file, or inflate beyond a stated bound (zip bomb).
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from brainseg.errors import BrainsegError

_CHUNK = 1 << 20


class UnsafeArchiveError(BrainsegError, ValueError):
    """The archive holds a member that must not be extracted."""


# Members that inflate more than this many times their compressed size (beyond the first MiB,
# which any file may) are refused: real images barely compress, the COCO JSONs about 5:1.
MAX_COMPRESSION_RATIO = 100
_RATIO_ALLOWANCE = 1 << 20
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
            zipfile.ZIP_LZMA: "lzma"}


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "'..' in path"
    if any(len(part.encode()) > 255 for part in path.parts):
        return "a file or folder name longer than 255 bytes, which no common file system stores"
    # Unix tools store the file type in the high bits; zips made elsewhere leave them 0.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        return "link or special file"
    if info.flag_bits & 0x1:
        return "encrypted; decrypt the archive (or re-zip its files) first"
    if info.compress_type not in _METHODS:
        return (f"compression method {info.compress_type} is not supported ({', '.join(_METHODS.values())} are); "
                "re-zip the files")
    if info.file_size > MAX_COMPRESSION_RATIO * info.compress_size + _RATIO_ALLOWANCE:
        return (f"inflates to {info.file_size} bytes from {info.compress_size}, beyond the compression ratio "
                f"bound of {MAX_COMPRESSION_RATIO}:1 (zip bomb?)")
    return None


def _layout_problems(members: list[zipfile.ZipInfo]) -> list[str]:
    """Names that cannot all be extracted: a file listed twice, or a path that is a file and a folder."""
    problems, files, folders = [], set(), set()
    for info in members:
        path = PurePosixPath(info.filename)
        folders.update(str(parent) for parent in path.parents if str(parent) != ".")
        if info.is_dir():
            folders.add(str(path))
        elif str(path) in files:
            problems.append(f"{info.filename!r}: listed twice")
        else:
            files.add(str(path))
    problems += [f"{name!r}: both a file and a folder" for name in sorted(files & folders)]
    return problems


def safe_extract_zip(archive: Path, target: Path, max_bytes: int) -> int:
    """Extract `archive` into the existing empty folder `target`; return the number of files.

    Checks every member before writing anything (names, types, encryption, compression method,
    declared sizes), and checks each member's size and CRC itself while writing, so a member whose
    header lies about its size, or whose data are corrupt, is named.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise UnsafeArchiveError(f"{archive}: not a zip archive (truncated download?): {err}") from None
    with zf:
        members = zf.infolist()
        problems = [f"{info.filename!r}: {problem}" for info in members if (problem := _member_problem(info))]
        problems += _layout_problems(members)
        if problems:
            raise UnsafeArchiveError(f"{archive}: refusing member {problems[0]}"
                                     + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        declared = sum(info.file_size for info in members)
        if declared > max_bytes:
            raise UnsafeArchiveError(
                f"{archive}: uncompressed size {declared} bytes exceeds the bound of {max_bytes} "
                "(raise data.max_archive_mb if the archive is trusted)"
            )
        # zipfile never inflates a member beyond its declared size, so the bounds checked above hold.
        files = 0
        for info in members:
            dest = target / info.filename
            try:
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                _extract_member(zf, info, dest)
            except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as err:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} cannot be extracted, the archive "
                                         f"is corrupt ({type(err).__name__}: {err}); download it again") from None
            except OSError as err:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} cannot be written to {dest}: "
                                         f"{err.strerror or err}") from None
            files += 1
    return files


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Write one member; BadZipFile when its data do not match its declared size and CRC.

    zipfile stops at the declared size without checking the CRC when the data go on beyond it, so
    the CRC is checked here: a header that understates the size is corrupt, not a shorter file.
    """
    size, crc = 0, 0
    with zf.open(info) as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            out.write(chunk)
    if size != info.file_size or crc != info.CRC:
        raise zipfile.BadZipFile(f"its data inflate to {size} bytes with CRC {crc:08x}, its header says "
                                 f"{info.file_size} bytes with CRC {info.CRC:08x}")
