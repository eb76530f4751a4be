import numpy as np
import pytest

import balllink as bl


def test_scan_converts_to_float32_and_derives_mask():
    z = np.arange(12, dtype=np.float64).reshape(3, 4)
    z[1, 2] = np.nan
    scan = bl.Scan(z, spacing_um=(6.25, 3.0))
    assert scan.heights.dtype == np.float32
    assert scan.spacing_um == (6.25, 3.0)
    assert scan.n_valid == 11
    assert not scan.mask[1, 2]
    with pytest.raises(ValueError):
        scan.heights[0, 0] = 1.0  # frozen arrays


def test_mask_never_marks_nan_usable():
    z = np.full((2, 2), np.nan)
    z[0, 0] = 1.0
    scan = bl.Scan(z, spacing_um=1.0, mask=np.ones((2, 2), bool))
    assert scan.n_valid == 1


@pytest.mark.parametrize("spacing", [0, -1, (1, np.nan), "abc"])
def test_bad_spacing_is_refused(spacing):
    with pytest.raises(ValueError, match="spacing"):
        bl.Scan(np.zeros((2, 2)), spacing_um=spacing)


def test_replace_copies_meta_and_rederives_mask_on_new_shape():
    scan = bl.Scan(np.zeros((2, 2)), spacing_um=1.0, meta={"a": 1})
    other = scan.replace(heights=np.full((3, 3), np.nan))
    other.meta["a"] = 2
    assert scan.meta["a"] == 1
    assert other.n_valid == 0
    assert other.with_history("level", method="plane")["history"][-1]["step"] == "level"
