"""Hand-made X3P files for the I/O tests: main.xml text with every deviation a parameter.

Plain builder functions (no fixtures), shared by ``test_io`` and ``test_io_variants``, so that
no test module imports another.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

NS = "http://www.opengps.eu/2008/ISO5436_2"


def main_xml(
    *,
    size=(4, 3, 1),
    revision="ISO5436 - 2000",
    namespace=True,
    increment="6.25e-06",
    z_type="D",
    z_increment="1",
    data_md5=None,
    datalist=None,
    prolog="",
    extra_record3="",
    link="bindata/data.bin",
) -> str:
    """A main.xml in the layout of real exports; every deviation is a parameter."""
    open_tag = f'<p:ISO5436_2 xmlns:p="{NS}">' if namespace else "<ISO5436_2>"
    close_tag = "</p:ISO5436_2>" if namespace else "</ISO5436_2>"
    axes = "".join(
        f"<{name}><AxisType>I</AxisType><DataType>D</DataType>"
        f"<Increment>{increment}</Increment><Offset>0</Offset></{name}>"
        for name in ("CX", "CY")
    )
    z_inc = f"<Increment>{z_increment}</Increment>" if z_increment is not None else ""
    axes += f"<CZ><AxisType>A</AxisType><DataType>{z_type}</DataType>{z_inc}<Offset>0</Offset></CZ>"
    if datalist is not None:
        data = "<DataList>" + "".join(f"<Datum>{d}</Datum>" for d in datalist) + "</DataList>"
    else:
        checksum = f"<MD5ChecksumPointData>{data_md5}</MD5ChecksumPointData>" if data_md5 else ""
        data = f"<DataLink><PointDataLink>{link}</PointDataLink>{checksum}</DataLink>"
    sx, sy, sz = size
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{prolog}{open_tag}"
        f"<Record1><Revision>{revision}</Revision><FeatureType>SUR</FeatureType>"
        f"<Axes>{axes}</Axes></Record1>"
        "<Record2><Date>2021-08-25T14:54:04</Date><Creator>Test Lab</Creator>"
        "<Instrument><Manufacturer>Cadre</Manufacturer><Model>TopMatch-GS 3D</Model>"
        "<Serial>1062</Serial><Version>3.1</Version></Instrument>"
        "<CalibrationDate>2021-08-05T00:00:00</CalibrationDate>"
        "<ProbingSystem><Type>NonContacting</Type><Identification>10x</Identification>"
        "</ProbingSystem><Comment>hand made</Comment></Record2>"
        f"<Record3><MatrixDimension><SizeX>{sx}</SizeX><SizeY>{sy}</SizeY><SizeZ>{sz}</SizeZ>"
        f"</MatrixDimension>{data}{extra_record3}</Record3>"
        f"<Record4><ChecksumFile>md5checksum.hex</ChecksumFile></Record4>{close_tag}\n"
    )


def build_x3p(path: Path, xml: str | bytes, files=None, *, checksum="ok") -> Path:
    """Zip main.xml (+ its checksum file: "ok", "wrong" or "none") and ``files``."""
    xml_bytes = xml.encode("utf-8") if isinstance(xml, str) else xml
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.xml", xml_bytes)
        if checksum != "none":
            digest = hashlib.md5(xml_bytes).hexdigest() if checksum == "ok" else "0" * 32
            archive.writestr("md5checksum.hex", f"{digest} *main.xml\n")
        for name, content in (files or {}).items():
            archive.writestr(name, content)
    return path


def grid_x3p(path: Path, z: np.ndarray, *, dtype="<f8", z_type="D", md5=True, **xml_options):
    """An X3P of the grid ``z`` (rows = y) stored as ``dtype``; returns the path."""
    data = np.ascontiguousarray(z, dtype=dtype).tobytes()
    digest = hashlib.md5(data).hexdigest() if md5 else None
    rows, cols = z.shape
    xml = main_xml(size=(cols, rows, 1), z_type=z_type, data_md5=digest, **xml_options)
    return build_x3p(path, xml, {"bindata/data.bin": data})


def planted(rows=5, cols=7, seed=0) -> np.ndarray:
    """Heights in metres, a few micrometres, with one NaN."""
    z = np.random.default_rng(seed).normal(0, 3e-6, (rows, cols))
    z[1, 2] = np.nan
    return z


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def ring_mask(rows, cols) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :cols]
    r = np.hypot(yy - rows / 2, xx - cols / 2)
    return (r > min(rows, cols) * 0.15) & (r < min(rows, cols) * 0.4)
