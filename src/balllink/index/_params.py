"""The parameters of `balllink.CasingIndex`: validation, saved form, compressed configuration.

The parameters are the keyword arguments of ``CasingIndex(factory, **params)``; they are
saved with the index (`params_json`) and checked before every add, search and load
(`check_params`, whose messages name the parameter, the bad value and the allowed range).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["PARAM_NAMES", "CompressedConfig", "check_params", "compressed_config", "params_json"]

#: Keyword parameters of `CasingIndex` besides ``factory``, in the order they are saved.
PARAM_NAMES = (
    "neighbors",
    "angle_bin_deg",
    "shift_bin_um",
    "nprobe",
    "ef_search",
    "max_stored",
    "query_keypoints",
    "handedness",
)


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def params_json(factory: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``factory`` and ``params`` as plain JSON types, as saved with the index.

    Examples
    --------
    >>> import numpy as np
    >>> p = dict(neighbors=np.int64(8), angle_bin_deg=12, shift_bin_um=150, nprobe=32,
    ...          ef_search=64, max_stored=None, query_keypoints=128, handedness="both")
    >>> params_json("Flat", p)["angle_bin_deg"], params_json("Flat", p)["neighbors"]
    (12.0, 8)
    """
    return {
        "factory": factory,
        "neighbors": int(params["neighbors"]),
        "angle_bin_deg": float(params["angle_bin_deg"]),
        "shift_bin_um": float(params["shift_bin_um"]),
        "nprobe": int(params["nprobe"]),
        "ef_search": int(params["ef_search"]),
        "max_stored": _int_or_none(params["max_stored"]),
        "query_keypoints": _int_or_none(params["query_keypoints"]),
        "handedness": str(params["handedness"]),
    }


def check_params(params: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first parameter out of its range.

    Examples
    --------
    >>> check_params(dict(neighbors=0, angle_bin_deg=12, shift_bin_um=150, max_stored=None,
    ...                   query_keypoints=None, handedness="both"))
    Traceback (most recent call last):
    ...
    ValueError: neighbors must be >= 1, got 0
    """
    p = params
    if int(p["neighbors"]) < 1:
        raise ValueError(f"neighbors must be >= 1, got {p['neighbors']}")
    if not (0 < p["angle_bin_deg"] <= 90):
        raise ValueError(f"angle_bin_deg must be in (0, 90], got {p['angle_bin_deg']}")
    if p["max_stored"] is not None and int(p["max_stored"]) < 1:
        raise ValueError(f"max_stored must be >= 1 or None, got {p['max_stored']}")
    if p["query_keypoints"] is not None and int(p["query_keypoints"]) < 1:
        raise ValueError(f"query_keypoints must be >= 1 or None, got {p['query_keypoints']}")
    if p["handedness"] not in ("both", "same"):
        raise ValueError(f"handedness must be 'both' or 'same', got {p['handedness']!r}")
    if not p["shift_bin_um"] > 0:
        raise ValueError(f"shift_bin_um must be > 0, got {p['shift_bin_um']}")


class CompressedConfig(NamedTuple):
    """What `CasingIndex.compressed` builds: a factory string and keyword parameters."""

    factory: str
    params: dict[str, Any]


def compressed_config(n_casings: int, overrides: Mapping[str, Any]) -> CompressedConfig:
    """The memory-bounded configuration for about ``n_casings`` casings.

    ``IVF{nlist}_HNSW32,PQ52x4fs`` with inverted lists of ~1 500 stored keypoints (``nlist``
    the nearest power of two, 64 to 65 536), 80 keypoints stored per casing, 128 per query,
    32 lists visited; ``overrides`` replace any of these parameters.

    Examples
    --------
    >>> compressed_config(10_000, {"nprobe": 8})
    CompressedConfig(factory='IVF512_HNSW32,PQ52x4fs', params={'nprobe': 8, 'query_keypoints': 128, 'max_stored': 80})
    """
    n_casings = int(n_casings)
    if n_casings < 1:
        raise ValueError(f"n_casings must be >= 1, got {n_casings}")
    overrides = dict(overrides)
    stored = overrides.pop("max_stored", 80)
    stored = 80 if stored is None else int(stored)
    nlist = 2 ** round(np.log2(max(1.0, n_casings * stored / 1500)))
    nlist = int(np.clip(nlist, 64, 65536))
    params = {"nprobe": 32, "query_keypoints": 128} | overrides | {"max_stored": stored}
    return CompressedConfig(f"IVF{nlist}_HNSW32,PQ52x4fs", params)
