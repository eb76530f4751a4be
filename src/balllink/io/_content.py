"""What a format reader hands to `read_scan`, before the finishing common to all formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ScanFormatError

__all__ = ["READER_KEYS", "FileContent", "fail"]

#: Keys of ``meta`` that the reader derives from a foreign file (X3P, the old .npz layout);
#: not stored in X3P ``meta.json``.
READER_KEYS = frozenset(
    {
        "format",
        "quirks",
        "checksum",
        "file_mask",
        "mask_applied",
        "annotations",
        "source_sha256",
        "x3p",
    }
)


@dataclass
class FileContent:
    """A file's heights as stored, spacing (None when the file has none), ROI and meta."""

    heights: np.ndarray
    spacing_um: tuple[float, float] | None
    file_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    quirks: list[str] = field(default_factory=list)
    checksum: str = "missing"
    format: str = ""
    annotations: dict[str, np.ndarray] = field(default_factory=dict)


def fail(path: Path, what: str) -> ScanFormatError:
    """The error for a file that cannot be read: names the file and the problem.

    Examples
    --------
    >>> str(fail(Path("a.npz"), "the file is empty"))
    'a.npz: the file is empty'
    """
    return ScanFormatError(f"{path}: {what}")
