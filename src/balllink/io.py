"""Reading and writing scans: X3P (ISO 25178-72), .npy/.npz, PNG/TIFF (issue 2).

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = ["read_scan", "write_scan"]


def read_scan(path, *, apply_mask=True, spacing_um=None):
    raise NotImplementedError("read_scan: issue 2")


def write_scan(scan, path):
    raise NotImplementedError("write_scan: issue 2")
