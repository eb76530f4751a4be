"""Files on disk: one atomic write, one file hash, one JSON form of metadata.

The shared layer under `balllink.io`, `balllink.index` and the lead database; every module
that writes a file, hashes one or stores ``Scan.meta`` as JSON uses these.

* `atomic_path` / `atomic_write`: the data goes to a temporary file beside the target
  (``.<name>.<pid>.<random>.tmp``, so a folder can be swept with ``.*.tmp*``), is flushed to
  disk (``fsync``), renamed over the target (``os.replace``) and the rename itself is made
  durable by an ``fsync`` of the folder where the OS allows it. A reader, or a process
  restarted after a crash, sees the whole old file or the whole new one, never a torn one;
  on any failure the temporary file is removed and the old file is left as it was.
  ``mode=`` gives the new file exact permission bits (the umask does not apply).
* `private_dir` / `file_mode_in`: the permissions of the lead database. A folder it creates
  is ``0700`` (a sub-folder takes the bits of its parent), and a file it writes takes the
  read/write bits of its folder (``0600`` in a private folder, ``0660`` in one a lab has
  shared with ``chmod g+rwX``): private by default, shareable by one ``chmod`` of the folder.
* `file_sha256`: SHA-256 of a file's bytes (``hashlib.file_digest``).
* `jsonable`: the JSON form of a metadata value, with one NaN/Inf policy (kept; see there).
* `csv_safe` / `csv_row`: the CSV form of a cell, never a formula a spreadsheet would run
  (every CSV export: leads, scores, evaluations).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PRIVATE_DIR_MODE",
    "atomic_path",
    "atomic_write",
    "csv_row",
    "csv_safe",
    "file_mode_in",
    "file_sha256",
    "jsonable",
    "private_dir",
]

_ATTEMPTS = 100  # names tried before giving up (as tempfile does)
#: A folder the lead database creates: the owner only.
PRIVATE_DIR_MODE = 0o700


def private_dir(path: str | os.PathLike[str], *, like: str | os.PathLike[str] | None = None):
    """Create the folder ``path`` (missing parents as usual) with exact permissions.

    A new folder gets ``0700`` (`PRIVATE_DIR_MODE`), or the permission bits of the folder
    ``like`` (a sub-folder of the database takes those of its parent, so a folder a lab
    shared stays shared). An existing folder is left as it is (its owner may have shared
    it on purpose).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> top = private_dir(Path(tempfile.mkdtemp()) / "db")
    >>> sub = private_dir(top / "scans", like=top)
    >>> oct(top.stat().st_mode & 0o777), oct(sub.stat().st_mode & 0o777)
    ('0o700', '0o700')
    """
    path = Path(os.fspath(path))
    if path.is_dir():
        return path
    mode = PRIVATE_DIR_MODE if like is None else os.stat(like).st_mode & 0o7777
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise
        return path  # made meanwhile by another process: its mode stands
    os.chmod(path, mode)  # exact: the umask applied to mkdir
    return path


def file_mode_in(folder: str | os.PathLike[str]) -> int:
    """The permissions of a file the database writes into ``folder``: the folder's own read
    and write bits (``0600`` in a ``0700`` folder, ``0660`` in a ``0770`` one).

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp(); os.chmod(folder, 0o750)
    >>> oct(file_mode_in(folder))
    '0o640'
    """
    return os.stat(folder).st_mode & 0o666 | 0o600


def _create_temporary(path: Path, mode: int | None) -> Path:
    """Create an empty, new file beside ``path``; permissions ``mode`` exactly, or (None)
    as for ``open(..., "w")``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            handle = os.open(temporary, flags, 0o666 if mode is None else mode & 0o600)
        except FileExistsError:
            continue
        try:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(handle, mode)  # exact: the umask applied to open
        except OSError:
            os.close(handle)
            temporary.unlink(missing_ok=True)
            raise
        os.close(handle)
        return temporary
    raise FileExistsError(f"no free temporary name beside {path}")


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the OS allows it (POSIX); else do nothing."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a folder; its rename needs no folder fsync
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems (network, FUSE) refuse; the rename has happened
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Give a temporary path to write; on success it replaces ``path`` atomically.

    For writers that want a path or an open file (``np.savez``, a FAISS index's ``save``)
    rather than bytes in memory. The temporary file exists (empty) when the block starts
    and lies in the folder of ``path``. When the block ends normally the file is fsynced,
    renamed over ``path`` and the folder fsynced; when it raises, the temporary file is
    removed, ``path`` is untouched and the exception goes on.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    mode : int, optional
        Permission bits of the new file, exactly (e.g. ``file_mode_in(folder)``); default
        as for ``open(..., "w")`` (``0666`` less the umask).

    Yields
    ------
    pathlib.Path
        The temporary file to write, ``.<name>.<pid>.<random>.tmp`` beside ``path``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "a.npz"
    >>> with atomic_path(target) as temporary, open(temporary, "wb") as stream:
    ...     np.savez(stream, x=np.arange(3))
    >>> np.load(target)["x"].tolist(), sorted(p.name for p in target.parent.iterdir())
    ([0, 1, 2], ['a.npz'])
    """
    path = Path(os.fspath(path))
    temporary = _create_temporary(path, mode)
    try:
        yield temporary
        with open(temporary, "rb+") as stream:  # writable: Windows' fsync needs it
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically and durably (see `atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write or replace; its folder must exist.
    data : bytes
        The whole new content.
    mode : int, optional
        Permission bits of the file, exactly; default as for ``open(..., "w")``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(target, b"old"); atomic_write(target, b"new")
    >>> target.read_bytes(), [p.name for p in target.parent.iterdir()]
    (b'new', ['note.txt'])
    >>> atomic_write(target, b"mine", mode=0o600); oct(target.stat().st_mode & 0o777)
    '0o600'
    """
    with atomic_path(path, mode=mode) as temporary:
        temporary.write_bytes(data)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as 64 hexadecimal digits (read in chunks).

    Parameters
    ----------
    path : str or os.PathLike
        The file to hash.

    Returns
    -------
    str
        ``hashlib.sha256(<the bytes>).hexdigest()``.

    Raises
    ------
    OSError
        The file cannot be read (missing, a folder, no permission).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "abc.txt"
    >>> _ = target.write_bytes(b"abc")
    >>> file_sha256(target)[:16]
    'ba7816bf8f01cfea'
    """
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


_OMIT = object()  # "this value has no JSON form"


def _json_form(value: Any, open_containers: set[int]) -> Any:
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        value = value.item()  # numpy scalars as Python numbers, str, bool, datetime
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if not isinstance(value, dict | list | tuple) or id(value) in open_containers:
        return _OMIT  # arrays, bytes, objects; a container holding itself
    open_containers.add(id(value))
    try:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                converted = _json_form(item, open_containers)
                if converted is not _OMIT:
                    out[key if isinstance(key, str) else str(key)] = converted
            return out
        items = (_json_form(item, open_containers) for item in value)
        return [None if item is _OMIT else item for item in items]
    finally:
        open_containers.discard(id(value))


def jsonable(value: Any) -> Any:
    """The JSON form of a metadata value (``Scan.meta`` or a part of it).

    * ``None``, ``str``, ``bool``, ``int`` and ``float`` are kept as they are, **NaN and
      ±Inf included**: write the result with ``json.dumps(..., allow_nan=True)`` (the
      default), which spells them ``NaN``/``Infinity``/``-Infinity``, and ``json.loads``
      reads them back. A missing measurement stays distinguishable from a missing key.
    * numpy scalars become the Python value (``np.float32(0.5)`` → ``0.5``);
      ``datetime``/``date`` become ISO 8601 text; tuples become lists.
    * dicts keep every entry that has a JSON form (the others are left out) and their keys
      become ``str(key)``; in a list or tuple an item with no JSON form becomes ``None``, so
      the other items keep their places.
    * anything else (arrays, bytes, other objects, a container that holds itself) has no
      JSON form.

    Parameters
    ----------
    value : object
        Typically a dict of metadata.

    Returns
    -------
    object
        Built from ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.

    Raises
    ------
    TypeError
        ``value`` itself has no JSON form (an array, say); pass the dict that holds it to
        have it left out.

    Examples
    --------
    >>> import json, numpy as np
    >>> from datetime import datetime
    >>> meta = {"score": np.float32(0.5), "shift": (1, np.int64(2)), "mask": np.ones(2),
    ...         "depth": float("nan"), 7: datetime(2024, 5, 1, 12, 30), "parts": [np.ones(2), 3]}
    >>> jsonable(meta)
    {'score': 0.5, 'shift': [1, 2], 'depth': nan, '7': '2024-05-01T12:30:00', 'parts': [None, 3]}
    >>> json.dumps(jsonable(meta))
    '{"score": 0.5, "shift": [1, 2], "depth": NaN, "7": "2024-05-01T12:30:00", "parts": [null, 3]}'
    """
    converted = _json_form(value, set())
    if converted is _OMIT:
        raise TypeError(
            f"a {type(value).__name__} has no JSON form; put it in a dict to have it left out"
        )
    return converted


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that a spreadsheet will not run as a formula (OWASP CSV injection).

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    single quote, unless it is a plain number (``-1.5`` stays a number). Other values pass
    through unchanged. Every CSV balllink writes goes through this (see `csv_row`).

    Examples
    --------
    >>> csv_safe("=cmd|' /C calc'!A0"), csv_safe("@SUM(A1)"), csv_safe("-12.5")
    ("'=cmd|' /C calc'!A0", "'@SUM(A1)", '-12.5')
    >>> csv_safe("+1-2"), csv_safe(-3), csv_safe("PD-1")
    ("'+1-2", -3, 'PD-1')
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value if value.strip() == value else "'" + value


def csv_row(row):
    """`csv_safe` applied to every cell of a row (a dict's values, or a sequence).

    Examples
    --------
    >>> csv_row({"case": "=1+1", "score": 9.5}), csv_row(["-x", "-1"])
    ({'case': "'=1+1", 'score': 9.5}, ["'-x", '-1'])
    """
    if isinstance(row, dict):
        return {k: csv_safe(v) for k, v in row.items()}
    return [csv_safe(v) for v in row]
