"""Stored scans: balllink .npz scan files (write_scan / read_scan), exact round trip, hash."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

import balllink as bl
from balllink.database import _store
from balllink.database._store import load_scan, save_scan, scan_sha256, stored_form
from helpers import legacy_store_file


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _odd_scan():
    """NaN holes, finite heights outside a stricter mask, non-square pixels, rich meta."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(37, 41)).astype(np.float32)
    z[:4, :5] = np.nan
    mask = np.isfinite(z)
    mask[10:14, 20:30] = False  # measured, but outside the usable region
    meta = {
        "prepared": {"ok": True, "flags": [{"code": "small_area", "message": "1 mm²"}]},
        "fit": {"rms": float("nan"), "range": (0.0, np.inf)},
        "history": [{"step": "level", "order": np.int64(1)}],
        "handedness": "viewed",
        "format": "x3p",
        "quirks": ["a repair the reader made"],
    }
    return bl.Scan(z, spacing_um=(6.25, 6.5), mask=mask, meta=meta, source="cases/c1.x3p")


def test_a_stored_scan_comes_back_bit_for_bit(tmp_path):
    scan = _odd_scan()
    digest = scan_sha256(scan)
    rel = save_scan(scan, tmp_path, digest)
    assert rel == f"{digest[:2]}/{digest}.npz"
    back = load_scan(tmp_path / rel)
    assert back.heights.dtype == np.float32 and _bits(back.heights) == _bits(scan.heights)
    assert np.array_equal(back.mask, scan.mask) and not back.mask[10:14, 20:30].any()
    assert np.isfinite(back.heights[10:14, 20:30]).all()  # kept under the mask
    assert back.spacing_um == (6.25, 6.5)
    assert back.source == "cases/c1.x3p"
    # the meta as JSON keeps it (tuples become lists, NaN stays NaN), reader keys included
    assert back.meta["prepared"] == scan.meta["prepared"]
    assert math.isnan(back.meta["fit"]["rms"]) and back.meta["fit"]["range"] == [0.0, math.inf]
    assert back.meta["history"] == [{"step": "level", "order": 1}]
    assert (back.meta["format"], back.meta["quirks"]) == ("x3p", ["a repair the reader made"])
    assert back.meta["handedness"] == "viewed"
    assert list(back.meta) == list(scan.meta)
    assert scan_sha256(back) == digest


def test_the_stored_file_is_a_plain_scan_file(tmp_path):
    scan = _odd_scan()
    rel = save_scan(scan, tmp_path, scan_sha256(scan))
    read = bl.read_scan(tmp_path / rel)  # any balllink reader opens it
    assert not read.meta.get("quirks")  # balllink's own npz is read back as written
    assert read.meta["handedness"] == "viewed"
    assert read.spacing_um == (6.25, 6.5) and read.n_valid == scan.n_valid
    assert read.meta[_store.STORED_KEY]["source"] == "cases/c1.x3p"
    mtime = (tmp_path / rel).stat().st_mtime_ns
    assert save_scan(scan, tmp_path, scan_sha256(scan)) == rel  # idempotent: not rewritten
    assert (tmp_path / rel).stat().st_mtime_ns == mtime


def test_missing_or_damaged_stored_scan_names_the_file(tmp_path):
    scan = _odd_scan()
    path = tmp_path / save_scan(scan, tmp_path, scan_sha256(scan))
    with pytest.raises(bl.DatabaseError, match=r"stored scan .*missing"):
        load_scan(tmp_path / "ab" / "nothing.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(bl.DatabaseError, match=rf"stored scan {path} is damaged"):
        load_scan(path)


def test_content_hash_recipe_is_unchanged():
    """Hashes name the files of existing databases: the recipe must never change."""
    z = np.arange(12, dtype=np.float32).reshape(3, 4)
    z[0, 0] = np.nan
    scan = bl.Scan(z, spacing_um=(2.0, 3.0))
    h = hashlib.sha256(b"balllink-prepared-scan-1")
    h.update(np.array([3, 4], np.int64).tobytes())
    h.update(np.array([2.0, 3.0], np.float64).tobytes())
    h.update(z.tobytes())
    h.update(np.packbits(np.isfinite(z)).tobytes())
    assert scan_sha256(scan) == h.hexdigest()


def test_stored_form_makes_every_gap_the_one_nan():
    z = np.ones((3, 3), np.float32)
    z[0, 0], z[1, 1], z[2, 2] = -np.nan, np.inf, np.nan
    scan = bl.Scan(z, spacing_um=1.0)
    kept = stored_form(scan)
    nan_bits = np.float32(np.nan).view(np.uint32)
    assert (kept.heights.view(np.uint32)[~np.isfinite(z)] == nan_bits).all()
    assert np.array_equal(kept.mask, scan.mask)
    assert scan_sha256(kept) != scan_sha256(scan)  # the sign of a NaN was in the bytes
    assert stored_form(kept) is kept  # already in stored form: the same scan


def test_a_database_reads_its_scans_back_exactly(tmp_path, open_db, fake_scans):
    scans, _ = fake_scans(1, 2, seed=4)
    with open_db(tmp_path / "l.db") as db:
        ids = db.ingest_many(scans, agency="A").ingested
    with open_db(tmp_path / "l.db") as db:  # a new process: nothing cached
        for eid, scan in zip(ids, scans):
            back = db.scan(eid)
            assert _bits(back.heights) == _bits(scan.heights)
            assert np.array_equal(back.mask, scan.mask) and back.source == scan.source
            assert back.meta == json.loads(json.dumps(scan.meta))
            assert scan_sha256(back) == db.exhibit(eid).scan_hash
        assert db.check(deep=True).ok


def test_scans_stored_by_the_first_layout_still_load(tmp_path):
    scan = _odd_scan()
    path = tmp_path / "ab" / "legacy.npz"
    legacy_store_file(path, scan, meta={"prepared": {"ok": True}})
    back = load_scan(path)
    assert _bits(back.heights) == _bits(scan.heights)
    assert np.array_equal(back.mask, scan.mask) and back.spacing_um == scan.spacing_um
    assert back.meta["prepared"] == {"ok": True}
