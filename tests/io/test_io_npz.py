"""balllink's one .npz scan format: exact round trips, the two older layouts, damaged files.

The database's earlier layout ("balllink-prepared-scan-1") is built here exactly as
``_db_store.save_scan`` wrote it, so databases stored by earlier versions keep opening.
"""

from __future__ import annotations

import json
import math
import re
import zipfile

import numpy as np
import pytest

import balllink as bl
from balllink._files import jsonable
from balllink.errors import ScanFormatError
from balllink.io import NPZ_FORMAT, read_scan, write_scan
from helpers import legacy_store_file


def _scan() -> bl.Scan:
    """Heights with NaN, ±Inf, a zero patch and a float sentinel; a stricter mask; rich meta."""
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 2.0, (40, 50)).astype(np.float32)
    z[:, :10] = 0.0  # 400 touching zeros: a "fill value" in a foreign file
    z[5, 20] = np.nan
    z[6, 21] = np.inf
    z[7, 22] = -3.0e38  # a sentinel in a foreign file
    mask = np.isfinite(z)
    mask[30:, 30:] = False
    meta = {
        "format": "x3p",  # provenance of the original file: kept, not replaced by "npz"
        "quirks": ["revision 'ISO5436-2000' read as 'ISO5436 - 2000'"],
        "source_sha256": "ab" * 32,
        "handedness": "viewed",
        "prepared": {"rms": float("nan"), "range": (0.0, math.inf), "flags": []},
        "history": [{"step": "level", "residual": float("-inf")}],
        "file_mask": mask.copy(),
        "score": np.float32(0.25),
    }
    return bl.Scan(z, spacing_um=(3.125, 6.25), mask=mask, meta=meta, source="/cases/a.x3p")


def _json(meta) -> str:
    """Text form with NaN spelled out, so that NaN entries compare equal."""
    return json.dumps(jsonable(meta), sort_keys=True, allow_nan=True)


def _same_scan(back: bl.Scan, scan: bl.Scan) -> None:
    assert back.heights.dtype == np.float32
    assert back.heights.tobytes() == scan.heights.tobytes()
    assert back.mask.tobytes() == scan.mask.tobytes()
    assert back.spacing_um == scan.spacing_um
    assert back.source == scan.source


def test_own_npz_round_trip_is_bit_identical(tmp_path):
    scan = _scan()
    path = tmp_path / "s.npz"
    write_scan(scan, path)
    back = read_scan(path)
    _same_scan(back, scan)
    assert _json(back.meta) == _json(scan.meta)
    assert math.isnan(back.meta["prepared"]["rms"])
    assert back.meta["prepared"]["range"] == [0.0, math.inf]
    assert back.meta["history"][0]["residual"] == -math.inf
    assert back.meta["format"] == "x3p" and back.meta["source_sha256"] == "ab" * 32
    np.testing.assert_array_equal(back.meta["file_mask"], scan.meta["file_mask"])
    # nothing guessed: the zero patch, the sentinel and +Inf are the values written
    assert np.all(back.heights[:, :10] == 0) and back.heights[7, 22] == np.float32(-3.0e38)
    assert set(back.meta) == set(jsonable(scan.meta)) | {"file_mask"}
    # written again and read, the same scan again
    write_scan(back, tmp_path / "again.npz")
    again = read_scan(tmp_path / "again.npz")
    _same_scan(again, scan)
    assert _json(again.meta) == _json(scan.meta)


def test_own_npz_without_source_or_extras(tmp_path):
    scan = bl.Scan(np.arange(12.0).reshape(3, 4), spacing_um=6.25)
    write_scan(scan, tmp_path / "plain.npz")
    back = read_scan(tmp_path / "plain.npz")
    _same_scan(back, scan)
    assert back.source is None and back.meta == {}
    with zipfile.ZipFile(tmp_path / "plain.npz") as archive:
        assert sorted(archive.namelist()) == [
            "format.npy",
            "heights.npy",
            "mask.npy",
            "meta_json.npy",
            "spacing_um.npy",
        ]
    with np.load(tmp_path / "plain.npz") as stored:
        assert str(stored["format"]) == NPZ_FORMAT == "balllink-scan-2"


