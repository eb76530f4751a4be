"""X3P variants of exporters seen in the wild, masks (annotations vs ROI) and handedness.

Every file is made here, from main.xml text and arrays planted by the test (the helpers of
``x3p_files`` build the container), so each deviation is exact and each answer known.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import x3pio
from PIL import Image
from x3p_files import build_x3p, main_xml, planted, png_bytes, ring_mask

import balllink as bl
from balllink.errors import ScanFormatError
from balllink.io import read_scan, write_scan

X3PTOOLS_BACKGROUND = (0xCD, 0x7F, 0x32)


def set_axis(xml: str, axis: str, tag: str, element: str) -> str:
    """Replace ``<tag>...</tag>`` inside ``<axis>`` by ``element`` (text of one element)."""
    block = re.search(rf"<{axis}>.*?</{axis}>", xml).group(0)
    new = re.sub(rf"<{tag}>[^<]*</{tag}>", element, block, count=1)
    return xml.replace(block, new)


def crafted(path: Path, z: np.ndarray, *, edit=None, dtype="<f8", files=None, **xml_options):
    """An X3P of ``z`` (rows = y) with a valid data checksum; ``edit`` changes main.xml text."""
    data = np.ascontiguousarray(z, dtype=dtype).tobytes()
    rows, cols = z.shape
    xml = main_xml(size=(cols, rows, 1), data_md5=hashlib.md5(data).hexdigest(), **xml_options)
    xml = edit(xml) if edit else xml
    return build_x3p(path, xml, {"bindata/data.bin": data, **(files or {})})


def metres_to_um(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # sentinels beyond float32 become inf here
        return (np.asarray(z, dtype=np.float64) * 1e6).astype(np.float32)


def read_quietly(path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a crafted file with checksums warns about nothing
        return read_scan(path, **options)


# ---------------------------------------------------------------------------------------------
# 1-3: container, root element, revision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", [False, True])
def test_root_element_iso5436_of_older_x3ptools(tmp_path, namespace):
    z = planted()

    def rename(xml):
        if namespace:
            return xml.replace("p:ISO5436_2", "p:ISO5436")
        return xml.replace("<ISO5436_2>", "<ISO5436>").replace("</ISO5436_2>", "</ISO5436>")

    path = crafted(tmp_path / "old.x3p", z, edit=rename, namespace=namespace)
    assert b"<ISO5436_2" not in zipfile.ZipFile(path).read("main.xml")
    scan = read_quietly(path)
    np.testing.assert_array_equal(scan.heights, metres_to_um(z))
    assert "main.xml root element <ISO5436> read as <ISO5436_2>" in scan.meta["quirks"]
    assert scan.meta["checksum"] == "ok"


def test_another_root_element_is_still_refused(tmp_path):
    path = crafted(tmp_path / "r.x3p", planted(), edit=lambda x: x.replace("ISO5436_2", "Scan"))
    with pytest.raises(ScanFormatError, match=r"r\.x3p: .*root element <Scan>"):
        read_scan(path)


@pytest.mark.parametrize("folder", ["scan/", "export/2024/K013sA1/"])
def test_content_in_a_subfolder_beside_macos_junk(tmp_path, folder):
    z = planted()
    data = z.tobytes()
    xml = main_xml(size=(7, 5, 1), data_md5=hashlib.md5(data).hexdigest())
    path = tmp_path / "mac.x3p"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(folder, b"")  # a directory entry
        archive.writestr(folder + "main.xml", xml)
        archive.writestr(folder + "md5checksum.hex", f"{hashlib.md5(xml.encode()).hexdigest()}\n")
        archive.writestr(folder + "bindata/data.bin", data)
        archive.writestr(folder + ".DS_Store", b"\0\0\0\1Bud1" + bytes(100))
        archive.writestr(".DS_Store", b"\0\0\0\1Bud1")
        archive.writestr("__MACOSX/" + folder + "._main.xml", b"\0\5\26\7AppleDouble")
        archive.writestr("__MACOSX/" + folder + "bindata/._data.bin", b"\0\5\26\7")
        archive.writestr("__MACOSX/._" + folder.split("/")[0], b"\0\5\26\7")
    scan = read_quietly(path)
    np.testing.assert_array_equal(scan.heights, metres_to_um(z))
    assert scan.meta["checksum"] == "ok"
    assert scan.meta["quirks"] == [
        f"content packed in the folder {folder!r} instead of the zip root"
    ]


@pytest.mark.parametrize(
    "revision",
    [
        "ISO5436\u20132000",  # en dash
        "ISO5436 \u2013 2000",
        "ISO 5436\u20142000",  # em dash
        "ISO5436\u20112000",  # non-breaking hyphen
        "ISO5436\u22122000",  # minus sign
        "ISO\u00a05436\u00a0-\u00a02000",  # no-break spaces
        "ISO5436 _ 2000",
        "iso5436-2000",
    ],
)
def test_revision_with_dash_and_space_variants(tmp_path, revision):
    z = planted()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is an unknown revision
        scan = read_scan(crafted(tmp_path / "rev.x3p", z, revision=revision))
    np.testing.assert_array_equal(scan.heights, metres_to_um(z))
    assert scan.meta["quirks"] == [f"revision {revision!r} read as 'ISO5436 - 2000'"]
    assert scan.meta["x3p"]["revision"] == revision


# ---------------------------------------------------------------------------------------------
# 4: invalid-point markers
# ---------------------------------------------------------------------------------------------

F32_MAX = float(np.finfo(np.float32).max)  # 3.4028235e38


@pytest.mark.parametrize(
    ("marker", "dtype", "z_type", "quirk"),
    [
        (np.inf, "<f8", "D", "hold +Inf"),
        (-np.inf, "<f4", "F", "hold -Inf"),
        (F32_MAX, "<f4", "F", "sentinel 3.40282e+38"),
        (-F32_MAX, "<f8", "D", "sentinel -3.40282e+38"),
        (1e30, "<f8", "D", "sentinel 1e+30"),
        (-1e30, "<f4", "F", "sentinel -1e+30"),
    ],
)
def test_inf_and_huge_sentinels_are_invalid_points(tmp_path, marker, dtype, z_type, quirk):
    rng = np.random.default_rng(4)
    z = planted(20, 30, seed=4).astype(dtype)  # metres: a few µm of relief
    invalid = rng.random(z.shape) < 0.15  # far more than the 0.5 % the percentile ignores
    z[invalid] = marker
    scan = read_quietly(crafted(tmp_path / "s.x3p", z, dtype=dtype, z_type=z_type))
    expected = metres_to_um(z.astype(np.float64))
    expected[invalid] = np.nan
    # Metres are still recognised as metres: the markers do not enter the unit decision.
    np.testing.assert_array_equal(scan.heights, expected)
    assert not any("written in micrometres" in q for q in scan.meta["quirks"])
    (noted,) = [q for q in scan.meta["quirks"] if "invalid-point marker" in q]
    assert quirk in noted and noted.startswith(f"{int(invalid.sum())} point(s)")


def test_sentinel_in_a_file_written_in_micrometres(tmp_path):
    z = planted(12, 10) * 1e6  # micrometres where metres belong
    z[0, :] = -F32_MAX
    scan = read_quietly(crafted(tmp_path / "um.x3p", z))
    expected = z.astype(np.float32)
    expected[0, :] = np.nan
    np.testing.assert_array_equal(scan.heights, expected)
    assert any("heights written in micrometres" in q for q in scan.meta["quirks"])


def test_a_grid_of_sentinels_only_holds_no_value(tmp_path):
    path = crafted(tmp_path / "all.x3p", np.full((4, 5), 1e30))
    with pytest.raises(ScanFormatError, match=r"all\.x3p: .*no finite height"):
        read_scan(path)


# ---------------------------------------------------------------------------------------------
# 5-7: axes
# ---------------------------------------------------------------------------------------------


def test_empty_offsets_read_as_zero(tmp_path):
    z = planted()

    def empty(xml):
        xml = set_axis(xml, "CX", "Offset", "<Offset/>")
        return set_axis(xml, "CZ", "Offset", "<Offset>  </Offset>")

    scan = read_quietly(crafted(tmp_path / "o.x3p", z, edit=empty))
    np.testing.assert_array_equal(scan.heights, metres_to_um(z))
    assert scan.meta["quirks"] == [
        "CX has an empty <Offset>; read as 0",
        "CZ has an empty <Offset>; read as 0",
    ]


@pytest.mark.parametrize(
    "origin", ["<Origin>NW</Origin>", "<Origin><X>0</X><Y>0</Y><Z>0</Z></Origin>", "<Origin/>"]
)
def test_origin_inside_axes_is_ignored(tmp_path, origin):
    z = planted()
    edit = lambda xml: xml.replace("</CZ>", "</CZ>" + origin)  # noqa: E731
    scan = read_quietly(crafted(tmp_path / "origin.x3p", z, edit=edit))
    np.testing.assert_array_equal(scan.heights, metres_to_um(z))
    (quirk,) = scan.meta["quirks"]
    assert quirk.startswith("non-standard element <Origin") and "Record1/Axes ignored" in quirk
    assert scan.meta["handedness"] is None  # an <Origin> is not trusted for handedness


@pytest.mark.parametrize("data_type", ["I", "L"])
def test_integer_data_type_of_incremental_xy_axes(tmp_path, data_type):
    z = planted()

    def integer(xml):
        for axis in ("CX", "CY"):
            xml = set_axis(xml, axis, "DataType", f"<DataType>{data_type}</DataType>")
        return xml

    scan = read_quietly(crafted(tmp_path / "i.x3p", z, edit=integer))
    np.testing.assert_array_equal(scan.heights, metres_to_um(z))
    assert scan.spacing_um == (6.25, 6.25)
    assert scan.meta["quirks"] == [
        f"{axis} is incremental but declares the integer DataType {data_type!r}; ignored "
        "(an incremental axis stores no values)"
        for axis in ("CX", "CY")
    ]


def test_anisotropic_non_square_grid_keeps_rows_and_columns(tmp_path):
    rows, cols = 4, 7  # SizeY = 4, SizeX = 7
    z_um = np.add.outer(np.arange(rows) * 100.0, np.arange(cols))  # 100 * row + column
    z_um[0, 0] = 5000.0  # and an asymmetric landmark

    def spacing(xml):
        xml = set_axis(xml, "CX", "Increment", "<Increment>2e-06</Increment>")
        return set_axis(xml, "CY", "Increment", "<Increment>5e-06</Increment>")

    path = crafted(tmp_path / "aniso.x3p", z_um * 1e-6, edit=spacing)
    assert b"<SizeX>7</SizeX><SizeY>4</SizeY>" in zipfile.ZipFile(path).read("main.xml")
    scan = read_quietly(path)
    assert scan.shape == (rows, cols)
    assert scan.spacing_um == (5.0, 2.0)  # (dy from CY, dx from CX)
    np.testing.assert_allclose(scan.heights, z_um, rtol=1e-6)
    assert scan.heights[0, 0] == np.float32(5000.0) and scan.heights[3, 6] == np.float32(306.0)


@pytest.mark.parametrize("negative", ["CX", "CY", "CX+CY"])
def test_negative_lateral_increment_reverses_that_axis(tmp_path, negative):
    stored = np.add.outer(np.arange(5) * 10.0, np.arange(8))  # µm as stored, row = stored y
    marked = np.zeros(stored.shape, bool)
    marked[0, :2] = True  # an annotation over the first stored pixels

    def flip(xml):
        for axis in negative.split("+"):
            xml = set_axis(xml, axis, "Increment", "<Increment>-6.25e-06</Increment>")
        return xml

    rgba = np.zeros((*stored.shape, 3), np.uint8)
    rgba[...] = X3PTOOLS_BACKGROUND
    rgba[marked] = (255, 0, 0)
    mask_xml = (
        '<Mask><Background>#cd7f32</Background><Annotations><Annotation color="#ff0000">'
        "break-off</Annotation></Annotations></Mask>"
    )
    path = crafted(
        tmp_path / "neg.x3p",
        stored * 1e-6,
        edit=flip,
        extra_record3=mask_xml,
        files={"bindata/mask.png": png_bytes(rgba)},
    )
    scan = read_quietly(path)
    expected, expected_mark = stored, marked
    if "CY" in negative:
        expected, expected_mark = expected[::-1], expected_mark[::-1]
    if "CX" in negative:
        expected, expected_mark = expected[:, ::-1], expected_mark[:, ::-1]
    np.testing.assert_allclose(scan.heights, expected, rtol=1e-6)
    np.testing.assert_array_equal(scan.meta["annotations"]["break-off"], expected_mark)
    assert scan.spacing_um == (6.25, 6.25)
    flips = [q for q in scan.meta["quirks"] if "is negative" in q]
    assert len(flips) == len(negative.split("+"))
    assert all("reversed so that the increment is positive" in q for q in flips)


def test_point_clouds_and_irregular_axes_are_still_refused(tmp_path):
    z = planted()
    cloud = lambda xml: re.sub(  # noqa: E731
        "<MatrixDimension>.*</MatrixDimension>", "<ListDimension>35</ListDimension>", xml
    ).replace(">SUR<", ">PCL<")
    absolute = lambda xml: set_axis(xml, "CX", "AxisType", "<AxisType>A</AxisType>")  # noqa: E731
    old_root = lambda xml: absolute(xml).replace("p:ISO5436_2", "p:ISO5436")  # noqa: E731
    for name, edit, problem in [
        ("cloud.x3p", cloud, "point cloud"),
        ("abs.x3p", absolute, "axis CX is absolute"),
        ("oldabs.x3p", old_root, "axis CX is absolute"),
    ]:
        path = crafted(tmp_path / name, z, edit=edit)
        with pytest.raises(ScanFormatError) as caught:
            read_scan(path)
        assert str(path) in str(caught.value) and problem in str(caught.value), name


# ---------------------------------------------------------------------------------------------
# 9-10: data in main.xml, validity bits
# ---------------------------------------------------------------------------------------------


def test_datalist_with_empty_datums_integer_data_and_a_non_square_grid(tmp_path):
    stored = np.array([[12, -3, 0, 7], [5, 9, -1, 4], [2, 8, 6, -9]])  # int32, 3 rows x 4 cols
    empty = {(0, 1), (2, 3)}
    datums = ["" if (r, c) in empty else f" {stored[r, c]} " for r in range(3) for c in range(4)]
    xml = main_xml(size=(4, 3, 1), datalist=datums, z_type="L", z_increment="2.5e-08")
    xml = xml.replace("<Datum></Datum>", "<Datum/>", 1)  # both spellings of an empty Datum
    scan = read_quietly(build_x3p(tmp_path / "dl.x3p", xml))
    expected = (stored * 2.5e-08 * 1e6).astype(np.float32)
    for r, c in empty:
        expected[r, c] = np.nan
    np.testing.assert_allclose(scan.heights, expected, rtol=1e-6)
    assert np.isnan(scan.heights[0, 1]) and np.isnan(scan.heights[2, 3])
    assert scan.meta["quirks"] == []


def test_valid_bin_bits_least_significant_first(tmp_path):
    """ISO 5436-2 / openGPS ``ValidBuffer::IsValid``: bit ``k % 8`` of byte ``k // 8``."""
    rows, cols = 5, 7  # 35 points: 5 bytes, the last one partly used
    z = planted(rows, cols, seed=9)
    z[1, 2] = 3e-6  # planted() puts a NaN there; every point has a value here
    valid = np.ones(rows * cols, bool)
    valid[[0, 1, 2, 9, 17, 34]] = False  # asymmetric within each byte
    bits = np.packbits(valid, bitorder="little").tobytes()
    assert bits != np.packbits(valid, bitorder="big").tobytes()  # the order matters here
    z_stored = z.copy()
    z_stored.reshape(-1)[~valid] = 7.0  # garbage where a point is invalid (7 m)
    data = z_stored.tobytes()
    link = (
        "<ValidPointsLink>bindata/valid.bin</ValidPointsLink>"
        f"<MD5ChecksumValidPoints>{hashlib.md5(bits).hexdigest()}</MD5ChecksumValidPoints>"
    )
    xml = main_xml(size=(cols, rows, 1), data_md5=hashlib.md5(data).hexdigest())
    xml = xml.replace("</DataLink>", link + "</DataLink>")
    files = {"bindata/data.bin": data, "bindata/valid.bin": bits}
    scan = read_quietly(build_x3p(tmp_path / "v.x3p", xml, files))
    expected = metres_to_um(z)
    expected.reshape(-1)[~valid] = np.nan
    np.testing.assert_array_equal(scan.heights, expected)
    assert scan.meta["checksum"] == "ok"


