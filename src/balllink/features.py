"""Descriptors of prepared scans for the candidate index (issue 5).

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = ["embed", "embed_many"]


def embed(prep, **options):
    raise NotImplementedError("embed: issue 5")


def embed_many(preps, **options):
    raise NotImplementedError("embed_many: issue 5")
