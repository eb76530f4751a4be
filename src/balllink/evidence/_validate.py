"""Validation of LR models: leave-one-firearm-out LRs, Cllr and its parts (`lir`), rates
of misleading evidence, the reliability curve, and the Tippett, empirical cross-entropy
and reliability plots written beside a JSON summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._files import atomic_write, jsonable
from ._model import LRModel
from ._pairs import Pairs

__all__ = ["cross_validate", "reliability", "validate", "validation_metrics"]

log = logging.getLogger(__name__)


def cross_validate(
    pairs: Pairs,
    kind: str = "count",
    *,
    progress: Callable[[int, int], None] | None = None,
    **fit_options,
) -> np.ndarray:
    """Bounded log10 LRs of every pair from models that never saw its firearm.

    Leave-one-firearm-out: for each firearm, a model is fitted on the pairs that involve
    neither it nor (for a different-source pair) nothing else is held out, and evaluates
    the pairs whose first firearm (in sorted order) is that firearm; so every pair is
    scored once, by a model fitted without one of its firearms and without the pair.

    Examples
    --------
    >>> from scipy import stats
    >>> rng = np.random.default_rng(2)
    >>> g = np.repeat(np.arange(8), 12).astype(str)
    >>> same = np.tile(np.r_[np.ones(4, bool), np.zeros(8, bool)], 8)
    >>> other = np.where(same, g, np.roll(g, 12))
    >>> k = np.where(same, stats.binom.rvs(100, 0.4, size=96, random_state=rng),
    ...              stats.binom.rvs(100, 0.02, size=96, random_state=rng))
    >>> llr = cross_validate(Pairs.build(k=k, n=np.full(96, 100), same=same, firearm_a=g,
    ...                                  firearm_b=other), n_boot=0)
    >>> bool((llr[same] > 0).all() and (llr[~same] < 0).all())
    True
    """
    first = np.where(pairs.firearm_a <= pairs.firearm_b, pairs.firearm_a, pairs.firearm_b)
    out = np.full(len(pairs), np.nan)
    guns = pairs.firearms
    fit_options.setdefault("n_boot", 0)
    for i, f in enumerate(guns):
        test = first == f
        if not test.any():
            continue
        train = (pairs.firearm_a != f) & (pairs.firearm_b != f)
        model = LRModel.fit(pairs.take(train), kind, **fit_options)
        sub = pairs.take(test)
        out[test] = model.evaluate(sub.k, sub.n, sub.raw).log10_lr
        if progress is not None:
            progress(i + 1, len(guns))
    return out


def validation_metrics(log10_lr, same, names: list[str] | None = None) -> dict:
    """Cllr, Cllr-min, Cllr-cal (`lir.metrics`), the rates of misleading evidence and the
    misleading pairs (by name when ``names`` are given).

    Examples
    --------
    >>> m = validation_metrics(np.array([2.0, 1.0, -2.0, -1.5]), np.array([1, 1, 0, 0], bool))
    >>> round(m["cllr"], 3), m["misleading_same"], m["misleading_different"]
    (0.053, 0.0, 0.0)
    """
    from lir.data.models import LLRData
    from lir.metrics import cllr, cllr_min

    llr = np.asarray(log10_lr, float)
    y = np.asarray(same, bool)
    data = LLRData(features=llr.copy(), labels=y.astype(int))
    c, cmin = cllr(data), cllr_min(data)
    mis_s = np.flatnonzero(y & (llr < 0))
    mis_d = np.flatnonzero(~y & (llr > 0))
    label = (lambda i: names[i]) if names is not None else (lambda i: int(i))
    return {
        "n_same": int(y.sum()),
        "n_different": int((~y).sum()),
        "cllr": float(c),
        "cllr_min": float(cmin),
        "cllr_cal": float(c - cmin),
        "misleading_same": float(len(mis_s) / max(1, y.sum())),
        "misleading_different": float(len(mis_d) / max(1, (~y).sum())),
        "misleading_same_pairs": [label(i) for i in mis_s],
        "misleading_different_pairs": [label(i) for i in mis_d],
        "log10_lr_same": _quantiles(llr[y]),
        "log10_lr_different": _quantiles(llr[~y]),
    }


def _quantiles(v: np.ndarray) -> dict:
    if len(v) == 0:
        return {}
    q = np.percentile(v, [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "median", "p95", "max"), map(float, q)))


def reliability(log10_lr, same, *, bins: int = 10, min_count: int = 10) -> dict:
    """The reliability (calibration) curve: posterior probability of same source
    predicted from the LR at the evaluation set's own prior odds, against the observed
    share of same-source pairs, in ``bins`` equal bins of the prediction.

    ``max_deviation`` is the largest |observed - predicted| over bins holding at least
    ``min_count`` pairs (the bins "where there is data").

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> llr = rng.normal(0, 1, 20000)
    >>> y = rng.random(20000) < 1 / (1 + 10.0 ** -llr)   # calibrated at prior odds 1
    >>> reliability(llr, y)["max_deviation"] < 0.05
    True
    """
    llr = np.asarray(log10_lr, float)
    y = np.asarray(same, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    prior = np.log10(max(n1, 1) / max(n0, 1))
    pred = 1.0 / (1.0 + 10.0 ** -(llr + prior))
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(pred, edges) - 1, 0, bins - 1)
    rows, dev = [], []
    for b in range(bins):
        sel = idx == b
        cnt = int(sel.sum())
        if cnt == 0:
            continue
        p, o = float(pred[sel].mean()), float(y[sel].mean())
        rows.append(
            {
                "bin": [float(edges[b]), float(edges[b + 1])],
                "count": cnt,
                "predicted": p,
                "observed": o,
            }
        )
        if cnt >= min_count:
            dev.append(abs(o - p))
    return {
        "prior_log10_odds": float(prior),
        "min_count": min_count,
        "bins": rows,
        "max_deviation": float(max(dev)) if dev else float("nan"),
    }


def _plots(llr: np.ndarray, y: np.ndarray, rel: dict, folder: Path, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lir.data.models import LLRData
    from lir.plotting.expected_calibration_error import plot_ece

    data = LLRData(features=llr.copy(), labels=y.astype(int))
    written = []
    for name, draw in (
        ("tippett.png", lambda ax: _draw_tippett(ax, llr, y)),
        ("ece.png", lambda ax: plot_ece(data, ax=ax)),
        ("reliability.png", lambda ax: _draw_reliability(ax, rel)),
    ):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        draw(ax)
        ax.set_title(f"{title}: {name[:-4]}")
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def _draw_tippett(ax, llr: np.ndarray, y: np.ndarray) -> None:
    """Tippett plot over one common LR axis (lir's draws each class only over its own
    range, so a class whose LRs all sit at a bound shows as a vertical stroke)."""
    x = np.linspace(llr.min() - 0.5, llr.max() + 0.5, 400)
    for sel, label, color in ((y, "same source (H1)", "b"), (~y, "different source (H2)", "r")):
        if sel.any():
            share = (llr[sel][None, :] >= x[:, None]).mean(axis=1) * 100
            ax.plot(x, share, color=color, label=f"{label}: LR >= x")
    ax.axvline(0, color="k", linestyle="--")
    ax.set_xlabel("log$_{10}$(LR)")
    ax.set_ylabel("share of pairs with LR at least x (%)")
    ax.legend()


def _draw_reliability(ax, rel: dict) -> None:
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    b = [r for r in rel["bins"]]
    ok = [r for r in b if r["count"] >= rel["min_count"]]
    ax.plot(
        [r["predicted"] for r in ok],
        [r["observed"] for r in ok],
        "o-",
        label=f"bins of >= {rel['min_count']} pairs",
    )
    few = [r for r in b if r["count"] < rel["min_count"]]
    if few:
        ax.plot(
            [r["predicted"] for r in few],
            [r["observed"] for r in few],
            "x",
            color="gray",
            label="fewer pairs",
        )
    ax.fill_between([0, 1], [-0.1, 0.9], [0.1, 1.1], color="C0", alpha=0.1, label="±0.1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(same source) at the set's prior odds")
    ax.set_ylabel("observed share of same-source pairs")
    ax.legend(loc="upper left")


def validate(
    pairs: Pairs,
    folder: str | Path,
    *,
    model: LRModel | None = None,
    kind: str = "count",
    title: str = "validation",
    progress: Callable[[int, int], None] | None = None,
    **fit_options,
) -> dict:
    """Validate LRs on labelled pairs and write ``validation.json`` plus ``tippett.png``,
    ``ece.png`` and ``reliability.png`` into ``folder``.

    With ``model`` the pairs are scored by that model (an external validation); without,
    by leave-one-firearm-out models of ``kind`` (`cross_validate`). Returns the summary
    written to the JSON.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model is None:
        llr = cross_validate(pairs, kind, progress=progress, **fit_options)
        how = {"scheme": "leave-one-firearm-out", "kind": kind, "options": fit_options}
    else:
        llr = model.evaluate(pairs.k, pairs.n, pairs.raw, pairs.spacing_um).log10_lr
        how = {"scheme": "fixed model", "model": model.id, "kind": model.kind}
    y = pairs.same.astype(bool)
    names = [f"{a}~{b}" if a or b else str(i) for i, (a, b) in enumerate(zip(pairs.a, pairs.b))]
    summary = {"title": title, "how": how, **validation_metrics(llr, y, names)}
    rel = reliability(llr, y)
    summary["reliability"] = rel
    summary["plots"] = _plots(llr, y, rel, folder, title)
    atomic_write(
        folder / "validation.json", (json.dumps(jsonable(summary), indent=1) + "\n").encode()
    )
    np.savetxt(folder / "log10_lr.txt", llr, fmt="%.6f")
    return summary