# ---------------------------------------------------------------------------------------------
# Masks: annotations are marks, not the region of interest
# ---------------------------------------------------------------------------------------------


def ring_scan(rows=60, cols=64, seed=2) -> tuple[np.ndarray, np.ndarray]:
    """Heights (metres) of a breech-face ring, NaN outside it, and the ring."""
    ring = ring_mask(rows, cols)
    z = np.random.default_rng(seed).normal(0, 2e-6, (rows, cols))
    z[~ring] = np.nan
    return z, ring


def annotation_png(shape, regions: dict[tuple[int, int, int], np.ndarray]) -> bytes:
    rgb = np.empty((*shape, 3), np.uint8)
    rgb[...] = X3PTOOLS_BACKGROUND
    for colour, region in regions.items():
        rgb[region] = colour
    return png_bytes(rgb)


@pytest.mark.parametrize("with_xml", [True, False])
def test_small_annotated_blob_keeps_all_the_data(tmp_path, with_xml):
    """Regression: an x3ptools mask with one small blob kept 1 % of the scan, then failed."""
    z, ring = ring_scan()
    blob = np.zeros(z.shape, bool)
    blob[28:31, 5:8] = True  # 9 pixels on the ring
    mask_xml = (
        '<Mask><Background>#cd7f32</Background><Annotations><Annotation color="#ff0000">'
        "break-off</Annotation></Annotations></Mask>"
    )
    path = crafted(
        tmp_path / "blob.x3p",
        z,
        extra_record3=mask_xml if with_xml else "",
        files={"bindata/mask.png": annotation_png(z.shape, {(255, 0, 0): blob})},
    )
    scan = read_quietly(path)
    assert scan.n_valid == ring.sum()  # every measured point kept
    assert scan.meta["file_mask"] is None and not scan.meta["mask_applied"]
    name = "break-off" if with_xml else "unnamed #ff0000"
    assert list(scan.meta["annotations"]) == [name]
    np.testing.assert_array_equal(scan.meta["annotations"][name], blob)
    excluded = read_quietly(path, exclude=[name])
    assert excluded.n_valid == (ring & ~blob).sum() and not excluded.mask[blob].any()
    assert excluded.meta["annotation_filter"] == {"keep": None, "exclude": [name]}


