"""Writing X3P files: the bytes of a scan as ISO 25178-72 (see `balllink.io.write_scan`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import x3pio

from .._files import jsonable
from ..errors import ScanFormatError
from ._content import READER_KEYS
from ._x3p_mask import add_annotation_mask, encode_annotations, encode_roi_png
from ._x3p_read import MASK_URI, META_URI

__all__ = ["x3p_bytes"]

logger = logging.getLogger(__name__)


def _metadata_for(meta: dict[str, Any]) -> x3pio.Metadata:
    detail = meta.get("x3p") if isinstance(meta.get("x3p"), dict) else {}

    def date_of(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return None
        return None

    manufacturer = str(detail.get("manufacturer") or "")
    model = str(detail.get("model") or "")
    instrument = meta.get("instrument")
    if instrument and " ".join(p for p in (manufacturer, model) if p) != instrument:
        manufacturer, model = str(instrument), ""
    try:
        probing = x3pio.ProbingType(detail.get("probing_type"))
    except ValueError:
        probing = x3pio.ProbingType.SOFTWARE
    comment = meta.get("comment")
    creator = meta.get("creator")
    return x3pio.Metadata(
        date=date_of(meta.get("date")) or datetime.now(UTC),
        creator=str(creator) if creator else None,
        instrument=x3pio.Instrument(
            manufacturer, model, str(detail.get("serial") or ""), str(detail.get("version") or "")
        ),
        calibration_date=date_of(detail.get("calibration_date")),
        probing_system=x3pio.ProbingSystem(
            probing, str(detail.get("probing_identification") or "")
        ),
        comment=str(comment) if comment is not None else None,
    )


def x3p_bytes(
    heights_um: np.ndarray,
    spacing_um: tuple[float, float],
    mask: np.ndarray | None,
    meta: dict[str, Any],
    label: str,
    annotations: dict[str, np.ndarray] | None = None,
) -> bytes:
    """Encode a scan as X3P bytes (see `balllink.io.write_scan` for the layout).

    Raises ValueError for annotations that cannot be written (see `encode_annotations`).
    """
    dy, dx = spacing_um
    mask_png = mask_xml = None
    if annotations:  # checked before anything is written
        mask_png, mask_xml = encode_annotations(annotations, heights_um.shape, label=label)
    kept = jsonable({key: value for key, value in meta.items() if key not in READER_KEYS})
    for key in meta:
        if key not in READER_KEYS and str(key) not in kept:
            logger.debug("write_scan %s: meta[%r] has no JSON form; not stored", label, key)
    payload: dict[str, Any] = {"balllink_meta_version": 1, "meta": kept}
    try:
        surface = x3pio.Surface.from_array(
            np.where(np.isfinite(heights_um), heights_um, np.nan).astype(np.float64) * 1e-6,
            x_scale=dx * 1e-6,
            y_scale=dy * 1e-6,
            z_type=x3pio.DataType.FLOAT32,
            z_scale=1e-6,
            metadata=_metadata_for(meta),
        )
        if mask is not None:
            surface.extensions[MASK_URI] = encode_roi_png(mask)
            payload["mask"] = {"roi": ["#ffffff"], "background": "#000000"}
        surface.extensions[META_URI] = json.dumps(payload, allow_nan=True).encode("utf-8")
        data = surface.dumps()
    except x3pio.X3pError as error:
        raise ScanFormatError(f"{label}: cannot write X3P: {error}") from None
    if mask_png is not None and mask_xml is not None:
        data = add_annotation_mask(data, mask_png, mask_xml)
    return data
