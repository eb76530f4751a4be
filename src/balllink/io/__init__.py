"""Reading and writing scans: X3P (ISO 25178-72), .npy/.npz, PNG/TIFF images.

`read_scan` returns a `Scan` with heights in micrometres (float32, NaN = not measured) and the
lateral spacing ``(dy, dx)`` in µm per pixel; metres are turned into micrometres here, once.

Formats (chosen by suffix; a file with another suffix is recognised by its first bytes):

``.x3p``
    ISO 25178-72 through x3pio, hardened against hostile files and tolerant of the deviations
    real exports have (see `balllink.io._x3p_read`; each repair is recorded in ``meta["quirks"]``): the
    root element ``<ISO5436>`` of older x3ptools; revisions such as ``ISO5436-2000`` or
    ``ISO5436–2000``; content in a folder of the zip beside ``__MACOSX/`` and ``.DS_Store``
    junk; an empty ``<Offset/>``; an ``<Origin>`` inside ``<Axes>``; integer data types on
    incremental X/Y axes; ``+Inf``, ``-Inf`` and huge sentinels (``|z| >= 1e15``) as invalid
    points (NaN); increments or heights written in micrometres instead of metres (decided by
    magnitude); a negative lateral increment (that axis of the array is reversed, so row ``i`` is
    at ``y = i * dy`` and column ``j`` at ``x = j * dx``); a missing or wrong checksum (a
    `ChecksumWarning`, ``meta["checksum"]``). Data in ``bindata/*.bin`` (float32, float64 and
    integer with a Z increment) or in ``main.xml`` (``DataList``, an empty ``Datum`` is NaN),
    with or without ``bindata/valid.bin`` (bit ``k % 8`` of byte ``k // 8``, least significant
    first, 1 = valid, as openGPS and x3pio read it). Point clouds and irregular (absolute) X/Y
    axes are refused. The mask image ``bindata/mask.png`` is read as described below.
``.npy``
    A 2-D array of heights in micrometres; ``spacing_um`` must be given.
``.npz``
    balllink's own format (an array ``format`` = ``"balllink-scan-2"``, `NPZ_FORMAT`), which
    `write_scan` writes and the lead database stores: read back exactly as written (heights,
    mask, spacing, ``meta``, source; see `balllink.io._arrays`), with nothing guessed or
    applied, so the ``meta`` keys listed below are those the written scan had. The database's
    earlier ``"balllink-prepared-scan-1"`` files are read the same way. Any other .npz (and
    those of earlier balllink versions): arrays ``heights`` (µm, 2-D) and ``spacing_um``
    (``(dy, dx)`` or one value), optional ``mask`` (bool, True = usable: the file's region of
    interest), ``annotations`` (bool, ``(n, rows, cols)``) with ``annotation_names`` (``n``
    strings), and ``meta_json`` (a JSON object merged into ``meta``).
``.png``, ``.tif``, ``.tiff``
    8- or 16-bit (or float TIFF) intensity images, such as photographs of a breech face.
    ``heights`` are the grey levels as float32 *in the image's own units*, not micrometres;
    colour images are reduced to luminance (ITU-R BT.601 weights) and pixels with alpha 0 are
    NaN. ``spacing_um`` must be given; ``meta["format"]`` is ``"image"``.

Masks: two conventions.
    ``bindata/mask.png`` of an X3P file is either an *annotation mask* (x3ptools, FiX3P:
    ``Record3/Mask`` names a ``<Background>`` colour, default ``#cd7f32``, and
    ``<Annotations>``, such as ``<Annotation color="#ff0000">break-off</Annotation>``) or a
    *region-of-interest mask* (no ``<Background>``, no annotation names, two colours: white on
    black is usable, as in the CSAFE raw TopMatch exports). Annotations are marks drawn on the
    surface, mostly regions to leave out, never the usable area: they are returned in
    ``meta["annotations"]`` as ``{name: bool array of the grid's shape}`` (a colour without a
    name is called ``"unnamed #rrggbb"``) and do not mask the heights, unless the caller asks
    (``exclude=[names]`` sets those regions to NaN, ``keep=[names]`` keeps only those) or an
    annotation's name says it *is* the usable region ("breech face", "ROI", "usable", "valid").

Region of interest. A region-of-interest mask (the black/white convention, an annotation naming
the usable region, balllink's own mask of an X3P file it wrote, ``mask`` in .npz) is returned as
``meta["file_mask"]`` (bool, the grid's shape; otherwise None, so that `preprocess` does not
take annotations for the ROI). With ``apply_mask=True`` (default) the heights outside it are
set to NaN, so ``scan.mask`` (the finite points) is the ROI; with ``apply_mask=False`` the
heights keep their values and ``scan.mask`` is the finite points only.

Handedness. ``meta["handedness"]`` is ``None`` (unknown), ``"viewed"`` (the array shown with row
0 on top shows the casing head as seen looking at it) or ``"mirrored"``. X3P does not say
whether row 0 is the top or the bottom, and exporters differ, so it is None unless the caller
says (``read_scan(path, handedness="viewed")``) or balllink wrote the file (X3P ``meta.json``,
.npz ``meta_json``: `write_scan` stores ``meta["handedness"]``). Nothing else is trusted: not
an ``<Origin>`` element, not the instrument; a stored value other than the three is read as
None with a quirk.

``meta`` keys always present (except in balllink's own .npz, above): ``format`` (``"x3p"``,
``"npy"``, ``"npz"`` or ``"image"``), ``instrument``, ``date`` (ISO 8601 text as written in the file), ``creator``, ``comment``,
``quirks`` (list of str: what was repaired or guessed), ``checksum`` (``"ok"``, ``"mismatch"``
or ``"missing"``; formats without checksums say ``"missing"`` without a warning),
``file_mask``, ``mask_applied``, ``annotations`` (dict, empty when none), ``handedness``,
``source_sha256`` (SHA-256 of the file bytes, for duplicate detection). X3P files add
``meta["x3p"]`` (revision, data type, increments as written, instrument serial/version,
calibration date, probing system, vendor extension IDs, an ``<Origin>`` found, mask decoding).
``read_scan(..., keep=..., exclude=...)`` adds ``meta["annotation_filter"]``.

Every damaged, hostile or empty file raises `ScanFormatError` naming the file and the problem,
after reading at most ``MAX_UNCOMPRESSED_BYTES`` (see `balllink.io._zip`).
"""

from .._scan import HANDEDNESS
from ._arrays import NPZ_FORMAT
from ._read import FILL_MIN_PIXELS, MAX_FILE_BYTES, SUPPORTED_SUFFIXES, read_scan
from ._write import write_scan
from ._x3p_read import ChecksumWarning

__all__ = [
    "FILL_MIN_PIXELS",
    "HANDEDNESS",
    "MAX_FILE_BYTES",
    "NPZ_FORMAT",
    "SUPPORTED_SUFFIXES",
    "ChecksumWarning",
    "read_scan",
    "write_scan",
]