def test_annotation_naming_the_usable_region_is_the_roi(tmp_path):
    z, ring = ring_scan()
    face = ring.copy()
    face[:, :10] = False
    damage = np.zeros(z.shape, bool)
    damage[:, :10] = ring[:, :10]
    mask_xml = (
        "<Mask><Background>#cd7f32</Background><Annotations>"
        '<Annotation color="#00FF00FF">Breech face impression</Annotation>'
        '<Annotation color="red">not usable: damage</Annotation>'
        "</Annotations><Version>2</Version></Mask>"
    )
    png = annotation_png(z.shape, {(0, 255, 0): face, (255, 0, 0): damage})
    files = {"bindata/mask.png": png}
    path = crafted(tmp_path / "bf.x3p", z, extra_record3=mask_xml, files=files)
    scan = read_quietly(path)
    np.testing.assert_array_equal(scan.meta["file_mask"], face)
    assert scan.meta["mask_applied"] and scan.n_valid == face.sum()
    assert set(scan.meta["annotations"]) == {"Breech face impression", "not usable: damage"}
    full = read_quietly(path, apply_mask=False)
    assert full.n_valid == ring.sum()
    np.testing.assert_array_equal(full.meta["file_mask"], face)


@pytest.mark.parametrize(
    ("name", "usable"),
    [
        ("Breech face impression", True),
        ("breechface", True),
        ("ROI", True),
        ("usable area", True),
        ("valid", True),
        ("BF", True),
        ("unusable", False),
        ("invalid", False),
        ("not usable", False),
        ("breech face damage", False),
        ("no striae", False),
        ("break-off", False),
        ("Firing pin impression", False),
    ],
)
def test_which_annotation_names_mean_the_usable_region(name, usable):
    from balllink.io._x3p_mask import is_roi_name

    assert is_roi_name(name) is usable


