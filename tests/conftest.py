"""Shared fixtures: the real scans under ../shared/data (skipped with a reason when absent),
and the lead-database stand-ins (`stand_ins`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BALLLINK_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
FADUL = DATA / "fadul"
RAW_DFSC = DATA / "raw-dfsc"
REFERENCE = SHARED / "reference"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (CI has ../shared/data)")
    return path


@pytest.fixture(scope="session")
def fadul_dir() -> Path:
    return _need(FADUL)


@pytest.fixture(scope="session")
def fadul_truth(fadul_dir) -> dict[str, str]:
    """File name -> firearm id, from truth.csv."""
    with open(fadul_dir / "truth.csv", newline="") as fh:
        return {row["file"]: row["firearm"] for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def raw_dfsc_dir() -> Path:
    return _need(RAW_DFSC)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _need(REFERENCE)


# --------------------------------------------------------------------------- lead database
# Stand-ins injected through the documented `LeadDatabase` parameters (``comparer``,
# ``index_class``, ``preparer``) so that database, report and leads tests exercise their own
# logic on tiny synthetic scans whose truth is known: same-gun scans share a random
# signature, so the stand-in comparer (Pearson correlation x 10) scores them high and others
# near 0. The stand-in comparer returns real `Comparison` objects (`make_comparison`).

RING = {"code": "ring_irregular", "message": "ring fit quality 0.21: a hole touching the edge"}
AGENCIES = ("CITY", "COUNTY", "STATE")


def make_comparison(
    score=8.0,
    cmc_count=3,
    *,
    rotation_deg=0.0,
    translation_um=(0.0, 0.0),
    mirrored=False,
    cells=None,
    grid=(8, 8),
    reason="",
    threshold=5.0,
):
    """A real `balllink.compare.Comparison` with the given figures (cells: none by default)."""
    from balllink.comparison import CELL_DTYPE, CMCConfig, Comparison

    cells = np.zeros(0, CELL_DTYPE) if cells is None else cells
    return Comparison(
        cmc_count=int(cmc_count),
        score=float(score),
        rotation_deg=float(rotation_deg),
        translation_um=tuple(float(v) for v in translation_um),
        lead=score >= threshold,
        directions=(),
        cells=cells,
        reason=reason,
        config=CMCConfig(grid=grid, lead_threshold=threshold),
        mirrored=bool(mirrored),
    )


def fake_scans(n_guns, per_gun, *, seed=0, shape=(240, 240), noise=0.4):
    """Prepared-like scans: gun signature + fresh noise, a NaN corner; truth = gun id.

    2.2 mm² each (240 x 240 px at 6.25 µm): above the minimum area, so they carry only the
    flags a test gives them."""
    import balllink as bl

    rng = np.random.default_rng(seed)
    sigs = rng.normal(size=(n_guns, *shape))
    scans, guns = [], []
    for g in range(n_guns):
        for f in range(per_gun):
            z = sigs[g] + noise * rng.normal(size=shape)
            z[:3, :3] = np.nan
            scans.append(
                bl.Scan(
                    z,
                    spacing_um=6.25,
                    meta={"prepared": {"ok": True, "spacing_um": 6.25}},
                    source=f"gun{g}-fire{f}",
                )
            )
            guns.append(g)
    return scans, np.array(guns)


def _corr(a, b):
    x, y = a.masked_heights().ravel(), b.masked_heights().ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def fake_compare_many(query, candidates):
    """Correlation x 10; ``mirrored`` when either scan's source ends in ``-mirror``."""
    out = []
    for c in candidates:
        r = max(0.0, _corr(query, c))
        mirrored = any(str(s.source).endswith("-mirror") for s in (query, c))
        out.append(make_comparison(10 * r, round(10 * r), mirrored=mirrored))
    return out


def passthrough(scan):
    """Stand-in preparer: the fake scans are prepared already."""
    return scan


def flagged(scan, *flags):
    """The scan as a preparer that noted problems returns it (``flags``: dicts)."""
    meta = {**scan.meta, "prepared": {**scan.meta["prepared"], "flags": list(flags or [RING])}}
    return scan.replace(meta=meta)


class FakeIndex:
    """Exact inner-product search on normalised flattened scans; saved as .npz."""

    def __init__(self):
        self.ids = np.zeros(0, np.int64)
        self.vecs = None

    @staticmethod
    def _vec(scan):
        v = np.nan_to_num(scan.masked_heights().ravel())
        return v / (np.linalg.norm(v) + 1e-9)

    def add(self, ids, scans):
        v = np.stack([self._vec(s) for s in scans])
        self.vecs = v if self.vecs is None else np.vstack([self.vecs, v])
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])

    def search(self, scans, k):
        q = np.stack([self._vec(s) for s in scans])
        sim = q @ self.vecs.T if self.vecs is not None else np.zeros((len(q), 0))
        order = np.argsort(-sim, axis=1)[:, :k]
        ids = np.full((len(q), k), -1, np.int64)
        sc = np.zeros((len(q), k), np.float32)
        ids[:, : order.shape[1]] = self.ids[order]
        sc[:, : order.shape[1]] = np.take_along_axis(sim, order, 1)
        return ids, sc

    def remove(self, ids):
        keep = ~np.isin(self.ids, ids)
        self.ids, self.vecs = self.ids[keep], self.vecs[keep]

    def save(self, path):
        with open(path, "wb") as fh:
            np.savez(fh, ids=self.ids, vecs=self.vecs if self.vecs is not None else np.zeros(0))

    @classmethod
    def load(cls, path):
        import balllink as bl

        try:
            z = np.load(path)
            out = cls()
            out.ids = z["ids"]
            out.vecs = z["vecs"] if z["vecs"].size else None
            return out
        except Exception as exc:
            raise bl.IndexFormatError(f"{path}: {exc}") from None

    def __len__(self):
        return int(self.ids.size)


def open_stand_in_db(path, **kw):
    """A `LeadDatabase` with the stand-in comparer, index and preparer (threshold 5)."""
    from balllink.database import LeadDatabase

    kw.setdefault("threshold", 5.0)
    kw.setdefault("preparer", passthrough)
    kw.setdefault("comparer", fake_compare_many)
    return LeadDatabase(path, index_class=FakeIndex, **kw)


def items_for(scans):
    """``(scan, fields)`` ingest items: agencies in turn, case C<i>, a date per month."""
    return [
        (s, {"agency": AGENCIES[i % 3], "case_id": f"C{i}", "occurred": f"2025-0{1 + i % 9}-15"})
        for i, s in enumerate(scans)
    ]


@pytest.fixture
def open_db():
    """``open_db(path, **kw)``: a `LeadDatabase` with the stand-ins (`open_stand_in_db`)."""
    return open_stand_in_db


@pytest.fixture(name="fake_scans")
def _fake_scans():
    return fake_scans


@pytest.fixture(name="flagged")
def _flagged():
    return flagged


@pytest.fixture
def ring():
    """The preparation flag that `flagged` gives by default, as a dict."""
    return dict(RING)


@pytest.fixture(name="items_for")
def _items_for():
    return items_for


@pytest.fixture(name="make_comparison")
def _make_comparison():
    return make_comparison


@pytest.fixture(name="fake_compare_many")
def _fake_compare_many():
    return fake_compare_many


@pytest.fixture
def fake_index():
    """The stand-in index class."""
    return FakeIndex
