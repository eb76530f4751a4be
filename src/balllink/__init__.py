"""balllink: link shootings through fired cartridge cases.

Read breech-face scans, prepare them, compare them with congruent matching cells, index
them for fast candidate retrieval, and keep the leads in an embedded database.

>>> import balllink as bl
>>> bl.Scan([[0.0, 1.0], [2.0, 3.0]], spacing_um=6.25).spacing_um
(6.25, 6.25)
"""

from __future__ import annotations

import logging

from . import align, metrics, report, simulate
from ._scan import Scan
from .align import Pose, coarse_align, coarse_align_many, prepare_alignment
from .comparison import CMCConfig, Comparison, compare, compare_many
from .database import LeadDatabase
from .errors import (
    BalllinkError,
    DatabaseError,
    IndexFormatError,
    PreprocessError,
    ScanFormatError,
)
from .features import embed, embed_many
from .index import CasingIndex
from .io import ChecksumWarning, read_scan, write_scan
from .leads import Scope
from .preprocessing import (
    BreechFace,
    bandpass,
    find_breech_face,
    level,
    preprocess,
    remove_spikes,
    resample,
    trim_edges,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BalllinkError",
    "BreechFace",
    "CMCConfig",
    "CasingIndex",
    "ChecksumWarning",
    "Comparison",
    "DatabaseError",
    "IndexFormatError",
    "LeadDatabase",
    "Pose",
    "PreprocessError",
    "Scan",
    "ScanFormatError",
    "Scope",
    "__version__",
    "align",
    "bandpass",
    "coarse_align",
    "coarse_align_many",
    "compare",
    "compare_many",
    "embed",
    "embed_many",
    "find_breech_face",
    "level",
    "metrics",
    "prepare_alignment",
    "preprocess",
    "read_scan",
    "remove_spikes",
    "report",
    "resample",
    "simulate",
    "trim_edges",
    "write_scan",
]