def test_a_flood_of_annotation_names_is_bounded(tmp_path):
    z, ring = ring_scan()
    entries = "".join(f'<Annotation color="#{i:06x}">mark {i}</Annotation>' for i in range(1, 3001))
    mask_xml = f"<Mask><Background>#cd7f32</Background><Annotations>{entries}</Annotations></Mask>"
    files = {"bindata/mask.png": annotation_png(z.shape, {})}
    scan = read_quietly(crafted(tmp_path / "many.x3p", z, extra_record3=mask_xml, files=files))
    assert len(scan.meta["annotations"]) == 64 and scan.n_valid == ring.sum()
    assert any("2936 more annotation(s) than 64" in q for q in scan.meta["quirks"])


def annotated_scan() -> tuple[bl.Scan, dict[str, np.ndarray]]:
    z, _ = ring_scan()
    blob = np.zeros(z.shape, bool)
    blob[5:12, 20:30] = True
    band = np.zeros(z.shape, bool)
    band[40:44, :] = True
    band &= ~blob
    scan = bl.Scan((z * 1e6).astype(np.float32), spacing_um=(3.125, 6.25))
    return scan, {"break-off": blob, "no striae <& 'quoted'>": band}


def test_annotations_round_trip_through_x3p(tmp_path):
    scan, annotations = annotated_scan()
    path = tmp_path / "a.x3p"
    write_scan(scan, path, annotations=annotations)
    x3pio.read(path)  # every checksum still verifies
    # The x3ptools layout: Record3/Mask with Background and Annotations, bindata/mask.png.
    with zipfile.ZipFile(path) as archive:
        main = archive.read("main.xml").decode()
        image = np.asarray(Image.open(io.BytesIO(archive.read("bindata/mask.png"))))
    record3 = re.search(r"<Record3>.*</Record3>", main, re.S).group(0)
    mask = re.search(r"<Mask>(.*)</Mask>", record3, re.S).group(1)
    assert mask.startswith("<Background>#cd7f32</Background><Annotations><Annotation color=")
    colours = dict(
        (name, colour)
        for colour, name in re.findall(
            r'<Annotation color="(#[0-9a-f]{6})">([^<]*)</Annotation>', mask
        )
    )
    assert list(colours) == ["break-off", "no striae &lt;&amp; 'quoted'&gt;"]
    assert image.shape == (*scan.shape, 3)
    untouched = ~(annotations["break-off"] | annotations["no striae <& 'quoted'>"])
    assert (image[untouched] == X3PTOOLS_BACKGROUND).all()
    red = tuple(int(colours["break-off"][i : i + 2], 16) for i in (1, 3, 5))
    assert (image[annotations["break-off"]] == red).all()

    back = read_quietly(path)
    assert set(back.meta["annotations"]) == set(annotations)
    for name, region in annotations.items():
        np.testing.assert_array_equal(back.meta["annotations"][name], region)
    assert np.array_equal(back.heights, scan.heights, equal_nan=True)  # not masked
    assert back.meta["file_mask"] is None and back.meta["quirks"] == []

    excluded = read_quietly(path, exclude="break-off")
    assert not excluded.mask[annotations["break-off"]].any()
    assert excluded.n_valid == (scan.mask & ~annotations["break-off"]).sum()
    kept = read_quietly(path, keep=["no striae <& 'quoted'>"])
    assert kept.n_valid == (scan.mask & annotations["no striae <& 'quoted'>"]).sum()


