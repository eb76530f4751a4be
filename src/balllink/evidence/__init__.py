"""Calibrated evidence (issue 13): likelihood ratios of comparisons, bounded by what their
training data support, with the lead threshold chosen from a target false-lead rate.

* `Pairs`: labelled comparisons (count ``k`` of ``n`` cells, raw score, firearms), from
  `Comparison` objects or a CSV.
* `LRModel.fit`: a count model (beta-binomial laws of congruent cells for same- and
  different-source pairs, as NIST's and the NFI's CMC models) or a score model (kernel
  densities of the raw score, `lir`), bounded by ELUB (`lir`), with an interval from
  refits on firearms drawn with replacement, the trained range, and the lead threshold
  for a target false-lead rate. Saved as versioned JSON.
* `default_model`: the shipped model (``evidence/data``), fitted on the development data,
  with its training pairs and validation figures beside it.
* `cross_validate`, `validation_metrics`, `validate`: leave-one-firearm-out LRs, Cllr,
  Cllr-min, Cllr-cal, rates of misleading evidence, Tippett / ECE / reliability plots.

>>> from balllink.evidence import default_model
>>> m = default_model()
>>> m.kind, m.lead_log10_lr >= 0, m.bounds[0] < 0 < m.bounds[1]
('count', True, True)
"""

from __future__ import annotations

import functools
from importlib import resources

from ._model import (
    FORMAT,
    Evidence,
    EvidenceArrays,
    LRModel,
    ModelMismatchError,
    config_fingerprint,
)
from ._pairs import PAIR_COLUMNS, Pairs, source_spacing_um
from ._validate import cross_validate, reliability, validate, validation_metrics

__all__ = [
    "DEFAULT_MODEL",
    "FORMAT",
    "PAIR_COLUMNS",
    "Evidence",
    "EvidenceArrays",
    "LRModel",
    "ModelMismatchError",
    "Pairs",
    "config_fingerprint",
    "cross_validate",
    "default_model",
    "reliability",
    "source_spacing_um",
    "validate",
    "validation_metrics",
]

#: File name of the shipped model inside ``balllink/evidence/data``.
DEFAULT_MODEL = "default-model.json"


@functools.cache
def default_model() -> LRModel:
    """The shipped LR model (read once; see ``balllink/evidence/data/README.md``)."""
    path = resources.files(__name__).joinpath("data", DEFAULT_MODEL)
    return LRModel.from_dict(__import__("json").loads(path.read_text(encoding="utf-8")), str(path))
