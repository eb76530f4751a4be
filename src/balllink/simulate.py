"""Simulated casings with ground truth (issue 2).

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = ["SimulatedSet", "casings", "iter_casings"]


class SimulatedSet:
    pass


def casings(n_firearms, per_firearm, *, seed, raw=False, difficulty="medium", **kwargs):
    raise NotImplementedError("simulate.casings: issue 2")


def iter_casings(n_firearms, per_firearm, *, seed, raw=False, difficulty="medium", **kwargs):
    raise NotImplementedError("simulate.iter_casings: issue 2")
