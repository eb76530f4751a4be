"""Scan I/O: X3P quirks of real exports, hostile and damaged files, round trips, other formats.

Every X3P here is built by hand with zipfile from main.xml text written in the test, so each
quirk and each kind of damage is planted exactly.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import x3pio
from PIL import Image
from x3p_files import build_x3p, grid_x3p, main_xml, planted, png_bytes, ring_mask

import balllink as bl
from balllink._files import jsonable
from balllink.errors import ScanFormatError
from balllink.io import ChecksumWarning, read_scan, write_scan

# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_all_fadul_scans_read_with_their_spacing(fadul_dir, fadul_truth):
    files = sorted(fadul_dir.glob("*.x3p"))
    assert len(files) == 40 and {f.name for f in files} <= set(fadul_truth)
    hashes = set()
    for file in files:
        scan = read_scan(file)
        assert scan.spacing_um == (6.25, 6.25), file.name
        assert scan.heights.dtype == np.float32
        finite = scan.heights[np.isfinite(scan.heights)]
        assert 0.1 < finite.size / scan.heights.size < 0.9, file.name
        assert np.abs(finite).max() < 100, file.name  # µm, not metres
        assert finite.std() > 0.1, file.name  # and not metres either
        assert scan.meta["checksum"] == "ok"
        assert scan.meta["instrument"] == "NanoFocus usurf"
        # x3ptools put <Origin>NW</Origin> in <Axes>, out of the schema: noted, not trusted.
        assert scan.meta["quirks"] == [
            "non-standard element <Origin>NW</Origin> in Record1/Axes ignored"
        ]
        assert scan.meta["x3p"]["origin"] == "NW" and scan.meta["handedness"] is None
        # Record3/Mask has a Background and no annotations, and there is no mask.png.
        assert scan.meta["file_mask"] is None and scan.meta["mask_applied"] is False
        assert scan.meta["annotations"] == {}
        assert scan.source == str(file)
        hashes.add(scan.meta["source_sha256"])
    assert len(hashes) == 40


@pytest.mark.realdata
def test_raw_dfsc_scans_read_with_and_without_their_roi(raw_dfsc_dir):
    files = sorted(raw_dfsc_dir.glob("*.x3p"))
    assert len(files) == 2
    for file in files:
        masked = read_scan(file)
        full = read_scan(file, apply_mask=False)
        roi = masked.meta["file_mask"]
        assert roi.dtype == bool and roi.shape == masked.shape == full.shape
        assert 0.05 < roi.mean() < 0.5  # the breech-face annulus, not the black surround
        np.testing.assert_array_equal(full.meta["file_mask"], roi)
        assert masked.meta["mask_applied"] and not full.meta["mask_applied"]
        # Black/white without <Background>: the region-of-interest convention, no annotations.
        assert masked.meta["x3p"]["mask"]["convention"] == "region of interest"
        assert masked.meta["annotations"] == {} and masked.meta["handedness"] is None
        # apply_mask: NaN outside the ROI; without: values kept, mask = finite points.
        assert not np.isfinite(masked.heights[~roi]).any()
        np.testing.assert_array_equal(masked.mask, roi & np.isfinite(full.heights))
        np.testing.assert_array_equal(full.mask, np.isfinite(full.heights))
        assert np.isfinite(full.heights[~roi]).mean() > 0.5
        np.testing.assert_array_equal(masked.heights[roi], full.heights[roi])
        # Quirks of this export are recognised and recorded.
        quirks = " ".join(full.meta["quirks"])
        assert "ISO5436-2000" in quirks and "micrometres" in quirks
        dy, dx = full.spacing_um
        assert 5 < dy < 10 and dy == dx  # 7.37 µm: increments written in µm
        assert 10 < np.nanmax(full.heights) - np.nanmin(full.heights) < 2000
        assert full.meta["checksum"] == "ok"
        assert full.meta["instrument"].startswith("Cadre")
        # Orientation: the ROI lies on the smooth breech face; flipped, it would not.
        z = np.nan_to_num(full.heights.astype(np.float64))
        gradient = np.hypot(*np.gradient(z))
        assert gradient[roi].mean() < gradient[roi[::-1]].mean()


# ---------------------------------------------------------------------------------------------
# Quirks of real exports
# ---------------------------------------------------------------------------------------------


def test_plain_x3p_in_metres_reads_as_micrometres(tmp_path):
    z = planted()
    scan = read_scan(grid_x3p(tmp_path / "a.x3p", z))
    expected = (z * 1e6).astype(np.float32)
    np.testing.assert_array_equal(scan.heights, expected)
    assert scan.spacing_um == (6.25, 6.25)
    assert scan.meta["quirks"] == [] and scan.meta["checksum"] == "ok"
    assert scan.meta["format"] == "x3p"
    assert scan.meta["instrument"] == "Cadre TopMatch-GS 3D"
    assert scan.meta["date"] == "2021-08-25T14:54:04"
    assert scan.meta["creator"] == "Test Lab" and scan.meta["comment"] == "hand made"
    assert scan.meta["x3p"]["serial"] == "1062"
    assert scan.n_valid == z.size - 1 and not scan.mask[1, 2]
    data = (tmp_path / "a.x3p").read_bytes()
    assert scan.meta["source_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("revision", ["ISO5436-2000", "ISO 5436-2000", "ISO5436_2000"])
def test_nonstandard_revision_is_repaired(tmp_path, revision):
    z = planted()
    scan = read_scan(grid_x3p(tmp_path / "r.x3p", z, revision=revision))
    np.testing.assert_array_equal(scan.heights, (z * 1e6).astype(np.float32))
    assert any(revision in q for q in scan.meta["quirks"])
    assert scan.meta["checksum"] == "ok"  # verified on the file as written, before repair
    assert scan.meta["x3p"]["revision"] == revision


def test_root_element_without_namespace(tmp_path):
    scan = read_scan(grid_x3p(tmp_path / "n.x3p", planted(), namespace=False))
    assert any("namespace" in q for q in scan.meta["quirks"])
    assert scan.spacing_um == (6.25, 6.25)


def test_increments_and_heights_in_micrometres_are_detected(tmp_path):
    z_um = planted() * 1e6  # values of a few µm written where metres belong
    scan = read_scan(grid_x3p(tmp_path / "u.x3p", z_um, increment="3.5"))
    assert scan.spacing_um == (3.5, 3.5)
    np.testing.assert_array_equal(scan.heights, z_um.astype(np.float32))
    quirks = " ".join(scan.meta["quirks"])
    assert "increment 3.5 written in micrometres" in quirks
    assert "heights written in micrometres" in quirks


def test_micrometre_increments_with_heights_in_metres(tmp_path):
    z = planted()
    scan = read_scan(grid_x3p(tmp_path / "m.x3p", z, increment="7.25"))
    assert scan.spacing_um == (7.25, 7.25)
    np.testing.assert_array_equal(scan.heights, (z * 1e6).astype(np.float32))
    assert not any("heights written" in q for q in scan.meta["quirks"])


@pytest.mark.parametrize(
    ("dtype", "z_type", "z_increment"),
    [("<f4", "F", "1"), ("<f8", "D", "1"), ("<i2", "I", "1e-08"), ("<i4", "L", "2.5e-09")],
)
def test_data_types_with_z_increment(tmp_path, dtype, z_type, z_increment):
    rng = np.random.default_rng(1)
    if dtype.startswith("<i"):
        stored = rng.integers(-2000, 2000, (6, 5)).astype(dtype)
        expected = (stored.astype(np.float64) * float(z_increment) * 1e6).astype(np.float32)
    else:
        stored = (rng.normal(0, 5e-6, (6, 5))).astype(dtype)
        expected = (stored.astype(np.float64) * 1e6).astype(np.float32)
    path = grid_x3p(tmp_path / f"{z_type}.x3p", stored, dtype=dtype, z_type=z_type,
                    z_increment=z_increment)  # fmt: skip
    scan = read_scan(path)
    np.testing.assert_allclose(scan.heights, expected, rtol=1e-6)
    assert scan.meta["x3p"]["z_data_type"] == np.dtype(dtype).name


def test_missing_z_increment_means_one(tmp_path):
    z = planted()
    scan = read_scan(grid_x3p(tmp_path / "z.x3p", z, z_increment=None))
    np.testing.assert_array_equal(scan.heights, (z * 1e6).astype(np.float32))


def test_wrong_checksums_warn_and_read(tmp_path):
    z = planted()
    data = z.astype("<f8").tobytes()
    xml = main_xml(size=(7, 5, 1), data_md5="f" * 32)
    path = build_x3p(tmp_path / "w.x3p", xml, {"bindata/data.bin": data}, checksum="wrong")
    with pytest.warns(ChecksumWarning, match=r"main\.xml.*data\.bin|does not match"):
        scan = read_scan(path)
    assert scan.meta["checksum"] == "mismatch"
    np.testing.assert_array_equal(scan.heights, (z * 1e6).astype(np.float32))


def test_missing_checksums_warn_and_read(tmp_path):
    z = planted()
    xml = main_xml(size=(7, 5, 1))  # no MD5ChecksumPointData
    path = build_x3p(tmp_path / "m.x3p", xml, {"bindata/data.bin": z.tobytes()}, checksum="none")
    with pytest.warns(ChecksumWarning, match="no MD5 checksum"):
        scan = read_scan(path)
    assert scan.meta["checksum"] == "missing"
    assert scan.n_valid == z.size - 1


def test_datalist_storage(tmp_path):
    values = ["1e-06", "", "3e-06", "-2e-06", "5e-06", "6e-06"]
    path = build_x3p(tmp_path / "l.x3p", main_xml(size=(3, 2, 1), datalist=values))
    scan = read_scan(path)
    expected = np.array([[1, np.nan, 3], [-2, 5, 6]], dtype=np.float32)
    np.testing.assert_array_equal(scan.heights, expected)


def test_content_in_a_folder_of_the_zip(tmp_path):
    z = planted()
    data = z.tobytes()
    xml = main_xml(size=(7, 5, 1), data_md5=hashlib.md5(data).hexdigest())
    path = tmp_path / "f.x3p"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("scan/main.xml", xml)
        archive.writestr("scan/bindata/data.bin", data)
        archive.writestr("__MACOSX/._main.xml", b"junk")
    with pytest.warns(ChecksumWarning, match=r"no MD5 checksum for main\.xml"):
        scan = read_scan(path)
    assert any("folder" in q for q in scan.meta["quirks"])
    np.testing.assert_array_equal(scan.heights, (z * 1e6).astype(np.float32))


def _mask_file(tmp_path, z, mask_rgba, name="k.x3p", **xml_options):
    data = z.tobytes()
    rows, cols = z.shape
    xml = main_xml(size=(cols, rows, 1), data_md5=hashlib.md5(data).hexdigest(), **xml_options)
    files = {"bindata/data.bin": data, "bindata/mask.png": png_bytes(mask_rgba)}
    return build_x3p(tmp_path / name, xml, files)


def _rgba(mask, roi=(255, 255, 255), background=(0, 0, 0), alpha_bg=255):
    out = np.empty((*mask.shape, 4), dtype=np.uint8)
    out[...] = (*background, alpha_bg)
    out[mask] = (*roi, 255)
    return out


def test_mask_png_roi_is_applied_or_kept(tmp_path):
    z = np.full((40, 50), 2e-6)
    roi = ring_mask(40, 50)
    path = _mask_file(tmp_path, z, _rgba(roi))
    masked = read_scan(path)
    np.testing.assert_array_equal(masked.meta["file_mask"], roi)
    np.testing.assert_array_equal(masked.mask, roi)
    assert masked.meta["mask_applied"] and np.isnan(masked.heights[~roi]).all()
    full = read_scan(path, apply_mask=False)
    np.testing.assert_array_equal(full.meta["file_mask"], roi)
    assert full.n_valid == z.size and not full.meta["mask_applied"]
    np.testing.assert_array_equal(full.heights, np.float32(2.0))


def test_mask_with_a_background_is_annotations_not_a_roi(tmp_path):
    # x3ptools: a <Background> colour and a colour nobody named: a mark, not the usable area.
    marked = ~ring_mask(30, 30)
    rgba = _rgba(marked, roi=(10, 200, 30), background=(0xCD, 0x7F, 0x32))
    mask_xml = "<Mask><Background>#CD7F32</Background><Annotations/></Mask>"
    path = _mask_file(tmp_path, np.full((30, 30), 1e-6), rgba, extra_record3=mask_xml)
    scan = read_scan(path)
    assert scan.meta["file_mask"] is None and not scan.meta["mask_applied"]
    assert scan.n_valid == 30 * 30  # nothing masked
    assert list(scan.meta["annotations"]) == ["unnamed #0ac81e"]
    np.testing.assert_array_equal(scan.meta["annotations"]["unnamed #0ac81e"], marked)


def test_mask_annotation_naming_the_breech_face(tmp_path):
    roi = ring_mask(30, 30)
    pin = np.zeros((30, 30), bool)
    pin[12:18, 12:18] = True
    rgba = _rgba(roi, roi=(0, 0, 255), background=(255, 255, 255))
    rgba[pin] = (255, 0, 0, 255)  # another annotated region, not usable
    mask_xml = (
        '<Mask><Background>#ffffff</Background><Annotations>'
        '<Annotation color="#ff0000">Firing pin impression</Annotation>'
        '<Annotation color="#0000ff">Breech face impression</Annotation>'
        "</Annotations></Mask>"
    )  # fmt: skip
    path = _mask_file(tmp_path, np.zeros((30, 30)), rgba, extra_record3=mask_xml)
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.meta["file_mask"], roi)
    assert set(scan.meta["annotations"]) == {"Firing pin impression", "Breech face impression"}
    np.testing.assert_array_equal(scan.meta["annotations"]["Firing pin impression"], pin)


def test_mask_with_transparent_background(tmp_path):
    roi = ring_mask(30, 36)
    rgba = _rgba(roi, roi=(200, 100, 0), background=(200, 100, 0), alpha_bg=0)
    path = _mask_file(tmp_path, np.zeros((30, 36)), rgba)
    np.testing.assert_array_equal(read_scan(path).meta["file_mask"], roi)


def test_mask_at_twice_the_resolution_is_resampled(tmp_path):
    roi = ring_mask(30, 40)
    big = np.repeat(np.repeat(roi, 2, axis=0), 2, axis=1)
    path = _mask_file(tmp_path, np.zeros((30, 40)), _rgba(big))
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.meta["file_mask"], roi)
    assert any("resampled" in q for q in scan.meta["quirks"])


def test_mask_of_another_shape_is_ignored_with_a_warning(tmp_path):
    path = _mask_file(tmp_path, np.zeros((30, 40)), _rgba(ring_mask(17, 40)))
    with pytest.warns(UserWarning, match="mask ignored"):
        scan = read_scan(path)
    assert scan.meta["file_mask"] is None and scan.n_valid == 30 * 40


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _good(tmp_path, name="good.x3p") -> Path:
    return grid_x3p(tmp_path / name, planted())


def _zip_bomb(tmp_path) -> Path:
    """A small zip whose data member *declares* 4 GB uncompressed (patched headers)."""
    path = _good(tmp_path, "bomb.x3p")
    raw = bytearray(path.read_bytes())
    name = b"bindata/data.bin"
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46 : central + 46 + name_len] == name:
            struct.pack_into("<I", raw, central + 24, 0xFFFF0000)
            local = struct.unpack_from("<I", raw, central + 42)[0]
            struct.pack_into("<I", raw, local + 22, 0xFFFF0000)
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(path).getinfo("bindata/data.bin").file_size == 0xFFFF0000
    return path


def _with_xml(tmp_path, name, xml, data=None) -> Path:
    data = planted().tobytes() if data is None else data
    return build_x3p(tmp_path / name, xml, {"bindata/data.bin": data})


def _bad_files(tmp_path) -> dict[str, tuple[Path, str]]:
    good = _good(tmp_path)
    truncated = tmp_path / "truncated.x3p"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.x3p"
    raw = bytearray(good.read_bytes())
    info = zipfile.ZipFile(good).getinfo("bindata/data.bin")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 5 : start + 40] = bytes(35)
    corrupt.write_bytes(bytes(raw))
    not_zip = tmp_path / "text.x3p"
    not_zip.write_text("this is not a scan\n")
    empty = tmp_path / "empty.x3p"
    empty.write_bytes(b"")
    no_main = tmp_path / "nomain.x3p"
    with zipfile.ZipFile(no_main, "w") as archive:
        archive.writestr("bindata/data.bin", b"\0" * 8)
    lol = "".join(f'<!ENTITY l{i} "&l{i - 1};&l{i - 1};&l{i - 1};">' for i in range(1, 9))
    laughs = f'<!DOCTYPE r [<!ENTITY l0 "lol">{lol}]>\n'
    external = '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    xml = main_xml(size=(7, 5, 1))
    nan_grid = np.full((5, 7), np.nan).tobytes()
    return {
        "not a zip": (not_zip, "not a zip"),
        "empty file": (empty, "empty"),
        "truncated zip": (truncated, "truncated"),
        "corrupt member": (corrupt, "damaged"),
        "zip bomb": (_zip_bomb(tmp_path), "limit"),
        "huge declared grid": (
            _with_xml(tmp_path, "huge.x3p", main_xml(size=(100000, 100000, 1))),
            "limit",
        ),
        "doctype": (
            _with_xml(tmp_path, "dtd.x3p", main_xml(prolog="<!DOCTYPE ISO5436_2>\n")),
            "DOCTYPE",
        ),
        "external entity": (
            _with_xml(tmp_path, "ext.x3p", main_xml(prolog=external)),
            "external entity",
        ),
        "entity expansion": (
            _with_xml(tmp_path, "lol.x3p", main_xml(prolog=laughs)),
            "entity expansion",
        ),
        "not xml": (_with_xml(tmp_path, "notxml.x3p", xml[:200]), "not well-formed"),
        "missing main.xml": (no_main, "no main.xml"),
        "missing data file": (
            build_x3p(tmp_path / "nodata.x3p", xml, {"bindata/other.bin": b"\0" * 280}),
            "missing",
        ),
        "data shorter": (_with_xml(tmp_path, "short.x3p", xml, b"\0" * 279), "shorter"),
        "data longer": (_with_xml(tmp_path, "long.x3p", xml, b"\0" * 288), "longer"),
        "datalist shorter": (
            _with_xml(tmp_path, "dl.x3p", main_xml(size=(2, 2, 1), datalist=["1", "2", "3"])),
            "shorter",
        ),
        "empty grid": (_with_xml(tmp_path, "e.x3p", main_xml(size=(0, 5, 1)), b""), "empty"),
        "no finite value": (_with_xml(tmp_path, "nan.x3p", xml, nan_grid), "no finite"),
        "x3pio refuses": (
            _with_xml(tmp_path, "zero.x3p", main_xml(size=(7, 5, 1), increment="0")),
            "x3pio",
        ),
        "link leaves the container": (
            _with_xml(tmp_path, "abs.x3p", main_xml(size=(7, 5, 1), link="/etc/passwd")),
            "does not name a file",
        ),
        "a profile": (
            _with_xml(tmp_path, "prf.x3p", main_xml(size=(35, 1, 1)).replace(">SUR<", ">PRF<")),
            "not a surface",
        ),
        "unsupported suffix": (tmp_path / "notes.txt", ".x3p"),
    }


def test_every_bad_input_raises_scan_format_error_naming_file_and_problem(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for case, (path, problem) in _bad_files(tmp_path).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChecksumWarning)
            with pytest.raises(ScanFormatError) as caught:
                read_scan(path)
        message = str(caught.value)
        assert str(path) in message, (case, message)
        assert problem.lower() in message.lower(), (case, message)
        assert isinstance(caught.value, ValueError)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.x3p"):
        read_scan(tmp_path / "nowhere.x3p")


def test_roi_that_leaves_nothing_says_how_to_read_the_data(tmp_path):
    z = np.full((10, 10), np.nan)
    z[0, 0] = 1e-6  # the only finite point lies outside the ROI
    roi = np.zeros((10, 10), bool)
    roi[4:6, 4:6] = True
    path = _mask_file(tmp_path, z, _rgba(roi))
    with pytest.raises(ScanFormatError, match="apply_mask=False"):
        read_scan(path)
    assert read_scan(path, apply_mask=False).n_valid == 1


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def _scan_with_everything() -> bl.Scan:
    rng = np.random.default_rng(7)
    heights = (rng.normal(0, 2, (23, 31)) * 10 ** rng.uniform(-3, 3, (23, 31))).astype(np.float32)
    heights[3, 4] = heights[10, 0] = np.nan
    heights[0, 1] = np.float32(1e-30)
    meta = {
        "instrument": "NanoFocus usurf",
        "date": "2011-01-24T13:00:00",
        "creator": "Xiaoyu Zheng",
        "comment": "NA: 0.30",
        "case": {"id": "2024-0031", "agency": "PD", "shots": [1, 2, 3]},
        "history": [{"step": "level", "method": "plane"}],
        "simulation": {"casing_id": 4, "surface": np.zeros((2, 2))},
        "score": np.float32(0.5),
    }
    return bl.Scan(heights, spacing_um=(3.5, 6.25), meta=meta)


def test_x3p_round_trip_is_exact(tmp_path):
    scan = _scan_with_everything()
    path = tmp_path / "out.x3p"
    write_scan(scan, path)
    x3pio.read(path)  # x3pio verifies every checksum of what we wrote
    back = read_scan(path)
    assert np.array_equal(back.heights, scan.heights, equal_nan=True)
    assert back.spacing_um == (3.5, 6.25)
    np.testing.assert_array_equal(back.mask, scan.mask)
    assert back.meta["checksum"] == "ok" and back.meta["quirks"] == []
    for key in ("instrument", "date", "creator", "comment", "case", "history"):
        assert back.meta[key] == scan.meta[key], key
    assert back.meta["simulation"] == {"casing_id": 4}  # the array has no JSON form
    assert back.meta["score"] == 0.5
    # Record2 carries the descriptive metadata for other software too.
    metadata = x3pio.read(path).metadata
    assert metadata.creator == "Xiaoyu Zheng" and metadata.comment == "NA: 0.30"
    assert (metadata.instrument.manufacturer, metadata.instrument.model) == ("NanoFocus usurf", "")


def test_x3p_round_trip_of_a_bare_scan_with_a_large_range(tmp_path):
    heights = np.linspace(0, 30000, 12, dtype=np.float32).reshape(3, 4)  # 3 cm: metres-like
    heights[0, 0] = np.inf
    write_scan(bl.Scan(heights, spacing_um=1500.0), tmp_path / "bare.x3p")
    back = read_scan(tmp_path / "bare.x3p")
    assert back.meta["quirks"] == [] and back.spacing_um == (1500.0, 1500.0)
    np.testing.assert_array_equal(back.heights[1:], heights[1:])
    assert np.isnan(back.heights[0, 0])  # inf is "not measured"
    assert back.meta["instrument"] is None and back.meta["date"]
    assert x3pio.read(tmp_path / "bare.x3p").metadata.probing_system.type.value == "Software"


def test_x3p_round_trip_keeps_a_mask_stricter_than_nan(tmp_path):
    heights = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    roi = ~ring_mask(20, 30)  # touches the border: only the colour written in meta.json tells
    scan = bl.Scan(heights, spacing_um=6.25, mask=roi)
    write_scan(scan, tmp_path / "m.x3p")
    masked = read_scan(tmp_path / "m.x3p")
    np.testing.assert_array_equal(masked.mask, roi)
    assert np.array_equal(masked.heights, scan.masked_heights(), equal_nan=True)
    full = read_scan(tmp_path / "m.x3p", apply_mask=False)
    np.testing.assert_array_equal(full.heights, heights)
    np.testing.assert_array_equal(full.meta["file_mask"], roi)


@pytest.mark.realdata
def test_fadul_scan_round_trip(fadul_dir, tmp_path):
    scan = read_scan(fadul_dir / "Fadul 1-1.x3p")
    write_scan(scan, tmp_path / "copy.x3p")
    back = read_scan(tmp_path / "copy.x3p")
    assert np.array_equal(back.heights, scan.heights, equal_nan=True)
    assert back.spacing_um == scan.spacing_um
    for key in ("instrument", "date", "creator", "comment"):
        assert back.meta[key] == scan.meta[key]
    assert back.meta["x3p"]["serial"] == "not available"
    assert back.meta["x3p"]["probing_type"] == "NonContacting"
    assert back.meta["source_sha256"] != scan.meta["source_sha256"]


def test_npz_round_trip(tmp_path):
    """balllink's own .npz gives the scan back as written: heights, mask, spacing, meta, source."""
    scan = _scan_with_everything()
    roi = np.isfinite(scan.heights)
    roi[:5] = False
    scan = scan.replace(mask=roi, source="casing-7.x3p")
    write_scan(scan, tmp_path / "s.npz")
    for back in (read_scan(tmp_path / "s.npz"), read_scan(tmp_path / "s.npz", apply_mask=False)):
        assert back.heights.tobytes() == scan.heights.tobytes()  # NaN and 1e-30 included
        assert back.spacing_um == (3.5, 6.25)
        np.testing.assert_array_equal(back.mask, roi)
        assert back.meta == jsonable(scan.meta)  # the array in "simulation" has no JSON form
        assert back.meta["simulation"] == {"casing_id": 4} and back.meta["score"] == 0.5
        assert back.source == "casing-7.x3p"


