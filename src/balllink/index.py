"""FAISS candidate index of casings (issue 5). FAISS is imported here only.

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = ["CasingIndex"]


class CasingIndex:
    pass
