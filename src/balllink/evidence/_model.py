"""`LRModel`: a likelihood-ratio model fitted on labelled comparisons, its bounds, its
validated range, its lead threshold from a target false-lead rate, and its file."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._files import atomic_write, jsonable
from ..errors import BalllinkError
from ._count import fit_law, log10_pmf, stack_laws
from ._pairs import Pairs
from ._score import GRID, kde_curve, kde_tail

__all__ = [
    "FORMAT",
    "Evidence",
    "EvidenceArrays",
    "LRModel",
    "ModelMismatchError",
    "config_fingerprint",
]

log = logging.getLogger(__name__)

#: Format tag of a saved model.
FORMAT = "balllink-lr-model-1"
#: CMCConfig fields that do not change what a comparison counts (left out of the check).
_NOT_COUNTED = ("lead_threshold", "min_area_mm2", "min_cells")
#: Share of the interval: 5th to 95th percentile of the resampled models.
INTERVAL = (5.0, 95.0)
#: A source spacing up to this factor coarser than the coarsest trained one is in range.
#: Finer sources are in range: preprocessing resamples them (anti-aliased) to the compared
#: grid, so their comparisons see the data the model was trained on; a coarser source
#: has lost detail the training scans had.
_SPACING_TOL = 1.05
#: Compared cells up to this factor above the largest trained count are in range.
_CELLS_ABOVE = 1.25


def _made_by() -> str:
    from .. import __version__

    return f"balllink {__version__}"


class ModelMismatchError(BalllinkError, ValueError):
    """A comparison made with another configuration than the model was fitted on."""


def config_fingerprint(config) -> dict[str, Any]:
    """The configuration fields that change a comparison's counts (everything in
    `CMCConfig` except the lead threshold and the minimum-evidence gates).

    Examples
    --------
    >>> import balllink as bl
    >>> fp = config_fingerprint(bl.CMCConfig())
    >>> fp["correlation_threshold"], "lead_threshold" in fp
    (0.4, False)
    """
    d = dataclasses.asdict(config)
    return {k: jsonable(v) for k, v in sorted(d.items()) if k not in _NOT_COUNTED}


@dataclass(frozen=True)
class Evidence:
    """The likelihood ratio of one comparison.

    Attributes
    ----------
    log10_lr : float
        log10 of the LR: how many times more probable the observed similarity is if both
        casings were fired by one firearm than by two different firearms. Bounded to
        ``bounds``.
    interval : (float, float)
        log10 of a 90 % interval of the LR (5th and 95th percentile over models refitted on
        firearms drawn with replacement from the training data), within ``bounds``.
    bounds : (float, float)
        log10 of the empirical lower and upper bounds (ELUB) the training data support.
    in_range : bool
        False when the comparison is unlike the training data (``reason`` says how): the
        LR is then an extrapolation and must not be reported without that caveat.
    reason : str
    model : str
        Identifier of the model (`LRModel.id`).
    """

    log10_lr: float
    interval: tuple[float, float]
    bounds: tuple[float, float]
    in_range: bool
    reason: str
    model: str

    @property
    def lr(self) -> float:
        return float(10.0**self.log10_lr)

    @property
    def lr_interval(self) -> tuple[float, float]:
        return (float(10.0 ** self.interval[0]), float(10.0 ** self.interval[1]))

    @property
    def at_bound(self) -> bool:
        """True when the LR is held at a bound: the data support no stronger value."""
        return self.log10_lr <= self.bounds[0] or self.log10_lr >= self.bounds[1]

    def as_dict(self) -> dict:
        return {
            "lr": self.lr,
            "log10_lr": self.log10_lr,
            "log10_interval": list(self.interval),
            "log10_bounds": list(self.bounds),
            "at_bound": self.at_bound,
            "in_range": self.in_range,
            "reason": self.reason,
            "model": self.model,
        }


class EvidenceArrays(NamedTuple):
    """`LRModel.evaluate` for many comparisons: arrays of one value per comparison."""

    log10_lr: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    in_range: np.ndarray
    reason: list[str]


def _in_sets(pairs: Pairs, sets, cls_mask: np.ndarray, name: str, what: str) -> np.ndarray:
    """Pairs of the named sets (all pairs when ``sets`` is None); at least 2 of the class."""
    if sets is None:
        return np.ones(len(pairs), bool)
    use = np.isin(pairs.set.astype(str), [str(x) for x in sets])
    if (cls_mask & use).sum() < 2:
        raise ValueError(f"{name} {list(sets)} hold fewer than 2 {what}-source pairs")
    return use


def _weights(pairs: Pairs, rng: np.random.Generator | None) -> np.ndarray:
    """Per-pair multiplicity when firearms are drawn with replacement (all 1 without)."""
    if rng is None:
        return np.ones(len(pairs))
    guns = pairs.firearms
    drawn = np.bincount(rng.integers(0, len(guns), len(guns)), minlength=len(guns))
    m = dict(zip(guns, drawn))
    ma = np.array([m[f] for f in pairs.firearm_a], float)
    mb = np.array([m[f] for f in pairs.firearm_b], float)
    return np.where(pairs.same, ma, ma * mb)


@dataclass(frozen=True)
class LRModel:
    """A likelihood-ratio model of comparisons, fitted by `LRModel.fit`.

    ``kind="count"``: congruent cells ``k`` of ``n`` compared cells, a beta-binomial law
    for same-source pairs and a beta-binomial (or binomial) law for different-source pairs
    (NIST's and the NFI's CMC models); LR = P(k | n, same) / P(k | n, different).
    ``kind="score"``: the raw score, with kernel density estimates of both classes
    (`lir`'s ``KDECalibrator``). Both are bounded by the empirical lower and upper bounds
    of the training data (ELUB, `lir`), carry an interval from refits on firearms drawn
    with replacement, and say when a comparison lies outside the trained range.

    ``lead_log10_lr`` is the smallest threshold whose false-lead rate per
    different-source comparison, predicted by the fitted different-source law, is at most
    ``target_rate``; a comparison is a lead when its (bounded) LR reaches it.
    """

    kind: str
    params: dict = field(repr=False)
    bounds: tuple[float, float]
    config: dict = field(repr=False)
    ranges: dict = field(repr=False)
    rate_table: tuple[tuple[float, float], ...] = field(repr=False)
    target_rate: float = 1e-4
    lead_log10_lr: float = 0.0
    predicted_rate: float = math.nan
    training: dict = field(default_factory=dict, repr=False)
    validation: dict = field(default_factory=dict, repr=False)
    version: str = ""

    # ---- fitting -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        pairs: Pairs,
        kind: str = "count",
        *,
        config=None,
        target_rate: float = 1e-4,
        n_boot: int = 200,
        seed: int = 0,
        different: str = "betabinom",
        same: str = "auto",
        different_sets: Sequence[str] | None = None,
        same_sets: Sequence[str] | None = None,
        training: dict | None = None,
    ) -> LRModel:
        """Fit a model on labelled pairs.

        Parameters
        ----------
        pairs : Pairs
            Same- and different-source comparisons, made with ``config``.
        kind : {"count", "score"}
        config : CMCConfig, optional
            The configuration the comparisons were made with (default ``CMCConfig()``).
        target_rate : float
            False leads per different-source comparison the lead threshold allows.
        n_boot : int
            Refits on firearms drawn with replacement, for the interval.
        different : {"betabinom", "binomial", "mixture", "auto"}
            The count model's different-source law (`fit_law`).
        same : {"auto", "betabinom", "binomial", "mixture"}
            The count model's same-source law: by default two beta-binomial components
            when they describe the pairs better (by BIC) than one.
        different_sets : list of str, optional
            Fit the different-source law (and predict the false-lead rate) from the pairs
            of these sets only (``Pairs.set``), e.g. real scans when simulated
            non-matches agree less by chance than real ones; all pairs by default. The
            same-source law and the bounds use every pair.
        same_sets : list of str, optional
            Fit the same-source law from the pairs of these sets only. The bounds (ELUB)
            are always computed on every pair, so a set left out of the laws (e.g. poorly
            marking firearms) still caps how strong an LR may be.
        training : dict, optional
            Provenance kept with the model (sets, files, hashes).

        Examples
        --------
        >>> from scipy import stats
        >>> rng = np.random.default_rng(1)
        >>> guns = np.repeat(np.arange(20), 30).astype(str)
        >>> same = np.tile(np.r_[np.ones(5, bool), np.zeros(25, bool)], 20)
        >>> n = np.full(600, 120)
        >>> k = np.where(same, stats.betabinom.rvs(120, 8, 8, size=600, random_state=rng),
        ...              stats.binom.rvs(120, 0.01, size=600, random_state=rng))
        >>> other = np.where(same, guns, "x" + guns)
        >>> m = LRModel.fit(Pairs.build(k=k, n=n, same=same, firearm_a=guns, firearm_b=other),
        ...                 n_boot=20)
        >>> e = m.evaluate([60, 1], [120, 120])
        >>> bool(e.log10_lr[0] > 2 and e.log10_lr[1] < -2), bool(e.in_range.all())
        (True, True)
        """
        from ..comparison import CMCConfig

        if kind not in ("count", "score"):
            raise ValueError(f"kind must be 'count' or 'score', got {kind!r}")
        if pairs.n_same < 2 or pairs.n_different < 2:
            raise ValueError(
                f"fitting an LR model needs at least 2 same-source and 2 different-source "
                f"pairs, got {pairs.n_same} and {pairs.n_different}"
            )
        if not 0 < target_rate < 1:
            raise ValueError(f"target_rate must be in (0, 1), got {target_rate}")
        if kind == "score" and not np.isfinite(pairs.raw).all():
            raise ValueError("a score model needs the raw score of every pair")
        cfg = config if config is not None else CMCConfig()
        use_d = _in_sets(pairs, different_sets, ~pairs.same, "different_sets", "different")
        use_s = _in_sets(pairs, same_sets, pairs.same, "same_sets", "same")
        rng = np.random.default_rng(seed)
        use = (use_s & pairs.same) | (use_d & ~pairs.same)
        fits = [cls._fit_core(pairs, kind, None, different, use, same)]
        fits += [
            cls._fit_core(pairs, kind, rng, different, use, same, fits[0])
            for _ in range(int(n_boot))
        ]
        params = {
            "point": fits[0],
            "boot": fits[1:],
            "different_family": different,
            "same_family": same,
        }
        spacing = pairs.spacing_um[np.isfinite(pairs.spacing_um)]
        ranges = {
            "n_cells": [int(pairs.n.min()), int(pairs.n.max())],
            "spacing_um": [float(spacing.min()), float(spacing.max())] if len(spacing) else [],
        }
        model = cls(
            kind=kind, params=params, bounds=(0.0, 0.0), config=config_fingerprint(cfg),
            ranges=ranges, rate_table=(), training=dict(training or {}),
        )  # fmt: skip
        # bounds: ELUB on the training data's own LRs (lir), at least one pair each way
        from lir.algorithms.bayeserror import elub

        raw_llr = model._point(pairs.k, pairs.n, pairs.raw)
        lo, hi = elub(np.array(raw_llr, float), pairs.same.astype(int), add_misleading=1)
        model = dataclasses.replace(model, bounds=(float(lo), float(hi)))
        table = model._rate_table(pairs.take(pairs.same | use_d))
        model = dataclasses.replace(model, rate_table=table)
        summary = {
            "n_pairs": len(pairs),
            "n_same": pairs.n_same,
            "n_different": pairs.n_different,
            "n_firearms": len(pairs.firearms),
            "sets": sorted(set(map(str, pairs.set)) - {""}),
            "n_boot": int(n_boot),
            "seed": int(seed),
            "different_sets": None if different_sets is None else list(different_sets),
            "same_sets": None if same_sets is None else list(same_sets),
        }
        model = dataclasses.replace(model, training={**summary, **model.training})
        return model.with_target(target_rate)

    @staticmethod
    def _fit_core(
        pairs: Pairs,
        kind: str,
        rng,
        different: str,
        use: np.ndarray,
        same_family: str,
        point: dict | None = None,
    ) -> dict:
        w = _weights(pairs, rng)
        s, d = pairs.same & use, ~pairs.same & use
        w = np.where(s | d, w, 0.0)
        if kind == "count":
            if w[s].sum() == 0 or w[d].sum() == 0:  # a draw without one class: all pairs
                w = (s | d).astype(float)
            warm = (point or {}).get("same"), (point or {}).get("different")
            law_s = fit_law(pairs.k[s], pairs.n[s], w[s], family=same_family, start=warm[0])
            law_d = fit_law(pairs.k[d], pairs.n[d], w[d], family=different, start=warm[1])
            return {"same": law_s, "different": law_d}
        if w[s].sum() == 0 or w[d].sum() == 0:
            w = (s | d).astype(float)
        curve = kde_curve(pairs.raw, pairs.same, w.astype(int))
        return {"curve": [round(float(v), 6) for v in curve]}

    # ---- evaluation --------------------------------------------------------------------
    def _point(self, k, n, raw) -> np.ndarray:
        p = self.params["point"]
        if self.kind == "count":
            return log10_pmf(k, n, p["same"]) - log10_pmf(k, n, p["different"])
        return np.interp(np.asarray(raw, float), GRID, np.asarray(p["curve"], float))

    def _boot(self, k, n, raw) -> np.ndarray:
        boot = self.params["boot"]
        if not boot:
            return self._point(k, n, raw)[None, :]
        if self.kind == "count":
            s, d = self._boot_arrays
            return log10_pmf(k, n, s) - log10_pmf(k, n, d)
        curves = self._boot_arrays
        x = np.asarray(raw, float)
        return np.stack([np.interp(x, GRID, c) for c in curves])

    @functools.cached_property
    def _boot_arrays(self):
        """The resampled models as arrays, built once per model (every LR evaluates them)."""
        boot = self.params["boot"]
        if self.kind == "count":
            return stack_laws([b["same"] for b in boot]), stack_laws([b["different"] for b in boot])
        return np.array([b["curve"] for b in boot])

    def evaluate(self, k, n, raw=None, spacing_um=None) -> EvidenceArrays:
        """Bounded log10 LRs, their intervals and range flags for many comparisons.

        ``k`` congruent cells of ``n`` compared (both directions), ``raw`` the raw scores
        (needed by a score model), ``spacing_um`` the source spacings (`source_spacing_um`).
        A comparison with no compared cell has LR 1 and is out of range.
        """
        k = np.atleast_1d(np.asarray(k, np.int64))
        n = np.atleast_1d(np.asarray(n, np.int64))
        m = len(k)
        raw = np.full(m, np.nan) if raw is None else np.atleast_1d(np.asarray(raw, float))
        sp = (
            np.full(m, np.nan)
            if spacing_um is None
            else np.atleast_1d(np.asarray(spacing_um, float))
        )
        if not (len(n) == len(raw) == len(sp) == m):
            raise ValueError("evaluate: k, n, raw and spacing_um must have one value each")
        if self.kind == "score" and not np.isfinite(raw[n > 0]).all():
            raise ValueError("evaluate: a score model needs the raw score of every comparison")
        lo_b, hi_b = self.bounds
        empty = n <= 0
        safe_n = np.where(empty, 1, n)
        safe_k = np.clip(k, 0, safe_n)
        point = np.where(empty, 0.0, self._point(safe_k, safe_n, np.nan_to_num(raw)))
        boot = self._boot(safe_k, safe_n, np.nan_to_num(raw))
        lo, hi = np.percentile(boot, INTERVAL, axis=0)
        # the interval always holds the point estimate, and everything stays in bounds
        lo, hi = np.minimum(lo, point), np.maximum(hi, point)
        clip = lambda v: np.where(empty, 0.0, np.clip(v, lo_b, hi_b))  # noqa: E731
        reasons = self._range_reasons(n, sp)
        in_range = np.array([r == "" for r in reasons])
        return EvidenceArrays(clip(point), clip(lo), clip(hi), in_range, reasons)

    def _range_reasons(self, n: np.ndarray, spacing: np.ndarray) -> list[str]:
        n_lo, n_hi = self.ranges["n_cells"]
        sp = self.ranges.get("spacing_um") or []
        out = []
        for ni, si in zip(n.tolist(), spacing.tolist()):
            why = []
            if ni <= 0:
                why.append("no cell was compared")
            elif ni < n_lo:
                why.append(f"{ni} cells compared, fewer than in any training pair ({n_lo})")
            elif ni > n_hi * _CELLS_ABOVE:
                why.append(f"{ni} cells compared, far more than in any training pair ({n_hi})")
            if sp and math.isfinite(si) and si > sp[1] * _SPACING_TOL:
                why.append(f"measured at {si:g} µm, coarser than the training scans ({sp[1]:g} µm)")
            out.append("; ".join(why))
        return out

    def check_config(self, config) -> None:
        """Raise `ModelMismatchError` naming the fields where ``config`` differs from the
        configuration the model was fitted on."""
        fp = config_fingerprint(config)
        diff = [
            f"{k}={fp.get(k)!r} (model: {v!r})" for k, v in self.config.items() if fp.get(k, v) != v
        ]
        diff += [f"{k}={fp[k]!r} (unknown to the model)" for k in fp if k not in self.config]
        if diff:
            raise ModelMismatchError(
                f"LR model {self.id} was fitted on comparisons made with another "
                f"configuration: {', '.join(diff)}; fit a model on comparisons made with "
                "this one (balllink calibrate)"
            )

    def evidence(self, comparison, spacing_um: float | None = None) -> Evidence:
        """The `Evidence` of one `Comparison` (its configuration must be the model's).

        Examples
        --------
        >>> import balllink as bl
        >>> from balllink.evidence import default_model
        >>> c = bl.Comparison(0, 0.0, 0.0, (0.0, 0.0), False, (), np.zeros(0),
        ...                   config=bl.CMCConfig(), raw_score=0.0)
        >>> e = default_model().evidence(c)
        >>> e.lr, e.in_range, e.reason
        (1.0, False, 'no cell was compared')
        """
        self.check_config(comparison.config)
        n = sum(d.n_cells for d in comparison.directions)
        raw = comparison.raw_score if math.isfinite(comparison.raw_score) else 0.0
        e = self.evaluate(
            [comparison.cmc_count], [n], [raw], [spacing_um if spacing_um else math.nan]
        )
        reason = e.reason[0]
        if comparison.reason.startswith("too little evidence"):
            reason = "; ".join(x for x in (comparison.reason, reason) if x)
        return Evidence(
            float(e.log10_lr[0]), (float(e.lo[0]), float(e.hi[0])),
            (float(self.bounds[0]), float(self.bounds[1])), reason == "", reason, self.id,
        )  # fmt: skip

    def is_lead(self, log10_lr) -> np.ndarray | bool:
        """Whether an LR reaches the lead threshold (``log10_lr >= lead_log10_lr``)."""
        return np.asarray(log10_lr) >= self.lead_log10_lr - 1e-12

    # ---- the threshold -----------------------------------------------------------------
    def _rate_table(self, pairs: Pairs) -> tuple[tuple[float, float], ...]:
        """(log10 t, predicted false-lead rate of ``LR >= t``) on a grid from 0 to the upper
        bound, from the fitted different-source law over the training pairs' cell counts."""
        lo_b, hi_b = self.bounds
        # from LR 10^0.05: a lead needs evidence for the same source, never LR 1 (no evidence)
        grid = np.unique(np.r_[np.arange(0.05, hi_b, 0.05), max(hi_b, 0.05)])
        d = ~pairs.same
        if self.kind == "count":
            law = self.params["point"]["different"]
            ns, counts = np.unique(pairs.n[d], return_counts=True)
            rates = np.zeros(len(grid))
            for ni, ci in zip(ns.tolist(), counts.tolist()):
                ks = np.arange(ni + 1)
                llr = np.clip(self._point(ks, np.full(ni + 1, ni), None), lo_b, hi_b)
                p0 = 10.0 ** log10_pmf(ks, np.full(ni + 1, ni), law)
                rates += ci * np.array([p0[llr >= t - 1e-12].sum() for t in grid])
            rates /= counts.sum()
        else:
            mass = kde_tail(pairs.raw, pairs.same)
            llr = np.clip(np.asarray(self.params["point"]["curve"], float), lo_b, hi_b)
            rates = np.array([mass[llr >= t - 1e-12].sum() for t in grid])
        return tuple((round(float(t), 4), float(r)) for t, r in zip(grid, rates))

    def false_lead_rate(self, log10_t: float) -> float:
        """The predicted false-lead rate per different-source comparison of ``LR >= 10**t``
        (from the rate table: the rate at the nearest tabled threshold not above ``t``)."""
        best = 1.0
        for t, r in self.rate_table:
            if t <= log10_t + 1e-9:
                best = r
        return best

    def with_target(self, target_rate: float) -> LRModel:
        """This model with the lead threshold set for a target false-lead rate: the smallest
        tabled threshold (above LR 1) whose predicted rate is at most the target; the
        upper bound when none is (``predicted_rate`` then says what is reached)."""
        if not 0 < target_rate < 1:
            raise ValueError(f"target_rate must be in (0, 1), got {target_rate}")
        chosen = None
        for t, r in self.rate_table:
            if r <= target_rate:
                chosen = (t, r)
                break
        if chosen is None:
            chosen = self.rate_table[-1] if self.rate_table else (self.bounds[1], math.nan)
            log.warning(
                "LR model: no threshold up to the upper bound (LR %.3g) reaches a false-lead "
                "rate of %g (predicted %g at the bound)", 10 ** chosen[0], target_rate, chosen[1],
            )  # fmt: skip
        return dataclasses.replace(
            self, target_rate=float(target_rate), lead_log10_lr=float(chosen[0]),
            predicted_rate=float(chosen[1]),
        )  # fmt: skip

    # ---- identity and files ------------------------------------------------------------
    def as_dict(self) -> dict:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "version": self.version,
            "params": self.params,
            "bounds_log10": list(self.bounds),
            "config": self.config,
            "ranges": self.ranges,
            "rate_table": [list(r) for r in self.rate_table],
            "target_rate": self.target_rate,
            "lead_log10_lr": self.lead_log10_lr,
            "predicted_rate": self.predicted_rate,
            "training": self.training,
            "validation": self.validation,
            "made_by": _made_by(),
        }

    @functools.cached_property
    def id(self) -> str:
        """``kind-`` and 12 hex digits of the hash of what the model computes: its laws,
        bounds, ranges, configuration and rate table. Not its provenance notes, and not the
        target rate and threshold chosen from the table (`with_target` keeps the id: the
        LRs are the same; the threshold is a policy the database records on its own)."""
        skip = (
            "training",
            "validation",
            "version",
            "target_rate",
            "lead_log10_lr",
            "predicted_rate",
        )
        core = {k: v for k, v in self.as_dict().items() if k not in skip}
        blob = json.dumps(jsonable(core), sort_keys=True, separators=(",", ":"))
        return f"{self.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON, atomically."""
        path = Path(path)
        text = json.dumps(jsonable({**self.as_dict(), "id": self.id}), indent=1, sort_keys=True)
        atomic_write(path, (text + "\n").encode())
        return path

    @classmethod
    def from_dict(cls, d: dict, source: str = "model") -> LRModel:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{source}: not a balllink LR model (format {FORMAT!r} expected)")
        try:
            m = cls(
                kind=d["kind"], params=d["params"], bounds=tuple(d["bounds_log10"]),
                config=d["config"], ranges=d["ranges"],
                rate_table=tuple(tuple(r) for r in d["rate_table"]),
                target_rate=float(d["target_rate"]), lead_log10_lr=float(d["lead_log10_lr"]),
                predicted_rate=float(d["predicted_rate"]), training=d.get("training", {}),
                validation=d.get("validation", {}), version=d.get("version", ""),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: incomplete LR model ({exc!r})") from exc
        if m.kind not in ("count", "score"):
            raise ValueError(f"{source}: unknown model kind {m.kind!r}")
        if "id" in d and d["id"] != m.id:
            raise ValueError(
                f"{source}: the model's content does not match its id {d['id']} (edited?)"
            )
        return m

    @classmethod
    def load(cls, path: str | Path) -> LRModel:
        """Read a model written by `save`; a damaged or edited file is refused."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the LR model ({exc})") from exc
        return cls.from_dict(d, str(path))
