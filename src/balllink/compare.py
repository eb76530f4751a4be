"""Cell-based (CMC) comparison of two prepared scans (issue 4).

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = ["CMCConfig", "Comparison", "compare", "compare_many"]


class CMCConfig:
    pass


class Comparison:
    pass


def compare(a, b, **options):
    raise NotImplementedError("compare: issue 4")


def compare_many(query, candidates, **options):
    raise NotImplementedError("compare_many: issue 4")