def test_unknown_annotation_names_say_which_the_file_has(tmp_path):
    scan, annotations = annotated_scan()
    write_scan(scan, tmp_path / "a.x3p", annotations=annotations)
    with pytest.raises(ValueError, match=r"a\.x3p: exclude=\['breakoff'\].*'break-off'"):
        read_scan(tmp_path / "a.x3p", exclude=["breakoff"])
    write_scan(scan, tmp_path / "plain.x3p")
    with pytest.raises(ValueError, match=r"plain\.x3p: keep=\['break-off'\].*annotations: none"):
        read_scan(tmp_path / "plain.x3p", keep=["break-off"])
    with pytest.raises(ValueError, match="keep nothing"):
        read_scan(tmp_path / "a.x3p", keep=[])


def test_own_roi_and_annotations_together(tmp_path):
    scan, annotations = annotated_scan()
    roi = scan.mask.copy()
    roi[:, :20] = False  # stricter than the measured points
    scan = scan.replace(mask=roi)
    assert not np.array_equal(scan.mask, np.isfinite(scan.heights))
    for suffix in (".x3p", ".npz"):
        path = tmp_path / f"both{suffix}"
        write_scan(scan, path, annotations=annotations)
        back = read_quietly(path)
        np.testing.assert_array_equal(back.mask, roi)
        if suffix == ".x3p":  # a foreign format: the stored mask is the file's ROI
            np.testing.assert_array_equal(back.meta["file_mask"], roi)
        else:  # balllink's own .npz: the scan as written, whose meta had no file_mask
            assert "file_mask" not in back.meta
        assert set(back.meta["annotations"]) == set(annotations), suffix
        for name, region in annotations.items():
            np.testing.assert_array_equal(back.meta["annotations"][name], region)


