"""Leads, series and search scope: the decision layer between comparisons and the database.

A *lead* is a compared pair of exhibits from different cases whose likelihood ratio (LR)
reaches the lead threshold of the model in force (`balllink.evidence`), or, for pairs
stored without what an LR is computed from, whose score passes the legacy score
threshold; it is *cross-jurisdiction* when the two agencies differ. Leads (and pairs an
examiner confirmed) join exhibits into *series*: the connected components of that graph,
one gun used in several shootings.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ._lr_text import lr_text
from .comparison import CMCConfig

__all__ = [
    "KINDS",
    "STATUSES",
    "Candidate",
    "Flag",
    "Lead",
    "Scope",
    "SearchResult",
    "Series",
    "as_flags",
    "chance_probability",
    "default_threshold",
    "find_series",
    "flags_json",
    "flags_text",
    "iso_date",
    "lr_text",
]

KINDS = ("crime_scene", "test_fire")
STATUSES = ("new", "confirmed", "rejected")


def default_threshold() -> float:
    """The shipped lead threshold on `Comparison.score`: the default `CMCConfig`'s
    ``lead_threshold``, so that the database and ``Comparison.lead`` always agree.

    Examples
    --------
    >>> default_threshold()
    0.5
    """
    return float(CMCConfig().lead_threshold)


@dataclass(frozen=True)
class Flag:
    """A problem noted while preparing a scan that was kept anyway: a code and why.

    Codes are open-ended strings set by the preparation stage (``"ring_irregular"``,
    ``"breech_face_not_found"``, ``"small_area"``, ...); the message says what was seen and
    what was done instead. A flagged exhibit is stored and compared like any other; its
    flags travel with its search results, leads and reports so that an examiner sees them.

    Examples
    --------
    >>> str(Flag("small_area", "1.2 mm² measured"))
    'small_area: 1.2 mm² measured'
    """

    code: str
    message: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def as_dict(self) -> dict:
        return asdict(self)


def as_flags(raw) -> tuple[Flag, ...]:
    """Flags from a list of ``{"code", "message"}`` dicts (``meta["prepared"]["flags"]``,
    or the stored JSON); plain strings count as codes; anything else gives ``()``.

    Examples
    --------
    >>> as_flags([{"code": "ring_irregular", "message": "q=0.3"}, "small_area"])
    (Flag(code='ring_irregular', message='q=0.3'), Flag(code='small_area', message=''))
    """
    if not isinstance(raw, list | tuple):
        return ()
    out = []
    for f in raw:
        if isinstance(f, Flag):
            out.append(f)
        elif isinstance(f, Mapping):
            message = f.get("message")
            out.append(Flag(str(f.get("code") or "unspecified"), str(message or "")))
        elif f:
            out.append(Flag(str(f)))
    return tuple(out)


def flags_json(flags: Sequence[Flag]) -> str:
    """Flags as the JSON text stored in the ``exhibits.flags`` column.

    Examples
    --------
    >>> flags_json([Flag("small_area", "1.2 mm²")])
    '[{"code": "small_area", "message": "1.2 mm²"}]'
    """
    return json.dumps([f.as_dict() for f in flags], ensure_ascii=False)


def flags_text(flags: Sequence[Flag]) -> str:
    """One line for tables and CSV cells: ``code: message; code: message``.

    Examples
    --------
    >>> flags_text([Flag("small_area", "1.2 mm²"), Flag("ring_irregular")])
    'small_area: 1.2 mm²; ring_irregular'
    """
    return "; ".join(str(f) for f in flags)


def iso_date(value) -> str | None:
    """An ISO ``YYYY-MM-DD`` date from a date, a datetime or ISO text (None for none).

    Examples
    --------
    >>> iso_date("2025-03-04T10:00"), iso_date(None)
    ('2025-03-04', None)
    """
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    try:
        return _dt.date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {value!r}") from None


@dataclass(frozen=True)
class Scope:
    """Which exhibits a search (or an ingest's automatic correlation) looks at.

    Validated on construction: a bad value raises `ValueError` naming the field and the
    form it takes. The database turns a scope into its query
    (`balllink.database`); the scope itself knows nothing of SQL.

    Parameters
    ----------
    agencies : str or sequence of str, optional
        Only exhibits of these agencies (jurisdiction codes).
    since, until : str or date, optional
        Occurrence date range, inclusive (ISO ``YYYY-MM-DD``).
    caliber : str or sequence of str, optional
    kind : {"crime_scene", "test_fire"}, optional
    bbox : (min_lat, min_lon, max_lat, max_lon), optional
        Only exhibits whose incident location lies inside.
    max_rescore : int
        At most this many candidates get the full cell comparison (default 50).

    Examples
    --------
    >>> Scope(agencies=["A"], since="2025-01-01", max_rescore=10).max_rescore
    10
    >>> Scope(bbox=(39.0, -95.0, 38.0, -94.0))
    Traceback (most recent call last):
    ...
    ValueError: Scope bbox must be (min_lat, min_lon, max_lat, max_lon) with min <= max, got (39.0, -95.0, 38.0, -94.0)
    """

    agencies: Sequence[str] | None = None
    since: Any = None
    until: Any = None
    caliber: Any = None
    kind: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    max_rescore: int = 50

    def __post_init__(self) -> None:
        for name in ("agencies", "caliber"):
            _check_names(name, getattr(self, name))
        since = _scope_date("since", self.since)
        until = _scope_date("until", self.until)
        if since is not None and until is not None and since > until:
            raise ValueError(f"Scope since ({since}) is after until ({until}); give since <= until")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"Scope kind must be one of {KINDS} or None, got {self.kind!r}")
        if self.bbox is not None:
            _check_bbox(self.bbox)
        try:
            rescore = int(self.max_rescore)
        except (TypeError, ValueError):
            rescore = 0
        if isinstance(self.max_rescore, bool) or rescore < 1:
            raise ValueError(
                f"Scope max_rescore must be an int >= 1 (candidates compared in full), "
                f"got {self.max_rescore!r}"
            )

    @classmethod
    def coerce(cls, scope) -> Scope:
        """A `Scope` from None, a `Scope` or a mapping of its fields."""
        if scope is None:
            return cls()
        if isinstance(scope, Scope):
            return scope
        if isinstance(scope, Mapping):
            unknown = set(scope) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValueError(
                    f"unknown scope field(s) {sorted(unknown)}; "
                    f"use {sorted(cls.__dataclass_fields__)}"
                )
            return cls(**scope)
        raise TypeError(f"scope must be a Scope or a dict, got {type(scope).__name__}")

    def names(self, field_name: str) -> list[str]:
        """``agencies`` or ``caliber`` as a list (one name given as text is one item).

        Examples
        --------
        >>> Scope(agencies="PD1").names("agencies"), Scope().names("caliber")
        (['PD1'], [])
        """
        value = getattr(self, field_name)
        if not value:
            return []
        return [value] if isinstance(value, str) else list(value)


def _check_names(name: str, value) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return
    raise ValueError(
        f"Scope {name} must be a name or a list of names (text), got {value!r}; "
        f"e.g. Scope({name}=['PD1', 'PD2'])"
    )


def _scope_date(name: str, value) -> str | None:
    try:
        return iso_date(value)
    except ValueError:
        raise ValueError(
            f"Scope {name} must be an ISO date YYYY-MM-DD (or a date), got {value!r}"
        ) from None


def _check_bbox(bbox) -> None:
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(
            f"Scope bbox must be 4 numbers (min_lat, min_lon, max_lat, max_lon), got {bbox!r}"
        )
    lat0, lon0, lat1, lon1 = values
    if lat0 > lat1 or lon0 > lon1:
        raise ValueError(
            "Scope bbox must be (min_lat, min_lon, max_lat, max_lon) with min <= max, "
            f"got {tuple(bbox)}"
        )


@dataclass(frozen=True)
class Candidate:
    """One rescored candidate of a search, best first.

    ``flags`` are the candidate exhibit's preparation flags (see `Flag`); ``mirrored`` is
    True when the two scans were compared with opposite handedness (one as the mirror
    image of the other: a file stored with the other row order).
    """

    rank: int
    exhibit_id: int
    score: float
    cmc_count: int
    rotation_deg: float
    translation_um: tuple[float, float]
    p_chance: float
    case_id: str
    agency: str
    retrieval_score: float | None = None
    mirrored: bool = False
    flags: tuple[Flag, ...] = ()
    log10_lr: float = math.nan
    lr_interval: tuple[float, float] = (math.nan, math.nan)
    lr_in_range: bool | None = None
    lr_reason: str | None = None
    lr_at_bound: bool | None = None
    lead: bool = False

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def lr(self) -> float:
        """The likelihood ratio (NaN when none applies: the legacy score rule decides)."""
        return 10.0**self.log10_lr

    def as_dict(self) -> dict:
        """Fields for JSON (an absent LR is None, never NaN)."""
        return _no_nan({**asdict(self), "flagged": self.flagged})


@dataclass
class SearchResult:
    """The ranked candidate list of one search, with the size of the search set.

    ``n_in_scope`` exhibits matched the scope (the query itself excluded);
    ``n_rescored`` of them got the full comparison. ``query_flags`` are the preparation
    flags of the query (see `Flag`). ``threshold`` is the legacy score threshold,
    ``lr_threshold`` the log10 LR a lead needs under the model ``lr_model`` (NaN and None
    without one). Iterates over `Candidate` rows.
    """

    candidates: list[Candidate]
    n_in_scope: int
    n_rescored: int
    query: int | None = None
    threshold: float = 0.0
    scope: Scope = field(default_factory=Scope)
    query_flags: tuple[Flag, ...] = ()
    lr_threshold: float = math.nan
    lr_model: str | None = None

    def __iter__(self):
        return iter(self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, i):
        return self.candidates[i]

    def as_dict(self) -> dict:
        return {
            "query": self.query,
            "n_in_scope": self.n_in_scope,
            "n_rescored": self.n_rescored,
            "threshold": self.threshold,
            "lr_threshold": self.lr_threshold,
            "lr_model": self.lr_model,
            "scope": {k: v for k, v in asdict(self.scope).items() if v is not None},
            "query_flags": [f.as_dict() for f in self.query_flags],
            "candidates": [c.as_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class Lead:
    """A pair of exhibits from different cases whose LR reaches the lead threshold (the
    score, for pairs stored without LR features), or that an examiner confirmed.

    ``log10_lr`` is the bounded log10 likelihood ratio under the model ``lr_model``,
    ``lr_interval`` its 90 % interval (LR units), ``lr_in_range`` False (with
    ``lr_reason``) when the comparison is unlike the model's training data, and
    ``lr_at_bound`` True when the LR is held at a bound the data support (see
    `balllink.evidence.Evidence`); NaN / None for pairs without an LR. ``score`` is the
    legacy comparison score.

    ``flags_a`` / ``flags_b`` are the preparation flags of either exhibit (see `Flag`):
    a lead on a flagged exhibit rests on a scan whose preparation was doubtful, and says
    so. ``mirrored`` is True when the two scans were compared with opposite handedness
    (one as the mirror image of the other), None for pairs compared before balllink
    recorded it.
    """

    id: int
    a: int
    b: int
    score: float
    cmc_count: int
    agency_a: str
    agency_b: str
    case_a: str
    case_b: str
    cross_jurisdiction: bool
    status: str
    examiner: str | None
    status_time: str | None
    created: str
    mirrored: bool | None = None
    flags_a: tuple[Flag, ...] = ()
    flags_b: tuple[Flag, ...] = ()
    log10_lr: float = math.nan
    lr_interval: tuple[float, float] = (math.nan, math.nan)
    lr_in_range: bool | None = None
    lr_reason: str | None = None
    lr_at_bound: bool | None = None
    lr_model: str | None = None

    @property
    def flagged(self) -> bool:
        """True when either exhibit carries a preparation flag."""
        return bool(self.flags_a or self.flags_b)

    @property
    def lr(self) -> float:
        """The likelihood ratio (NaN for a pair without one)."""
        return 10.0**self.log10_lr

    def as_dict(self) -> dict:
        """Fields for JSON (an absent LR is None, never NaN)."""
        return _no_nan({**asdict(self), "flagged": self.flagged})

    def as_row(self) -> dict:
        """Flat fields for CSV and tables: flags as ``code: message; ...`` text, the LR
        interval as ``lr_lo`` / ``lr_hi`` (LR units)."""
        row = self.as_dict()
        row["flags_a"], row["flags_b"] = flags_text(self.flags_a), flags_text(self.flags_b)
        row["lr_lo"], row["lr_hi"] = row.pop("lr_interval") or (None, None)
        return row


def _no_nan(d: dict) -> dict:
    """The LR fields of a row with NaN replaced by None (JSON has no NaN)."""
    for k in ("log10_lr", "lr_interval"):
        v = d.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            d[k] = None
        elif isinstance(v, tuple | list) and not all(math.isfinite(x) for x in v):
            d[k] = None
    return d


@dataclass(frozen=True)
class Series:
    """Exhibits joined by leads or confirmations: one gun, several shootings."""

    exhibits: tuple[int, ...]
    cases: tuple[str, ...]
    agencies: tuple[str, ...]
    first: str | None
    last: str | None
    places: tuple[tuple[float, float], ...]
    leads: tuple[int, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def find_series(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected groups (size >= 2) of the graph whose edges are exhibit-id pairs.

    Groups come sorted by size (largest first), then by smallest id; ids inside a group
    are sorted.

    Examples
    --------
    >>> find_series([(1, 2), (2, 3), (7, 9)])
    [[1, 2, 3], [7, 9]]
    """
    edges = np.asarray(list(edges), dtype=np.int64).reshape(-1, 2)
    if edges.size == 0:
        return []
    nodes, inverse = np.unique(edges, return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    n = nodes.size
    graph = coo_matrix(
        (np.ones(len(inverse), dtype=np.int8), (inverse[:, 0], inverse[:, 1])), shape=(n, n)
    )
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for node, label in zip(nodes.tolist(), labels.tolist()):
        groups.setdefault(label, []).append(node)
    out = [sorted(g) for g in groups.values() if len(g) >= 2]
    return sorted(out, key=lambda g: (-len(g), g[0]))


def chance_probability(score: float, null_scores: np.ndarray) -> float:
    """Empirical probability that a non-matching pair scores at least ``score``.

    ``(1 + #{null >= score}) / (1 + n)``: the add-one estimate, never 0, and 1.0 when
    there is no reference at all.

    Examples
    --------
    >>> chance_probability(5.0, np.array([0.0, 1.0, 2.0, 6.0]))
    0.4
    """
    null = np.asarray(null_scores, dtype=np.float64)
    return float((1 + np.count_nonzero(null >= score)) / (1 + null.size))
