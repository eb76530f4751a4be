"""Exceptions raised by balllink.

Every error names the file or object it is about and what is wrong, so that a batch job can
report it and go on.
"""

from __future__ import annotations

__all__ = [
    "BalllinkError",
    "DatabaseError",
    "IndexFormatError",
    "PreprocessError",
    "ScanFormatError",
]


class BalllinkError(Exception):
    """Base class of every error balllink raises on purpose."""


class ScanFormatError(BalllinkError, ValueError):
    """A scan file cannot be read: not the format it claims, damaged, hostile or empty."""


class PreprocessError(BalllinkError, ValueError):
    """A scan cannot be turned into a comparable breech-face surface."""


class IndexFormatError(BalllinkError, ValueError):
    """A saved candidate index is truncated, foreign or of another descriptor version."""


class DatabaseError(BalllinkError, RuntimeError):
    """The lead database is inconsistent, of an unknown schema version, or misused."""