def test_annotations_read_are_written_again_by_default(tmp_path):
    scan, annotations = annotated_scan()
    write_scan(scan, tmp_path / "a.x3p", annotations=annotations)
    first = read_quietly(tmp_path / "a.x3p")
    write_scan(first, tmp_path / "b.x3p")  # meta["annotations"] by default
    write_scan(first, tmp_path / "c.x3p", annotations={})  # none
    assert set(read_quietly(tmp_path / "b.x3p").meta["annotations"]) == set(annotations)
    assert read_quietly(tmp_path / "c.x3p").meta["annotations"] == {}


def test_annotations_that_cannot_be_written(tmp_path):
    scan, annotations = annotated_scan()
    overlapping = {"a": annotations["break-off"], "b": annotations["break-off"]}
    cases = [
        (overlapping, "overlaps"),
        ({"a": np.ones((3, 3), bool)}, "shape"),
        ({" a": annotations["break-off"]}, "surrounding spaces"),
        ({"background": annotations["break-off"]}, "unannotated colour"),
    ]
    for bad, problem in cases:
        with pytest.raises(ValueError, match=problem):
            write_scan(scan, tmp_path / "bad.x3p", annotations=bad)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Handedness
# ---------------------------------------------------------------------------------------------


def test_handedness_of_a_foreign_x3p_is_unknown(tmp_path):
    scan = read_quietly(crafted(tmp_path / "f.x3p", planted()))
    assert scan.meta["handedness"] is None
    told = read_quietly(tmp_path / "f.x3p", handedness="viewed")
    assert told.meta["handedness"] == "viewed" and told.meta["quirks"] == []


