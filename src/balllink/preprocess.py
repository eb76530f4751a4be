"""Preprocessing: raw scan to comparable breech-face surface (issue 3).

Placeholder: being built (see the issue named below). Replaced, not extended.
"""

from __future__ import annotations

__all__ = [
    "BreechFace",
    "bandpass",
    "find_breech_face",
    "level",
    "preprocess",
    "remove_spikes",
    "resample",
    "trim_edges",
]


class BreechFace:
    pass


def preprocess(scan, **options):
    raise NotImplementedError("preprocess: issue 3")


def find_breech_face(scan, **options):
    raise NotImplementedError("issue 3")


def level(scan, **options):
    raise NotImplementedError("issue 3")


def bandpass(scan, **options):
    raise NotImplementedError("issue 3")


def resample(scan, **options):
    raise NotImplementedError("issue 3")


def remove_spikes(scan, **options):
    raise NotImplementedError("issue 3")


def trim_edges(scan, **options):
    raise NotImplementedError("issue 3")
