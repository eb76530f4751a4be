"""Cell-based (CMC) comparison of two prepared scans: `compare`, `compare_many`."""

from __future__ import annotations

from ._compare import CMCConfig, Comparison, compare, compare_many, mirror_scan

__all__ = ["CMCConfig", "Comparison", "compare", "compare_many", "mirror_scan"]
