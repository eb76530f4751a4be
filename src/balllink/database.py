"""The embedded lead database (issue 6).

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = ["LeadDatabase"]


class LeadDatabase:
    pass