def test_write_refuses_other_suffixes(tmp_path):
    with pytest.raises(ScanFormatError, match=r"\.x3p or \.npz"):
        write_scan(_scan_with_everything(), tmp_path / "s.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# .npy, .npz, PNG, TIFF
# ---------------------------------------------------------------------------------------------


def test_npy_needs_spacing_and_reads_micrometres(tmp_path):
    z = np.arange(12.0).reshape(3, 4)
    z[0, 0] = np.inf
    np.save(tmp_path / "z.npy", z)
    with pytest.raises(ScanFormatError, match="spacing_um"):
        read_scan(tmp_path / "z.npy")
    scan = read_scan(tmp_path / "z.npy", spacing_um=(2.0, 3.0))
    assert scan.spacing_um == (2.0, 3.0) and scan.meta["format"] == "npy"
    assert np.isnan(scan.heights[0, 0]) and scan.heights[2, 3] == 11
    np.save(tmp_path / "f.npy", np.asfortranarray(z[:, :3]))
    np.testing.assert_array_equal(
        read_scan(tmp_path / "f.npy", spacing_um=1).heights[1:], z[1:, :3]
    )


def test_bad_npy_and_npz(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[object()]]), allow_pickle=True)
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    np.save(tmp_path / "short.npy", np.zeros((50, 50)))
    data = (tmp_path / "short.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-100])
    np.savez(tmp_path / "nokey.npz", z=np.zeros((3, 3)))
    cases = {
        "obj.npy": "dtype",
        "cube.npy": "2-D",
        "empty.npy": "empty",
        "short.npy": "shorter",
        "nokey.npz": "'heights'",
    }
    for name, problem in cases.items():
        with pytest.raises(ScanFormatError, match=problem) as caught:
            read_scan(tmp_path / name, spacing_um=1.0)
        assert name in str(caught.value)


def test_npz_with_spacing_and_mask(tmp_path):
    heights = np.ones((4, 5), dtype=np.float32)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    np.savez(tmp_path / "a.npz", heights=heights, spacing_um=np.array([2.5]), mask=mask)
    scan = read_scan(tmp_path / "a.npz")
    assert scan.spacing_um == (2.5, 2.5) and scan.n_valid == 6
    override = read_scan(tmp_path / "a.npz", spacing_um=(1.0, 1.0))
    assert override.spacing_um == (1.0, 1.0) and "replaces" in override.meta["quirks"][0]


def test_png_and_tiff_intensity_images(tmp_path):
    rng = np.random.default_rng(3)
    grey8 = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    Image.fromarray(grey8).save(tmp_path / "a.png")
    Image.fromarray(grey16).save(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "c.tif", grey16)
    tifffile.imwrite(tmp_path / "d.tiff", grey16.astype(np.float32) / 7)
    for name, expected in [
        ("a.png", grey8),
        ("b.png", grey16),
        ("c.tif", grey16),
        ("d.tiff", grey16.astype(np.float32) / 7),
    ]:
        with pytest.raises(ScanFormatError, match="spacing_um"):
            read_scan(tmp_path / name)
        scan = read_scan(tmp_path / name, spacing_um=2.0)
        assert scan.meta["format"] == "image" and scan.spacing_um == (2.0, 2.0)
        np.testing.assert_array_equal(scan.heights, expected.astype(np.float32), err_msg=name)
    assert read_scan(tmp_path / "b.png", spacing_um=1).meta["image_bits"] == 16


def test_colour_png_is_luminance_and_alpha_is_missing(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 100
    rgba[..., 1] = 200
    rgba[..., 2] = 50
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "c.png")
    scan = read_scan(tmp_path / "c.png", spacing_um=1.0)
    luminance = np.float32(0.299 * 100 + 0.587 * 200 + 0.114 * 50)
    np.testing.assert_allclose(scan.heights[1:], luminance, rtol=1e-6)
    assert np.isnan(scan.heights[0, 0])


def test_unknown_suffix_is_recognised_by_content(tmp_path):
    write_scan(bl.Scan(np.ones((3, 3)), spacing_um=1.0), tmp_path / "scan.x3p")
    (tmp_path / "scan.x3p").rename(tmp_path / "scan.dat")
    assert read_scan(tmp_path / "scan.dat").meta["format"] == "x3p"
    np.save(tmp_path / "z.npy", np.ones((2, 2)))
    (tmp_path / "z.npy").rename(tmp_path / "z.bin")
    assert read_scan(tmp_path / "z.bin", spacing_um=1).meta["format"] == "npy"


def test_random_damage_never_escapes_as_another_exception(tmp_path):
    """Flipped bytes, cuts and XML edits: a Scan or a ScanFormatError, nothing else."""
    rng = np.random.default_rng(11)
    z = planted(12, 16)
    source = _mask_file(tmp_path, z, _rgba(ring_mask(12, 16)), name="src.x3p")
    np.save(tmp_path / "src.npy", z)
    members = {n: zipfile.ZipFile(source).read(n) for n in zipfile.ZipFile(source).namelist()}
    tokens = [b"<", b">", b"0", b"-1", b"99999", b"nan", b"F", b"A", b"&", b"\xff", b""]
    outcomes = {"read": 0, "refused": 0}
    for i in range(180):
        if i % 3 == 2:  # edit main.xml and zip it again
            xml = bytearray(members["main.xml"])
            at = int(rng.integers(len(xml)))
            xml[at : at + int(rng.integers(0, 6))] = tokens[int(rng.integers(len(tokens)))]
            path = tmp_path / "m.x3p"
            with zipfile.ZipFile(path, "w") as archive:
                for name, content in members.items():
                    archive.writestr(name, bytes(xml) if name == "main.xml" else content)
        else:
            suffix = ".x3p" if i % 2 else ".npy"
            data = bytearray((tmp_path / f"src{suffix}").read_bytes())
            if rng.random() < 0.3:
                data = data[: int(rng.integers(len(data)))]
            for at in rng.integers(len(data), size=int(rng.integers(1, 5))):
                data[at] = int(rng.integers(256))
            path = tmp_path / f"m{suffix}"
            path.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                scan = read_scan(path, spacing_um=1.0)
            except ScanFormatError as error:
                assert str(path) in str(error)
                outcomes["refused"] += 1
            else:
                assert isinstance(scan, bl.Scan) and scan.n_valid > 0
                outcomes["read"] += 1
    assert outcomes["refused"] > 60
