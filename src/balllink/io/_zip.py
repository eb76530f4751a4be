"""Guarded access to zip containers (X3P files and .npz scans).

The declared uncompressed sizes are checked against a limit (`MAX_UNCOMPRESSED_BYTES`) before
anything is decompressed, and every read is capped at the declared size, so a zip bomb or a
truncated archive is refused within milliseconds with a `ScanFormatError` naming the file.
Folders, ``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db`` and ``desktop.ini`` entries are
left out of the member list.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib

from ..errors import ScanFormatError

__all__ = [
    "MAX_MEMBERS",
    "MAX_UNCOMPRESSED_BYTES",
    "Failure",
    "open_zip",
    "read_member",
    "zip_members",
]

#: Largest total uncompressed size of the members of a container that is read (bytes).
MAX_UNCOMPRESSED_BYTES = 1 << 30
#: Largest number of members in a container.
MAX_MEMBERS = 4096

_JUNK = re.compile(r"(^|/)(__macosx/|\._[^/]*$|\.ds_store$|thumbs\.db$|desktop\.ini$)", re.I)


class Failure:
    """Raises `ScanFormatError` naming the file."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, what: str) -> ScanFormatError:
        return ScanFormatError(f"{self.label}: {what}")


def open_zip(stream: io.BufferedReader, fail: Failure) -> zipfile.ZipFile:
    head = stream.read(4)
    stream.seek(0)
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as error:
        if head.startswith(b"PK"):
            raise fail(
                f"truncated or damaged zip archive ({error}); the end of the file "
                "(zip central directory) is missing or unreadable"
            ) from None
        raise fail(
            f"not a zip archive (it starts with {head!r}); .x3p and .npz files are zip containers"
        ) from None


def zip_members(archive: zipfile.ZipFile, fail: Failure, limit: int) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise fail(f"the zip holds {len(infos)} members, more than the limit {MAX_MEMBERS}")
    total = sum(info.file_size for info in infos)
    if total > limit:
        biggest = max(infos, key=lambda info: info.file_size)
        raise fail(
            f"the zip declares {total} bytes uncompressed ({biggest.filename!r}: "
            f"{biggest.file_size}), more than the limit of {limit} bytes; refused "
            "(zip bomb or not a scan)"
        )
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename.replace("\\", "/")
        if info.is_dir() or name.endswith("/") or _JUNK.search(name):
            continue
        members[name] = info
    return members


def read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, fail: Failure, cap: int | None = None
) -> bytes:
    cap = info.file_size if cap is None else min(cap, info.file_size)
    if info.file_size > cap:
        raise fail(f"member {info.filename!r} declares {info.file_size} bytes, above {cap}")
    try:
        with archive.open(info) as member:
            data = member.read(cap + 1)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
        ValueError,  # UnicodeDecodeError: a header flags its member's name UTF-8, wrongly
    ) as e:
        raise fail(f"member {info.filename!r} is damaged, truncated or encrypted: {e}") from None
    if len(data) != info.file_size:
        raise fail(
            f"member {info.filename!r} holds {len(data)} bytes, not the {info.file_size} "
            "its zip entry declares"
        )
    return data
