"""Pinned output of the simulator, recorded with the single-module simulator (commit b015d1d)
before it became the `balllink.simulate` package: the same seeds must keep giving the same
bits. A change here changes every figure measured on simulated sets; do it on purpose.

The hashes cover heights, masks and both truth arrays of every scan plus the truth table
(exact bits, numpy 2.4 on x86-64); the values beside them say what changed if a hash does.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from balllink import simulate as sim

SMALL = {"shape": (96, 96), "spacing_um": 25.0}


def _fingerprint(scans, truth=None) -> str:
    h = hashlib.sha256()
    for scan in scans:
        h.update(scan.heights.tobytes())
        h.update(scan.mask.tobytes())
        info = scan.meta["simulation"]
        for key in ("clean_surface", "breech_face_mask"):
            h.update(np.asarray(info[key]).tobytes())
    if truth is not None:
        h.update(truth.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def medium():
    return sim.casings(3, 2, seed=7, difficulty="medium", **SMALL)


def test_medium_set_values_are_pinned(medium):
    z0 = medium.scans[0].heights
    assert z0[np.isfinite(z0)][:3].tolist() == pytest.approx(
        [1.6920902729034424, 1.0945231914520264, 0.08432254195213318], rel=1e-6
    )
    assert float(medium.truth["rotation_deg"][3]) == 268.12741661965526
    assert hashlib.sha256(medium.truth.tobytes()).hexdigest() == (
        "67fd456015fba48e88718963b058fbd81b95f2f5812a6545e385430744bd065f"
    )
    assert [s.n_valid for s in medium.scans] == [2562, 2744, 2568, 2737, 3007, 3107]
    sums = [float(np.nansum(s.heights, dtype=np.float64)) for s in medium.scans]
    expected = [
        50.12974053900689,
        96.64305220916867,
        48.009391034021974,
        176.0326281534508,
        366.39446647884324,
        -94.92275911942124,
    ]
    assert sums == pytest.approx(expected, rel=1e-6)


def test_medium_set_bits_are_pinned(medium):
    assert _fingerprint(medium.scans, medium.truth) == (
        "f1ba64f91b195628d2be563f4d9bd1598f04402030346e0aee87300324a54571"
    )


def test_varied_mirrored_raw_and_cut_bits_are_pinned():
    varied = sim.casings(2, 2, seed=3, geometry="varied", mirrored=0.5, difficulty="hard", **SMALL)
    assert _fingerprint(varied.scans, varied.truth) == (
        "243c57c6389d5767779104d8fddbb30f5eb8819a0735a8b577c6dfb1302891af"
    )
    raw = sim.casings(1, 2, seed=5, raw=True, shape=(160, 160), spacing_um=12.5)
    assert _fingerprint(raw.scans, raw.truth) == (
        "e1f353655cc8888944ecb38db5e680890a85b6b0534d2d39f75bd8de8c372fc4"
    )
    cuts = list(sim.cut_geometries(4, seed=2, shape=(80, 80), spacing_um=25.0))
    # not bits: a cut's edge goes through sin, cos and arctan2, whose last bit differs
    # between numpy's SIMD paths (AVX-512 or not), so a pixel on the edge may fall either
    # side on another CPU. Kinds exact; valid points to a few edge pixels; the heights.
    assert [c.meta["simulation"]["cut"] for c in cuts] == [
        "clipped",
        "sector",
        "sector",
        "touching",
    ]
    assert [c.n_valid for c in cuts] == pytest.approx([2267, 1759, 3229, 2442], abs=25)
    stats = [(float(np.nanmean(c.heights)), float(np.nanstd(c.heights))) for c in cuts]
    expected = [(-0.0589, 1.5154), (-0.0117, 1.5999), (0.0279, 1.5702), (0.0590, 1.5190)]
    assert np.asarray(stats) == pytest.approx(np.asarray(expected), abs=0.02)


def test_mirror_crop_annotations_bits_are_pinned(medium):
    flipped = sim.mirror(medium.scans[1])
    assert hashlib.sha256(flipped.heights.tobytes()).hexdigest() == (
        "343aa0f198f44165c9fe70b3ac1e4dc95692ba70bbbbbaf852eea3a966679652"
    )
    small = sim.crop(medium.scans[2], 32, seed=4)
    scalars = sorted(
        (k, str(v)) for k, v in small.meta["simulation"].items() if not hasattr(v, "shape")
    )
    digest = hashlib.sha256(small.heights.tobytes() + repr(scalars).encode()).hexdigest()
    assert digest == "af85e4dabda9ae23a8b13d6fe36ba1f7b0b79f4c7003f934de87fa29009d470c"
    masks = sim.annotations(medium.scans[0], seed=9)
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].tobytes())
    assert h.hexdigest() == "020bd55ce7adf91afe685161c0b730b42d7f0eaa8efa4ffbc78600720be44c31"
