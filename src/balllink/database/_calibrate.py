"""The LR side of `LeadDatabase`: the model in force, the target false-lead rate, a model
chosen from a file, and the calibration of a model on the database's own labelled
exhibits (`EvidenceMethods`, mixed into `LeadDatabase`)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._files import file_sha256
from ..errors import DatabaseError
from ..evidence import LRModel, Pairs, validate

__all__ = ["Calibration", "EvidenceMethods", "read_truth_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """What `LeadDatabase.calibrate` did: the model now in force, its leave-one-firearm-out
    validation (``validation``: Cllr, Cllr-min, rates of misleading evidence, plots) and
    where it was written."""

    model: LRModel
    validation: dict = field(repr=False)
    folder: Path
    model_file: Path
    n_exhibits: int
    n_firearms: int
    n_same: int
    n_different: int
    n_compared: int
    truth_sha256: str | None = None

    def as_dict(self) -> dict:
        v = self.validation
        keys = ("cllr", "cllr_min", "cllr_cal", "misleading_same", "misleading_different")
        return {
            "model": self.model.id,
            "kind": self.model.kind,
            "model_file": str(self.model_file),
            "validation_folder": str(self.folder),
            "plots": v.get("plots", []),
            **{k: v.get(k) for k in keys},
            "lead_log10_lr": self.model.lead_log10_lr,
            "target_rate": self.model.target_rate,
            "predicted_rate": self.model.predicted_rate,
            "bounds_log10": list(self.model.bounds),
            "n_exhibits": self.n_exhibits,
            "n_firearms": self.n_firearms,
            "n_same": self.n_same,
            "n_different": self.n_different,
            "n_compared": self.n_compared,
            "truth_sha256": self.truth_sha256,
        }


def read_truth_file(path) -> dict[str, str]:
    """``file`` (or ``case_id``) -> ``firearm`` from a truth CSV; errors name the file
    and the line.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "truth.csv")
    >>> _ = open(p, "w").write("file,firearm\\na.x3p,g1\\nb.x3p,g1\\n")
    >>> read_truth_file(p)
    {'a.x3p': 'g1', 'b.x3p': 'g1'}
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            key = "file" if "file" in cols else "case_id" if "case_id" in cols else None
            if key is None or "firearm" not in cols:
                raise DatabaseError(
                    f"{path}: a truth file needs the columns 'file' (or 'case_id') and "
                    f"'firearm'; found {cols}"
                )
            out: dict[str, str] = {}
            for r in reader:
                name, gun = (r.get(key) or "").strip(), (r.get("firearm") or "").strip()
                if not name or not gun:
                    raise DatabaseError(f"{path}, line {reader.line_num}: empty {key} or firearm")
                if name in out and out[name] != gun:
                    raise DatabaseError(
                        f"{path}, line {reader.line_num}: {name} given twice with "
                        f"different firearms ({out[name]}, {gun})"
                    )
                out[name] = gun
    except (OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"{path}: cannot read the truth file ({exc})") from None
    return out


