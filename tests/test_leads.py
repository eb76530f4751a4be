"""The decision layer: scope validation, flags, series, chance probability, threshold."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from balllink.comparison import CMCConfig
from balllink.leads import (
    Flag,
    Lead,
    Scope,
    as_flags,
    chance_probability,
    default_threshold,
    find_series,
    flags_json,
    flags_text,
    iso_date,
)

# --------------------------------------------------------------------------- scope


@pytest.mark.parametrize(
    ("fields", "field", "fix"),
    [
        ({"since": "2025-13-01"}, "since", "ISO date"),
        ({"until": "yesterday"}, "until", "ISO date"),
        ({"since": "2025-05-01", "until": "2025-04-01"}, "since", "since <= until"),
        ({"kind": "pistol"}, "kind", "crime_scene"),
        ({"bbox": (1, 2, 3)}, "bbox", "4 numbers"),
        ({"bbox": ("a", 2, 3, 4)}, "bbox", "4 numbers"),
        ({"bbox": (1, 2, np.nan, 4)}, "bbox", "4 numbers"),
        ({"bbox": (10, 0, 5, 1)}, "bbox", "min <= max"),
        ({"agencies": [1, 2]}, "agencies", "list of names"),
        ({"caliber": 9}, "caliber", "list of names"),
        ({"max_rescore": 0}, "max_rescore", ">= 1"),
        ({"max_rescore": "many"}, "max_rescore", ">= 1"),
        ({"max_rescore": True}, "max_rescore", ">= 1"),
    ],
)
def test_scope_refuses_bad_fields_on_construction(fields, field, fix):
    with pytest.raises(ValueError, match=f"Scope {field}") as exc:
        Scope(**fields)
    assert fix in str(exc.value)


def test_scope_accepts_what_callers_give():
    s = Scope(
        agencies="PD1",
        since=dt.date(2025, 1, 1),
        until="2025-06-30T12:00",
        caliber=["9mm", ".40"],
        kind="test_fire",
        bbox=[38.0, -95.0, 40.0, -94.0],
        max_rescore=5,
    )
    assert s.names("agencies") == ["PD1"] and s.names("caliber") == ["9mm", ".40"]
    assert Scope().names("agencies") == []
    assert Scope(since="2025-01-01", until="2025-01-01").since == "2025-01-01"  # one day


def test_scope_coerce():
    assert Scope.coerce(None) == Scope()
    s = Scope(kind="crime_scene")
    assert Scope.coerce(s) is s
    assert Scope.coerce({"agencies": ["A"], "max_rescore": 3}) == Scope(
        agencies=["A"], max_rescore=3
    )
    with pytest.raises(ValueError, match="unknown scope field"):
        Scope.coerce({"agency": "A"})
    with pytest.raises(ValueError, match="Scope kind"):
        Scope.coerce({"kind": "rifle"})  # validated like a Scope built directly
    with pytest.raises(TypeError, match="Scope or a dict"):
        Scope.coerce(["A"])


def test_scope_holds_no_sql():
    assert not hasattr(Scope, "where")


# --------------------------------------------------------------------------- series


def test_find_series_on_a_planted_graph():
    # three guns: a chain 1-5-9-12, a star around 3, a pair; 40 is alone (self loop only)
    edges = [(5, 1), (9, 5), (12, 9), (3, 20), (3, 21), (22, 3), (7, 8), (40, 40)]
    assert find_series(edges) == [[1, 5, 9, 12], [3, 20, 21, 22], [7, 8]]
    # order of edges and of their ends does not matter
    rng = np.random.default_rng(0)
    shuffled = [tuple(rng.permutation(e)) for e in rng.permutation(np.array(edges))]
    assert find_series(shuffled) == find_series(edges)
    assert find_series([]) == []
    assert find_series(iter([(2, 1)])) == [[1, 2]]


# --------------------------------------------------------------------------- chance


def test_chance_probability_on_a_planted_null():
    null = np.arange(10.0)  # non-match scores 0..9
    assert chance_probability(9.0, null) == pytest.approx(2 / 11)  # 9 itself counts
    assert chance_probability(8.5, null) == pytest.approx(2 / 11)
    assert chance_probability(100.0, null) == pytest.approx(1 / 11)  # never 0
    assert chance_probability(-1.0, null) == 1.0
    assert chance_probability(5.0, []) == 1.0  # no reference at all
    scores = np.linspace(-1, 11, 25)
    p = [chance_probability(s, null) for s in scores]
    assert p == sorted(p, reverse=True)  # higher score, smaller probability


# --------------------------------------------------------------------------- threshold


def test_default_threshold_is_the_shipped_config():
    assert default_threshold() == CMCConfig().lead_threshold
    assert isinstance(default_threshold(), float)


# --------------------------------------------------------------------------- flags


def test_flag_parsing():
    raw = [
        {"code": "ring_irregular", "message": "q=0.3"},
        "small_area",
        Flag("gross_outliers", "12 points"),
        {"message": "no code given"},
        {"code": "x", "message": None},
        "",
        None,
    ]
    assert as_flags(raw) == (
        Flag("ring_irregular", "q=0.3"),
        Flag("small_area"),
        Flag("gross_outliers", "12 points"),
        Flag("unspecified", "no code given"),
        Flag("x", ""),
    )
    assert as_flags(None) == () and as_flags("small_area") == () and as_flags({}) == ()
    assert as_flags(("small_area",)) == (Flag("small_area"),)


def test_flags_as_text_and_json():
    flags = (Flag("ring_irregular", "q=0.3"), Flag("small_area"))
    assert str(flags[0]) == "ring_irregular: q=0.3" and str(flags[1]) == "small_area"
    assert flags_text(flags) == "ring_irregular: q=0.3; small_area"
    assert flags_text(()) == ""
    assert as_flags(json.loads(flags_json(flags))) == flags
    assert json.loads(flags_json([Flag("a", "µm²")])) == [{"code": "a", "message": "µm²"}]


def test_lead_row_flattens_flags():
    lead = Lead(1, 2, 3, 0.9, 12, "A", "B", "c1", "c2", True, "new", None, None, "t",
                flags_b=(Flag("small_area", "1 mm²"),))  # fmt: skip
    row = lead.as_row()
    assert (row["flags_a"], row["flags_b"], row["flagged"]) == ("", "small_area: 1 mm²", True)


def test_iso_date():
    assert iso_date(dt.datetime(2025, 3, 4, 10, 0)) == "2025-03-04"
    assert iso_date(dt.date(2025, 3, 4)) == "2025-03-04"
    assert iso_date("") is None and iso_date(None) is None
    with pytest.raises(ValueError, match="ISO date"):
        iso_date("04/03/2025")