def test_caller_options_on_own_npz_are_applied_and_noted(tmp_path):
    scan = _scan()
    blob = np.zeros(scan.shape, bool)
    blob[10:20, 15:25] = True
    write_scan(scan, tmp_path / "s.npz", annotations={"break-off": blob})
    back = read_scan(tmp_path / "s.npz")
    assert list(back.meta["annotations"]) == ["break-off"]
    np.testing.assert_array_equal(back.meta["annotations"]["break-off"], blob)
    _same_scan(back, scan)

    told = read_scan(tmp_path / "s.npz", spacing_um=2.0, handedness="mirrored")
    assert told.spacing_um == (2.0, 2.0) and told.meta["handedness"] == "mirrored"
    assert told.meta["quirks"] == scan.meta["quirks"] + [
        "spacing_um (2.0, 2.0) given by the caller replaces the file's (3.125, 6.25)",
        "handedness 'mirrored' given by the caller replaces the file's 'viewed'",
    ]
    assert told.heights.tobytes() == scan.heights.tobytes()

    cut = read_scan(tmp_path / "s.npz", exclude="break-off")
    assert not cut.mask[blob].any()
    np.testing.assert_array_equal(cut.mask, scan.mask & ~blob)
    assert cut.meta["annotation_filter"] == {"keep": None, "exclude": ["break-off"]}
    with pytest.raises(ValueError, match=r"s\.npz: keep=\['smear'\].*'break-off'"):
        read_scan(tmp_path / "s.npz", keep=["smear"])


@pytest.mark.parametrize("source", ["/cases/a.x3p", None])
def test_legacy_database_layout_reads_back_identically(tmp_path, source):
    scan = _scan().replace(source=source)
    path = tmp_path / "ab" / f"{'ab' * 32}.npz"
    path.parent.mkdir()
    legacy_store_file(path, scan)
    back = read_scan(path)
    _same_scan(back, scan)
    assert _json(back.meta) == _json({k: v for k, v in scan.meta.items() if k != "file_mask"})
    assert "file_mask" not in back.meta and math.isnan(back.meta["prepared"]["rms"])
    # and the current format holds the same scan
    write_scan(back, tmp_path / "new.npz")
    _same_scan(read_scan(tmp_path / "new.npz"), scan)


def test_legacy_database_layout_with_a_wrong_mask_is_refused(tmp_path):
    scan = _scan()
    legacy_store_file(
        tmp_path / "bad.npz", scan.replace(mask=scan.mask[:, :8], heights=scan.heights[:, :8])
    )
    with np.load(tmp_path / "bad.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["shape"] = np.asarray(scan.shape, dtype=np.int64)
    arrays["heights"] = scan.heights  # the grid no longer matches the packed mask
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ScanFormatError, match=r"bad\.npz: 'mask' holds 40 packed bytes.*250"):
        read_scan(tmp_path / "bad.npz")


def test_old_io_layout_is_still_read_with_its_repairs(tmp_path):
    """The layout without a format tag is a foreign file: ROI applied, fill values found."""
    scan = _scan()
    roi = scan.mask
    np.savez(
        tmp_path / "old.npz",
        heights=scan.heights,
        spacing_um=np.asarray(scan.spacing_um),
        mask=roi,
        meta_json=np.asarray(json.dumps({"case": "7", "handedness": "viewed"})),
    )
    back = read_scan(tmp_path / "old.npz")
    assert back.meta["format"] == "npz" and back.meta["case"] == "7"
    assert back.source == str(tmp_path / "old.npz")
    np.testing.assert_array_equal(back.meta["file_mask"], roi)
    assert not np.isfinite(back.heights[:, :10]).any()  # the zero patch: a fill value
    assert np.isnan(back.heights[7, 22])  # the sentinel
    assert any("fill value" in q for q in back.meta["quirks"])


def test_truncated_npz_names_the_file(tmp_path):
    write_scan(_scan(), tmp_path / "whole.npz")
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanFormatError, match=r"cut\.npz: truncated or damaged zip archive"):
        read_scan(tmp_path / "cut.npz")


def test_damaged_own_npz_names_the_file_and_the_problem(tmp_path):
    scan = _scan()
    write_scan(scan, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        arrays = {k: z[k] for k in z.files}
    cases = {
        "nomask.npz": ({"mask": None}, r"lacks the array\(s\) \['mask'\]"),
        "json.npz": ({"meta_json": np.asarray("{not json")}, "'meta_json' is not JSON"),
        "list.npz": ({"meta_json": np.asarray("[1, 2]")}, "must be a JSON object"),
        "spacing.npz": ({"spacing_um": np.array([0.0, 1.0])}, "positive and finite"),
        "shape.npz": ({"mask": np.ones((3, 3), bool)}, r"'mask' has shape \(3, 3\)"),
        "newer.npz": ({"format": np.asarray("balllink-scan-9")}, "newer balllink"),
        "empty.npz": ({"heights": np.full((40, 50), np.nan, np.float32)}, "no finite height"),
    }
    for name, (change, message) in cases.items():
        changed = {**arrays, **change}
        np.savez_compressed(tmp_path / name, **{k: v for k, v in changed.items() if v is not None})
        with pytest.raises(ScanFormatError, match=re.escape(name) + ": .*" + message):
            read_scan(tmp_path / name)