class EvidenceMethods:
    """Likelihood-ratio methods of `LeadDatabase` (see the class docstring there)."""

    @property
    def lr_model(self) -> LRModel:
        """The LR model in force, with the database's target false-lead rate applied
        (``lead_log10_lr`` is the lead threshold; the shipped model until one is chosen).

        Examples
        --------
        >>> import tempfile
        >>> from balllink.database import LeadDatabase
        >>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/l.db") as db:
        ...     m = db.lr_model
        ...     db.set_lead_rate(m.target_rate / 10)
        ...     bool(db.lr_model.lead_log10_lr >= m.lead_log10_lr)
        True
        """
        return self._lr.model()

    @property
    def lr_model_id(self) -> str:
        """Id of the stored model in force (the key of its ``lr`` rows)."""
        return self._lr.model_id

    def set_lead_rate(self, rate: float) -> None:
        """Set the target false-lead rate per different-source comparison (audited): the
        lead threshold becomes the smallest LR whose predicted rate is at most ``rate``
        (`balllink.evidence.LRModel.with_target`); a smaller rate gives fewer leads."""
        self._lr.set_lead_rate(rate)

    def use_model(self, model_or_path) -> LRModel:
        """Make an LR model (an `LRModel` or its JSON file) the one in force: its file is
        stored under ``models/``, the ``lr`` rows of every comparison with LR features are
        computed, and the change is audited with the model id and the file's sha256.
        Returns the model with the database's target rate applied."""
        self._sql.require_writable("choose the LR model")
        if isinstance(model_or_path, LRModel):
            model = model_or_path
        else:
            try:
                model = LRModel.load(model_or_path)
            except ValueError as exc:
                raise DatabaseError(str(exc)) from None
        with self._lock:
            self._lr.use(
                model, source=None if isinstance(model_or_path, LRModel) else str(model_or_path)
            )
        return self.lr_model

    def calibrate(
        self,
        truth,
        *,
        kind: str = "count",
        target_rate: float | None = None,
        folder=None,
        n_boot: int = 200,
        progress: Callable[[int, int], None] | None = None,
    ) -> Calibration:
        """Fit an LR model on the database's labelled exhibits, validate it and use it.

        Every pair of labelled exhibits is a training pair: stored comparisons with LR
        features are reused, pairs never compared are compared now and stored as an
        ingest stores them (audited); pairs stored without features are compared again
        in memory. The model is validated leave-one-firearm-out
        (`balllink.evidence.validate`; ``validation.json`` and plots in ``folder``,
        default ``models/<id>-validation``), then made the model in force (`use_model`;
        audited as ``calibrate`` with the truth file's sha256, the pair counts and Cllr).

        Parameters
        ----------
        truth : path or mapping
            A CSV with columns ``file,firearm`` (``file`` = the base name of an exhibit's
            source, or its case number) or a mapping exhibit id -> firearm.
        kind : {"count", "score"}
        target_rate : float, optional
            Target false-lead rate (default: the database's, else 1e-4).
        n_boot : int
            Refits for the LR interval.

        Raises
        ------
        DatabaseError
            Read-only database, exhibits of the truth file not in the database (named),
            or fewer than 2 firearms with 2 exhibits each.
        """
        self._sql.require_writable("calibrate an LR model")
        digest = None
        if isinstance(truth, Mapping):
            labels = self._labels_by_id(truth)
        else:
            digest = file_sha256(truth) if Path(truth).is_file() else None
            labels = self._labels_by_name(read_truth_file(truth), truth)
        per_gun: dict[str, int] = {}
        for g in labels.values():
            per_gun[g] = per_gun.get(g, 0) + 1
        if sum(n >= 2 for n in per_gun.values()) < 2:
            raise DatabaseError(
                f"{self._sql.label}: calibration needs at least 2 firearms with 2 or more "
                f"exhibits each; the truth gives {dict(sorted(per_gun.items()))}"
            )
        pairs, config, n_new = self._training_pairs(labels, progress)
        rate = target_rate or self._lr.lead_rate or 1e-4
        training = {"source": "database calibration", "truth_sha256": digest}
        try:
            model = LRModel.fit(
                pairs, kind, config=config, target_rate=rate, n_boot=n_boot, training=training
            )
        except ValueError as exc:
            raise DatabaseError(f"{self._sql.label}: cannot calibrate: {exc}") from None
        out = Path(folder) if folder else self._lr.folder / f"{model.id}-validation"
        summary = validate(pairs, out, kind=kind, title=f"calibration {model.id}")
        keys = ("cllr", "cllr_min", "cllr_cal", "misleading_same", "misleading_different")
        figures = {k: summary[k] for k in keys}
        model = dataclasses.replace(model, validation={"leave_one_firearm_out": figures})
        with self._lock:
            self._lr.use(
                model, action="calibrate", truth_sha256=digest, n_exhibits=len(labels),
                n_firearms=len(per_gun), n_same=pairs.n_same, n_different=pairs.n_different,
                n_compared=n_new, validation=str(out), **figures,
            )  # fmt: skip
        return Calibration(
            model.with_target(rate), summary, out, self._lr.folder / f"{model.id}.json",
            len(labels), len(per_gun), pairs.n_same, pairs.n_different, n_new, digest,
        )  # fmt: skip

    # ---- helpers ---------------------------------------------------------------------
    def _labels_by_id(self, truth: Mapping) -> dict[int, str]:
        known = set(self._exhibits.ids("1", []))
        bad = sorted(str(k) for k in truth if int(k) not in known)
        if bad:
            raise DatabaseError(f"{self._sql.label}: no exhibit with id {', '.join(bad)}")
        return {int(k): str(v) for k, v in truth.items()}

    def _labels_by_name(self, names: dict[str, str], path) -> dict[int, str]:
        by: dict[str, list[int]] = {}
        for e in self._exhibits.select("1", []):
            keys = {e.case_id}
            if e.source:
                keys.add(Path(e.source).name)
            for k in keys:
                by.setdefault(k, []).append(e.id)
        unknown = sorted(n for n in names if n not in by)
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise DatabaseError(
                f"{path}: {len(unknown)} exhibit(s) not in the database {self._sql.label}: "
                f"{', '.join(unknown[:10])}{more} (file names are matched with the base name "
                "of each exhibit's source, or its case number)"
            )
        labels: dict[int, str] = {}
        for n, gun in names.items():
            for eid in by[n]:
                if labels.get(eid, gun) != gun:
                    raise DatabaseError(f"{path}: exhibit {eid} ({n}) given two firearms")
                labels[eid] = gun
        return labels

    def _training_pairs(self, labels: dict[int, str], progress):
        ids = sorted(labels)
        con = self._sql()
        q = ",".join("?" * len(ids))
        stored = {
            (r["a"], r["b"]): r
            for r in con.execute(
                f"SELECT * FROM comparisons WHERE a IN ({q}) AND b IN ({q})", ids + ids
            )
        }
        missing: dict[int, list[int]] = {}
        for a, b in itertools.combinations(ids, 2):
            if (a, b) not in stored:
                missing.setdefault(a, []).append(b)
        n_new = 0
        with self._lock:
            for done, (a, bs) in enumerate(sorted(missing.items()), start=1):
                n_new += len(self._ingester.add_comparisons(a, bs, why="calibrate"))
                if progress is not None:
                    progress(done, len(missing))
        rows = {
            (r["a"], r["b"]): r
            for r in con.execute(
                f"SELECT * FROM comparisons WHERE a IN ({q}) AND b IN ({q})", ids + ids
            )
        }
        feats = self._legacy_features([k for k, r in rows.items() if r["n_cells"] is None])
        k_, n_, raw, sp, fa, fb, na, nb = ([] for _ in range(8))
        for (a, b), r in sorted(rows.items()):
            f = feats.get((a, b)) or (r["cmc_count"], r["n_cells"], r["raw_score"],
                                      r["source_spacing_um"])  # fmt: skip
            if f[1] is None:
                continue
            k_.append(f[0])
            n_.append(f[1])
            raw.append(math.nan if f[2] is None else f[2])
            sp.append(f[3] or math.nan)
            fa.append(labels[a])
            fb.append(labels[b])
            na.append(str(a))
            nb.append(str(b))
        if not k_:
            raise DatabaseError(
                f"{self._sql.label}: no comparison of the labelled exhibits reports its "
                "compared cells (the database's comparer gives no cell counts): nothing to "
                "calibrate on"
            )
        pairs = Pairs.build(
            k=k_, n=n_, raw=raw, same=[x == y for x, y in zip(fa, fb)], firearm_a=fa,
            firearm_b=fb, spacing_um=sp, a=na, b=nb, set=["database"] * len(k_),
        )  # fmt: skip
        return pairs, self._compare_config(), n_new

    def _legacy_features(self, keys) -> dict:
        """Pairs stored before LR features were kept: compared again in memory."""
        from ._lr import features_of

        out = {}
        if keys:
            log.info("calibrate: %d pair(s) stored without LR features compared again", len(keys))
        for a, b in keys:
            sa, sb = self.scan(a), self.scan(b)
            (c,) = self._searcher.compare_many(sa, [sb])
            f = features_of(c, sa, sb)
            out[(a, b)] = (int(c.cmc_count), f.n_cells, f.raw_score, f.spacing_um)
        return out

    @staticmethod
    def _compare_config():
        """The configuration of the database's comparisons: the default `CMCConfig` (the
        database's comparer, `compare_many`, runs with it)."""
        from ..comparison import CMCConfig

        return CMCConfig()