@pytest.mark.parametrize("suffix", [".x3p", ".npz"])
def test_handedness_round_trips_and_the_caller_overrides(tmp_path, suffix):
    scan = bl.Scan(np.arange(12.0).reshape(3, 4), spacing_um=2.0, meta={"handedness": "mirrored"})
    path = tmp_path / f"h{suffix}"
    write_scan(scan, path)
    assert read_quietly(path).meta["handedness"] == "mirrored"
    viewed = read_quietly(path, handedness="viewed")
    assert viewed.meta["handedness"] == "viewed"
    assert viewed.meta["quirks"] == [
        "handedness 'viewed' given by the caller replaces the file's 'mirrored'"
    ]
    unknown = read_quietly(path, handedness=None)
    assert unknown.meta["handedness"] is None and len(unknown.meta["quirks"]) == 1
    write_scan(viewed, tmp_path / f"again{suffix}")
    assert read_quietly(tmp_path / f"again{suffix}").meta["handedness"] == "viewed"


def _rewrite_meta_json(path: Path, change) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    name = next(n for n in members if n.replace("\\", "/").endswith("balllink/meta.json"))
    payload = json.loads(members[name])
    change(payload["meta"])
    members[name] = json.dumps(payload).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)


@pytest.mark.parametrize("stored", ["left", "Viewed", 1, ["viewed"]])
def test_a_stored_handedness_of_another_value_is_unknown(tmp_path, stored):
    write_scan(bl.Scan(np.ones((3, 3)), spacing_um=1.0), tmp_path / "h.x3p")
    _rewrite_meta_json(tmp_path / "h.x3p", lambda meta: meta.update(handedness=stored))
    np.savez(
        tmp_path / "h.npz",
        heights=np.ones((3, 3)),
        spacing_um=np.array([1.0]),
        meta_json=np.asarray(json.dumps({"handedness": stored})),
    )
    for name in ("h.x3p", "h.npz"):
        scan = read_scan(tmp_path / name)
        assert scan.meta["handedness"] is None, name
        assert any(f"handedness {stored!r} stored in the file" in q for q in scan.meta["quirks"])


