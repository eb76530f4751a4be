"""Likelihood ratios of a database: the model in force, the target false-lead rate, the
``lr`` rows (derived from each comparison's features and the model file) and their check.

The model in force is a JSON file ``models/<id>.json`` in the database folder named by
the ``lr_model`` setting; until one is chosen the shipped default applies, and its file is
copied in (and the setting written, audited) the first time LRs are stored, so that the
database keeps the model its LRs were computed with. ``lead_rate`` (absent: the model's
own target) sets the lead threshold through `balllink.evidence.LRModel.with_target`.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._files import file_mode_in, file_sha256, private_dir
from .._scan import Scan
from ..errors import DatabaseError
from ..evidence import LRModel, ModelMismatchError, default_model, source_spacing_um
from ._audit import AuditTrail
from ._schema import Sql
from ._settings import read_setting, write_setting

__all__ = ["CHECK_SAMPLE", "Features", "LRBook", "features_of"]

log = logging.getLogger(__name__)

#: At most this many ``lr`` rows are recomputed by `LRBook.check` (all when fewer).
CHECK_SAMPLE = 20000
#: Rows evaluated at once (the interval evaluates every resampled model on each row).
_CHUNK = 4096
#: Stored and recomputed LRs agree within this (log10 units).
_TOL = 1e-6


class Features(NamedTuple):
    """What the LR of one comparison is computed from (None: not reported)."""

    n_cells: int | None
    raw_score: float | None
    spacing_um: float | None


def features_of(comparison, a: Scan, b: Scan) -> Features:
    """The LR features of a comparison of ``a`` with ``b``: cells compared in both
    directions, the raw score (None when not finite) and the coarser source spacing of the
    two scans; all None when the comparer reports no direction (no cell counts: such a
    pair keeps the legacy score rule).

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> s = bl.Scan(np.zeros((40, 40)), spacing_um=6.25)
    >>> c = bl.Comparison(0, 0.0, 0.0, (0.0, 0.0), False, (), np.zeros(0),
    ...                   config=bl.CMCConfig(), raw_score=0.01)
    >>> features_of(c, s, s)
    Features(n_cells=None, raw_score=None, spacing_um=None)
    """
    dirs = getattr(comparison, "directions", ()) or ()
    if not dirs:
        return Features(None, None, None)
    n = int(sum(d.n_cells for d in dirs))
    raw = getattr(comparison, "raw_score", math.nan)
    raw = float(raw) if raw is not None and math.isfinite(raw) else None
    return Features(n, raw, max(source_spacing_um(a), source_spacing_um(b)))


class LRBook:
    """The LR model in force in one database and its ``lr`` rows."""

    def __init__(self, sql: Sql, audit: AuditTrail, folder: Path):
        self._sql = sql
        self._audit = audit
        self.folder = Path(folder) / "models"
        self._cache: dict[str, LRModel] = {}
        self.session_rate: float | None = None

    # ---- the model in force --------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Id of the model in force (the stored file's; the shipped one until chosen)."""
        return read_setting(self._sql(), "lr_model") or default_model().id

    def base(self) -> LRModel:
        """The model in force as stored (its own target)."""
        mid = read_setting(self._sql(), "lr_model")
        if mid is None:
            return default_model()
        if mid not in self._cache:
            path = self.folder / f"{mid}.json"
            if not path.exists():
                raise DatabaseError(
                    f"{self._sql.label}: the LR model in force ({mid}) has no file {path}; "
                    "restore the models folder from a backup, or choose a model again "
                    "(balllink calibrate)"
                )
            try:
                model = LRModel.load(path)
            except ValueError as exc:
                raise DatabaseError(f"{self._sql.label}: {exc}") from None
            if model.id != mid:
                raise DatabaseError(f"{path}: holds model {model.id}, the database names {mid}")
            self._cache[mid] = model
        return self._cache[mid]

    @property
    def lead_rate(self) -> float | None:
        """The target false-lead rate set for this database (None: the model's own)."""
        if self.session_rate is not None:
            return self.session_rate
        stored = read_setting(self._sql(), "lead_rate")
        return None if stored is None else float(stored)

    def model(self) -> LRModel:
        """The model in force with the database's target rate applied."""
        base = self.base()
        rate = self.lead_rate
        return base if rate is None or rate == base.target_rate else base.with_target(rate)

    def lead_log10(self) -> float:
        return float(self.model().lead_log10_lr)

    # ---- changes (audited) ---------------------------------------------------------
    def set_lead_rate(self, rate: float) -> None:
        rate = float(rate)
        model = self.base().with_target(rate)  # checks 0 < rate < 1
        with self._sql.tx("set the target false-lead rate") as con:
            write_setting(con, "lead_rate", repr(rate))
            self._audit.append(
                "lead_rate", covers=[("settings", ["lead_rate"])], lead_rate=rate,
                model=self.model_id, lead_log10_lr=model.lead_log10_lr,
                predicted_rate=model.predicted_rate,
            )  # fmt: skip
        self.session_rate = None

    def _store_file(self, model: LRModel) -> Path:
        private_dir(self.folder, like=self.folder.parent)
        path = self.folder / f"{model.id}.json"
        if not path.exists():
            model.save(path)  # atomic
            os.chmod(path, file_mode_in(self.folder))
        return path

    def pin(self, con) -> None:
        """Keep the shipped model in the database before its first LRs are stored (inside
        that transaction): its file is copied in and ``lr_model`` names it (audited)."""
        if read_setting(con, "lr_model") is not None:
            return
        model = default_model()
        path = self._store_file(model)
        write_setting(con, "lr_model", model.id)
        self._audit.append(
            "lr_model", covers=[("settings", ["lr_model"])], model=model.id,
            kind=model.kind, sha256=file_sha256(path), note="the shipped model, first use",
        )  # fmt: skip

    def use(self, model: LRModel, *, action: str = "use_model", **detail) -> int:
        """Store ``model``'s file, make it the model in force and compute its ``lr`` rows
        for every comparison with features (one transaction, audited). Returns the rows."""
        self._sql.require_writable("choose the LR model")
        path = self._store_file(model)
        self._cache[model.id] = model
        with self._sql.tx("choose the LR model") as con:
            write_setting(con, "lr_model", model.id)
            n = self._fill(con, model)
            self._audit.append(
                action, covers=[("settings", ["lr_model"])], model=model.id,
                kind=model.kind, sha256=file_sha256(path), lr_rows=n, **detail,
            )  # fmt: skip
        return n

    def _fill(self, con, model: LRModel) -> int:
        rows = con.execute(
            "SELECT id, cmc_count, n_cells, raw_score, source_spacing_um FROM comparisons "
            "WHERE n_cells IS NOT NULL ORDER BY id"
        ).fetchall()
        if model.kind == "score":
            rows = [r for r in rows if r["raw_score"] is not None]
        con.execute("DELETE FROM lr WHERE model=?", (model.id,))
        for start in range(0, len(rows), _CHUNK):
            self.insert(con, model, rows[start : start + _CHUNK])
        return len(rows)

    # ---- rows ----------------------------------------------------------------------
    @staticmethod
    def evaluate(model: LRModel, rows: Sequence):
        """`LRModel.evaluate` of comparison rows (``cmc_count``, ``n_cells``, ...)."""
        k = [r["cmc_count"] for r in rows]
        n = [r["n_cells"] for r in rows]
        raw = [r["raw_score"] if r["raw_score"] is not None else math.nan for r in rows]
        sp = [r["source_spacing_um"] or math.nan for r in rows]
        return model.evaluate(k, n, raw, sp)

    def insert(self, con, model: LRModel, rows: Sequence) -> np.ndarray:
        """Compute and store the ``lr`` rows of comparison rows (inside a transaction);
        returns their log10 LRs."""
        if not rows:
            return np.zeros(0)
        e = self.evaluate(model, rows)
        con.executemany(
            "INSERT OR REPLACE INTO lr VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (r["id"], model.id, float(e.log10_lr[i]), float(e.lo[i]), float(e.hi[i]),
                 int(bool(e.in_range[i])), e.reason[i])
                for i, r in enumerate(rows)
            ],
        )  # fmt: skip
        return e.log10_lr

    def applies(self, model: LRModel, comparison) -> bool:
        """Whether the model was fitted on comparisons made as this one was."""
        config = getattr(comparison, "config", None)
        if config is None:
            return True
        try:
            model.check_config(config)
        except ModelMismatchError as exc:
            log.warning("no LR stored: %s", exc)
            return False
        return True

    # ---- check ---------------------------------------------------------------------
    def check(self, problems: list[str], warnings: list[str], counts: dict) -> None:
        """Recompute a sample of the ``lr`` rows of the model in force (all when at most
        `CHECK_SAMPLE`); a row that differs, or a comparison with features and no row,
        is reported."""
        con = self._sql()
        mid = read_setting(con, "lr_model")
        counts["lr_rows"] = con.execute("SELECT count(*) FROM lr").fetchone()[0]
        if mid is None:
            if counts["lr_rows"]:
                problems.append("LR rows are stored but no LR model is in force (lr_model)")
            return
        try:
            model = self.base()
        except DatabaseError as exc:
            problems.append(f"LR model: {exc}")
            return
        ids = [
            r[0]
            for r in con.execute(
                "SELECT c.id FROM comparisons c LEFT JOIN lr l ON l.comparison = c.id "
                "AND l.model = ? WHERE c.n_cells IS NOT NULL AND l.comparison IS NULL",
                (mid,),
            )
        ]
        if ids:
            warnings.append(
                f"{len(ids)} comparison(s) with LR features have no LR under model {mid} "
                f"(e.g. {ids[:5]}; made with another configuration?): the score rule decides"
            )
        rows = con.execute(
            "SELECT c.id, c.cmc_count, c.n_cells, c.raw_score, c.source_spacing_um, "
            "l.log10_lr, l.lo, l.hi, l.in_range, l.reason FROM lr l JOIN comparisons c "
            "ON c.id = l.comparison WHERE l.model = ?",
            (mid,),
        ).fetchall()
        if len(rows) > CHECK_SAMPLE:
            rows = random.Random(0).sample(rows, CHECK_SAMPLE)
        counts["lr_rows_checked"] = len(rows)
        bad = []
        for start in range(0, len(rows), _CHUNK):
            part = rows[start : start + _CHUNK]
            e = self.evaluate(model, part)
            for i, r in enumerate(part):
                same = (
                    abs(r["log10_lr"] - e.log10_lr[i]) <= _TOL
                    and abs(r["lo"] - e.lo[i]) <= _TOL
                    and abs(r["hi"] - e.hi[i]) <= _TOL
                    and bool(r["in_range"]) == bool(e.in_range[i])
                    and r["reason"] == e.reason[i]
                )
                if not same:
                    bad.append(r["id"])
        if bad:
            problems.append(
                f"{len(bad)} LR row(s) of model {mid} differ from their recomputation from "
                f"the comparison features and the model file (comparisons {sorted(bad)[:10]})"
            )
