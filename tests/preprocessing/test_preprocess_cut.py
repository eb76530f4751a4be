"""Already-cut scans of every geometry are kept; raw scans are flagged, not refused; a claim
to be prepared is checked against the data (issue: every lab's scans)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

import balllink as bl
from balllink.preprocessing import MIN_AREA_MM2, flags_of, prepare_if_needed, surface_state


def _texture(n, seed, spacing=6.25):
    """Band-limited texture like a prepared breech face (about 1.5 µm RMS, 20-400 µm)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, n))
    z = ndi.gaussian_filter(z, 20.0 / spacing / 2) - ndi.gaussian_filter(z, 400.0 / spacing / 4)
    return (1.5 * z / z.std()).astype(np.float32)


def _cut_ring(kind, n=560, spacing=6.25, seed=0):
    """An already cut breech face (NaN outside) whose firing-pin hole is ``kind``."""
    yy, xx = np.mgrid[:n, :n] * spacing
    c = (n - 1) * spacing / 2
    r_out = 0.45 * n * spacing
    hole = {
        "centred": (0.0, 0.0, 0.35),
        "offcentre": (0.3, 0.1, 0.3),
        "touching": (0.0, 0.55, 0.45),  # hole edge reaches the outer edge
        "open": (0.0, 0.7, 0.45),  # hole crosses the outer edge: a horseshoe
    }
    oy, ox, ratio = hole.get(kind, (0.0, 0.0, 0.35))
    r_o = np.hypot(yy - c, xx - c)
    r_h = np.hypot(yy - c - oy * r_out, xx - c - ox * r_out)
    valid = (r_o <= r_out) & (r_h >= ratio * r_out)
    if kind == "sector":
        angle = np.degrees(np.arctan2(yy - c, xx - c)) % 360
        valid &= ~((angle > 30) & (angle < 130))
    z = np.where(valid, _texture(n, seed, spacing), np.nan)
    return bl.Scan(z, spacing_um=spacing, source=f"cut-{kind}.x3p")


@pytest.mark.parametrize("kind", ["centred", "offcentre", "touching", "open", "sector"])
def test_already_cut_scans_are_kept_whatever_their_ring(kind):
    scan = _cut_ring(kind)
    state = surface_state(scan)
    assert state.cut and state.filtered
    prep = bl.preprocess(scan)  # never raises for a usable scan
    info = prep.meta["prepared"]
    assert info["ok"] and info["breech_face"]["method"] == "existing"
    assert info["filtered"] is False  # band-passed already: not filtered again
    assert prep.n_valid >= 0.97 * scan.n_valid
    bf = info["breech_face"]
    # the inner circle never collapses onto the outer one
    assert not bf["inner_radius_um"] >= 0.9 * bf["outer_radius_um"]
    assert bl.preprocess(scan, strict=True).n_valid == prep.n_valid  # strict too


def test_open_hole_is_reported_as_irregular_not_refused():
    prep = bl.preprocess(_cut_ring("open"))
    codes = [f["code"] for f in flags_of(prep)]
    assert codes == ["ring_irregular"]
    bf = prep.meta["prepared"]["breech_face"]
    assert "opens to the outer edge" in bf["note"]
    assert bf["inner_radius_um"] == pytest.approx(0.45 * 0.45 * 560 * 6.25, rel=0.05)


def test_cut_raw_export_with_form_is_filtered():
    """A raw export masked to its ROI is cut (no crater, no head) but keeps its form: it must
    be band-passed, or form and waviness correlate between casings."""
    base = _cut_ring("centred")
    n = base.shape[0]
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * 6.25
    bowl = 6.0 * (yy**2 + xx**2) / (0.45 * n * 6.25) ** 2 + 0.01 * xx  # 6 µm sag, tilt
    raw_cut = base.replace(heights=base.heights + bowl.astype(np.float32))
    state = surface_state(raw_cut)
    assert state.cut and not state.filtered and state.form_um > 1.0
    prep = bl.preprocess(raw_cut)
    assert prep.meta["prepared"]["filtered"] is True
    assert surface_state(prep).form_um < 0.3


def test_small_crop_is_flagged_small_area():
    scan = _cut_ring("centred")
    crop = scan.replace(heights=scan.heights[40:200, 200:360], mask=None)
    prep = bl.preprocess(crop)
    assert "small_area" in [f["code"] for f in flags_of(prep)]
    assert prep.meta["prepared"]["area_mm2"] < MIN_AREA_MM2