def test_handedness_values_are_checked(tmp_path):
    np.save(tmp_path / "z.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match="'viewed', 'mirrored' or None"):
        read_scan(tmp_path / "z.npy", spacing_um=1.0, handedness="left")
    scan = bl.Scan(np.ones((2, 2)), spacing_um=1.0, meta={"handedness": "up"})
    with pytest.raises(ValueError, match=r"meta\['handedness'\]"):
        write_scan(scan, tmp_path / "z.x3p")
    assert read_scan(tmp_path / "z.npy", spacing_um=1.0).meta["handedness"] is None


# ------------------------------------------------------------------ fill values


def _ring_with_fill(fill_um: float, n=120):
    """Heights (µm) of a textured ring whose outside and hole hold ``fill_um`` exactly."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(yy, xx)
    ring = (r < 0.45 * n) & (r > 0.15 * n)
    z = np.random.default_rng(7).normal(0.0, 1.5, (n, n))
    return np.where(ring, z, fill_um), ring


@pytest.mark.parametrize("fill", ["zero", "minimum", "maximum"])
def test_fill_value_for_unmeasured_points_is_read_as_missing(tmp_path, fill):
    z, ring = _ring_with_fill(0.0)
    if fill != "zero":
        z = np.where(ring, z, -40.0 if fill == "minimum" else 40.0)
    path = crafted(tmp_path / f"{fill}.x3p", z * 1e-6)  # metres, float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = read_scan(path)
    assert np.array_equal(np.isfinite(scan.heights), ring)  # outside and hole gone
    assert any("fill value" in q for q in scan.meta["quirks"])
    npz = tmp_path / f"{fill}.npz"
    np.savez(npz, heights=z.astype(np.float32), spacing_um=6.25)
    assert np.array_equal(np.isfinite(read_scan(npz).heights), ring)


def test_repeated_values_of_integer_data_and_images_are_kept(tmp_path):
    z, ring = _ring_with_fill(0.0)
    counts = np.round(z * 100).astype("<i4")  # integer heights with a Z increment
    path = crafted(tmp_path / "int.x3p", counts, dtype="<i4", z_type="L", z_increment="1e-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = read_scan(path)
    assert np.isfinite(scan.heights).all()
    assert not any("fill value" in q for q in scan.meta["quirks"])
    image = tmp_path / "photo.png"
    Image.fromarray(np.where(ring, 128, 0).astype(np.uint8)).save(image)
    assert np.isfinite(read_scan(image, spacing_um=5.0).heights).all()


def test_a_measured_surface_with_a_few_equal_values_is_untouched(tmp_path):
    z = np.random.default_rng(1).normal(size=(100, 100))
    z[10, 10:20] = 0.0  # ten exact zeros in a row: not a fill region
    path = crafted(tmp_path / "few.x3p", z * 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = read_scan(path)
    assert np.isfinite(scan.heights).all()