def test_claim_to_be_prepared_is_checked_not_trusted():
    base = _cut_ring("centred")
    n = base.shape[0]
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * 6.25
    forged = base.replace(
        heights=base.heights + (8e-6 * (yy**2 + xx**2)).astype(np.float32),
        meta={"prepared": {"ok": True, "spacing_um": (6.25, 6.25)}},
    )
    out = prepare_if_needed(forged)
    assert out is not forged and "auto_prepared" in [f["code"] for f in flags_of(out)]
    assert surface_state(out).filtered
    again = prepare_if_needed(out)
    assert again is out  # prepared now, and said so truthfully: kept as is
    assert prepare_if_needed(forged) is out  # the decision is cached per scan object


def test_a_checked_claim_is_recorded_so_copies_are_not_prepared_again(monkeypatch):
    """A simulated prepared scan claims so only through its truth (``meta["simulation"]``),
    which the database does not store: the check must leave a record that a copy keeps,
    or every stored scan read back would be band-passed a second time on every use."""
    scan, _ = next(bl.simulate.iter_casings(1, 1, seed=5, shape=(240, 240), spacing_um=6.25))
    assert "prepared" not in scan.meta and scan.meta["simulation"]["raw"] is False
    out = prepare_if_needed(scan)
    rec = out.meta["prepared"]
    assert out is not scan and np.array_equal(out.heights, scan.heights, equal_nan=True)
    assert rec["fingerprint"] and rec["claim_checked"] and rec["flags"] == []
    assert prepare_if_needed(out) is out
    # the copy a store keeps: the truth dropped, the data and the record kept
    meta = {k: v for k, v in out.meta.items() if k != "simulation"}
    copy = bl.Scan(out.heights.copy(), out.spacing_um, out.mask.copy(), meta, out.source)
    calls = []
    monkeypatch.setattr(
        "balllink.preprocessing._chain.preprocess", lambda *a, **k: calls.append(a) or a[0]
    )
    assert prepare_if_needed(copy) is copy and calls == []
    # data edited since (form added) no longer match the fingerprint: checked, prepared
    n = copy.shape[0]
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * 6.25
    bowl = (8e-5 * (yy**2 + xx**2)).astype(np.float32)
    prepare_if_needed(copy.replace(heights=copy.heights + bowl))
    assert len(calls) == 1


@pytest.mark.realdata
def test_every_fadul_scan_passes_with_defaults(fadul_dir):
    for path in sorted(fadul_dir.glob("*.x3p")):
        scan = bl.read_scan(path)
        prep = bl.preprocess(scan)  # 0 refusals
        info = prep.meta["prepared"]
        assert info["ok"] and info["breech_face"]["method"] == "existing", path.name
        assert info["filtered"] is False, path.name
        assert prep.n_valid >= 0.95 * scan.n_valid, path.name


@pytest.mark.realdata
def test_raw_dfsc_inside_its_roi_is_cut_but_not_filtered(raw_dfsc_dir):
    for path in sorted(raw_dfsc_dir.glob("*.x3p")):
        scan = bl.read_scan(path)
        state = surface_state(scan)
        assert not state.filtered, (path.name, state)
        prep = prepare_if_needed(scan)
        assert prep.meta["prepared"]["filtered"] is True
        assert surface_state(prep).filtered


@pytest.mark.slow
def test_two_hundred_simulated_cut_geometries_pass_with_defaults():
    """Off-centre, touching and open holes, missing sectors, clipped and elliptical
    outlines (the simulator's varied cuts): none refused, the region kept as cut."""
    kinds, refused = {}, []
    for scan in bl.simulate.cut_geometries(200, seed=3):
        truth = scan.meta["simulation"]
        try:
            prep = bl.preprocess(scan)
        except bl.PreprocessError as exc:
            refused.append((truth["cut"], str(exc)))
            continue
        info = prep.meta["prepared"]
        assert info["ok"] and info["breech_face"]["method"] == "existing", truth["cut"]
        assert prep.n_valid >= 0.9 * scan.n_valid, truth["cut"]
        kinds[truth["cut"]] = kinds.get(truth["cut"], 0) + 1
    assert refused == []
    assert len(kinds) >= 5 and sum(kinds.values()) == 200, kinds


def test_small_area_is_flagged_even_when_prepared_elsewhere():
    sim = bl.simulate.casings(1, 1, seed=2, difficulty="fadul-like").scans[0]
    assert flags_of(sim) == []  # a full simulated scan, prepared-like: nothing to say
    crop = bl.simulate.crop(sim, 150, seed=0)  # still claims to be prepared
    out = prepare_if_needed(crop)  # the claim checked and recorded, the data kept
    assert np.array_equal(out.heights, crop.heights, equal_nan=True)
    for scan in (crop, out):
        assert [f["code"] for f in flags_of(scan)] == ["small_area"]
