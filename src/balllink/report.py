"""Reports: the HTML lead report, lead exports (CSV, JSON, GeoJSON) and evaluation figures.

The lead report is one self-contained HTML file (PNG figures embedded as base64): both
exhibits' metadata and preparation flags, the scores, the two surfaces, ``b`` aligned onto
``a`` (mirrored first when it was compared as its mirror image) and overlaid with the
congruent cells outlined, the per-cell table and the candidate list of ``a``.

A report presents what it is given: it compares nothing and writes nothing to the audit
trail (the caller runs the comparison and records the export).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._files import csv_row
from ._grid import warp_weighted
from ._lr_text import lr_html, lr_line, lr_rows, lr_text
from ._scan import Scan
from .comparison import Comparison
from .leads import Lead, SearchResult, flags_text

__all__ = [
    "align_to",
    "evaluation_summary",
    "lead_report",
    "leads_csv",
    "leads_geojson",
    "overlay_figure",
    "overlay_rgb",
    "score_histogram",
]

log = logging.getLogger(__name__)


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def align_to(a: Scan, b: Scan, rotation_deg: float, translation_um) -> np.ndarray:
    """Heights of ``b`` resampled on ``a``'s grid after the pose of a `Comparison`.

    The pose convention is `balllink.compare`'s: ``b`` rotated counter-clockwise (as
    displayed, row 0 on top) by ``rotation_deg`` about its array centre, then moved by
    ``translation_um = (dy, dx)`` µm with both array centres superposed, lands on ``a``.
    Points with no data are NaN.

    Examples
    --------
    >>> z = np.arange(16.0).reshape(4, 4)
    >>> s = Scan(z, spacing_um=1.0)
    >>> bool(np.allclose(align_to(s, s, 0.0, (0.0, 0.0)), z))
    True
    """
    if rotation_deg is None or not np.isfinite(rotation_deg):
        rotation_deg, translation_um = 0.0, (0.0, 0.0)
    dy, dx = (0.0 if v is None or not np.isfinite(v) else float(v) for v in translation_um)
    sy, sx = b.spacing_um
    ay, ax = a.spacing_um
    # (row, column) pixel coordinates, row 0 on top: counter-clockwise as displayed
    t = np.deg2rad(rotation_deg)
    cb = np.array([(b.shape[0] - 1) / 2.0, (b.shape[1] - 1) / 2.0])
    ca = np.array([(a.shape[0] - 1) / 2.0, (a.shape[1] - 1) / 2.0])
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    forward = np.diag([sy / ay, sx / ax]) @ rot  # b pixel -> a pixel, about the centres
    inverse = np.linalg.inv(forward)
    offset = cb - inverse @ (ca + np.array([dy / ay, dx / ax]))
    valid = b.mask.astype(np.float64)
    out = warp_weighted(
        np.where(b.mask, b.heights, 0.0), valid, inverse, offset, output_shape=a.shape
    )
    return np.where(out.weight > 0.5, out.values, np.nan).astype(np.float32)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _matplotlib().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _norm(z: np.ndarray) -> np.ndarray:
    lo, hi = np.nanpercentile(z, [1, 99]) if np.isfinite(z).any() else (0.0, 1.0)
    out = (z - lo) / (hi - lo if hi > lo else 1.0)
    return np.clip(out, 0, 1)


def _mirror(scan: Scan) -> Scan:
    """The scan's mirror image as `balllink.compare` makes it (rows reversed, ``flipud``)."""
    return scan.replace(heights=np.flipud(scan.heights), mask=np.flipud(scan.mask))


def overlay_rgb(a: Scan, b: Scan, comparison: Comparison) -> np.ndarray:
    """The overlay image (rows, cols, 3) in [0, 1]: ``a`` in magenta, ``b`` posed by the
    comparison (mirrored first when ``comparison.mirrored``) in green, so that surfaces
    that agree look grey; white where neither has data.

    Examples
    --------
    >>> from balllink.comparison import CMCConfig, Comparison
    >>> z = np.random.default_rng(0).normal(size=(20, 20))
    >>> s = Scan(z, spacing_um=1.0)
    >>> pose = Comparison(0, 0.0, 0.0, (0.0, 0.0), False, (), np.zeros(0), config=CMCConfig())
    >>> rgb = overlay_rgb(s, s, pose)
    >>> rgb.shape, bool(np.allclose(rgb[..., 0], rgb[..., 1]))
    ((20, 20, 3), True)
    """
    b_posed = _mirror(b) if comparison.mirrored else b
    aligned = align_to(a, b_posed, comparison.rotation_deg, comparison.translation_um)
    za, zb = _norm(a.masked_heights()), _norm(aligned)
    rgb = np.ones((*a.shape, 3))
    both = np.isfinite(za) & np.isfinite(zb)
    rgb[..., 0] = np.where(np.isfinite(za), za, 1.0)
    rgb[..., 2] = np.where(np.isfinite(za), za, 1.0)
    rgb[..., 1] = np.where(np.isfinite(zb), zb, 1.0)
    rgb[~np.isfinite(za) & ~np.isfinite(zb)] = 1.0
    rgb[np.isfinite(za) & ~both, 1] = 0.85
    return rgb


def overlay_figure(a: Scan, b: Scan, comparison: Comparison, *, title: str = ""):
    """A matplotlib figure: ``a``, ``b``, and ``b`` aligned on ``a`` overlaid (a in
    magenta, aligned b in green: agreement looks grey, see `overlay_rgb`) with congruent
    cells outlined.

    When ``comparison.mirrored``, ``b`` is mirrored before the pose is applied (the pose
    places the mirrored ``b`` on ``a``)."""
    plt = _matplotlib()
    from matplotlib.patches import Rectangle

    mirrored = bool(comparison.mirrored)
    rgb = overlay_rgb(a, b, comparison)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, z, name in ((axes[0], a.masked_heights(), "a"), (axes[1], b.masked_heights(), "b")):
        im = ax.imshow(z, cmap="viridis")
        ax.set_title(f"{name}: {Path((a.source if name == 'a' else b.source) or '').name}")
        fig.colorbar(im, ax=ax, fraction=0.046, label="µm")
    axes[2].imshow(rgb)
    axes[2].set_title(
        f"b{' mirrored and' if mirrored else ''} aligned on a "
        f"(θ={comparison.rotation_deg:.1f}°); congruent cells outlined"
    )
    cells = comparison.cells
    if len(cells):
        gy, gx = comparison.config.grid
        h, w = a.shape[0] / gy, a.shape[1] / gx
        sy, sx = a.spacing_um
        for c in cells[(cells["direction"] == 0) & cells["congruent"]]:
            cy, cx = c["center_y_um"] / sy, c["center_x_um"] / sx
            axes[2].add_patch(
                Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, ec="red", lw=1.5)
            )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def _table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, float):
                v = f"{v:.4g}"
            elif isinstance(v, tuple):
                v = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
            cells.append(f"<td>{html.escape('' if v is None else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


_CSS = """
body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}
th{background:#eee} .lead{color:#a00;font-weight:bold}
.flags{background:#fff4d6;border:1px solid #e0b040;padding:0.5em 1em}
"""


def _flags_html(lead: Lead) -> str:
    """The warning box of a lead whose exhibits were flagged by their preparation."""
    if not lead.flagged:
        return ""
    items = []
    for side, eid, flags in (("a", lead.a, lead.flags_a), ("b", lead.b, lead.flags_b)):
        for f in flags:
            items.append(
                f"<li>exhibit {side} ({eid}): <code>{html.escape(f.code)}</code>"
                f"{' — ' + html.escape(f.message) if f.message else ''}</li>"
            )
    return (
        '<div class="flags"><strong>Preparation flags.</strong> This lead rests on a scan '
        "whose preparation noted problems; weigh the score with them in mind."
        f"<ul>{''.join(items)}</ul></div>"
    )


def lead_report(
    db,
    lead: Lead | int,
    comparison: Comparison,
    candidates: SearchResult,
    path=None,
) -> str:
    """The HTML report of one lead; written to ``path`` when given, returned as text.

    The report presents what it is given: it runs no comparison and writes nothing to the
    audit trail (record the export with `LeadDatabase.log_event`).

    Parameters
    ----------
    db : LeadDatabase
        Read for the two exhibits, their stored scans and the lead threshold.
    lead : Lead or int
        A lead from `LeadDatabase.leads` (or its id).
    comparison : Comparison
        The comparison of exhibit ``a``'s stored scan with ``b``'s (e.g.
        ``bl.compare(db.scan(lead.a), db.scan(lead.b))``): its scores, pose and per-cell
        table are shown beside the stored ones.
    candidates : SearchResult
        The candidate list of exhibit ``a`` (e.g. ``db.candidates(lead.a, k=10)``, which
        reads only).
    path : str or Path, optional
        Output ``.html`` file.
    """
    if not isinstance(lead, Lead):
        lead = db.lead(lead)
    cmp, cands = comparison, candidates
    ea, eb = db.exhibit(lead.a), db.exhibit(lead.b)
    sa, sb = db.scan(lead.a), db.scan(lead.b)
    fig = overlay_figure(sa, sb, cmp, title=f"lead {lead.id}: exhibit {lead.a} vs {lead.b}")
    png = _png(fig)
    meta_rows = []
    for name in ("case_id", "agency", "kind", "make", "model", "serial", "occurred", "lat"):
        meta_rows.append({"field": name, "a": getattr(ea, name), "b": getattr(eb, name)})
    meta_rows += [
        {"field": "lon", "a": ea.lon, "b": eb.lon},
        {"field": "caliber", "a": ea.caliber, "b": eb.caliber},
        {"field": "notes", "a": ea.notes, "b": eb.notes},
        {"field": "source", "a": ea.source, "b": eb.source},
        {"field": "source sha256", "a": ea.source_hash[:16], "b": eb.source_hash[:16]},
        {"field": "exhibit id", "a": ea.id, "b": eb.id},
        {
            "field": "preparation flags",
            "a": flags_text(ea.flags) or "none",
            "b": flags_text(eb.flags) or "none",
        },
    ]
    p_chance = next((c.p_chance for c in cands if c.exhibit_id == lead.b), None)
    score_rows = [
        *lr_rows(lead, db.lr_model),
        {"measure": "legacy score (stored)", "value": lead.score},
        {"measure": "CMC count (stored)", "value": lead.cmc_count},
        {"measure": "legacy score (recomputed)", "value": float(cmp.score)},
        {"measure": "CMC count (recomputed)", "value": int(cmp.cmc_count)},
        {"measure": "rotation of b (deg)", "value": float(cmp.rotation_deg)},
        {"measure": "translation of b (dy, dx) µm", "value": tuple(cmp.translation_um)},
        {"measure": "b compared as its mirror image (stored)", "value": _yes_no(lead.mirrored)},
        {"measure": "b compared as its mirror image (recomputed)", "value": _yes_no(cmp.mirrored)},
        {"measure": "legacy score threshold (pairs without LR)", "value": db.threshold},
        {"measure": "P(score this high by chance)", "value": p_chance},
        {"measure": "cross-jurisdiction", "value": lead.cross_jurisdiction},
        {"measure": "status", "value": f"{lead.status} {lead.examiner or ''}".strip()},
    ]
    cell_rows = [{n: _py(c[n]) for n in cmp.cells.dtype.names} for c in cmp.cells]
    cand_rows = [
        {
            "rank": c.rank,
            "exhibit": c.exhibit_id,
            "case": c.case_id,
            "agency": c.agency,
            "score": c.score,
            "CMC": c.cmc_count,
            "rotation°": c.rotation_deg,
            "p_chance": c.p_chance,
            "LR": lr_text(c.log10_lr, c.lr_interval, c.lr_in_range, c.lr_reason, c.lr_at_bound),
            "lead": "yes" if c.lead else "",
            "mirrored": "yes" if c.mirrored else "",
            "flags": flags_text(c.flags),
        }
        for c in cands
    ]
    title = f"balllink lead {lead.id}: exhibit {lead.a} ({ea.agency}) ↔ {lead.b} ({eb.agency})"
    text = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="lead">{"Cross-jurisdiction lead" if lead.cross_jurisdiction else "Lead"}:
{html.escape(lr_line(lead))}legacy score {lead.score:.4g}, {lead.cmc_count} congruent cells.
Examiner review required; this is an investigative lead, not an identification.</p>
{lr_html(lead)}
{_flags_html(lead)}
<h2>Exhibits</h2>{_table(meta_rows, ["field", "a", "b"])}
<h2>Scores</h2>{_table(score_rows, ["measure", "value"])}
<h2>Surfaces aligned and overlaid</h2>
<img alt="aligned overlay" src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Candidate list of exhibit {lead.a}</h2>
<p>{cands.n_in_scope} exhibits in scope, {cands.n_rescored} rescored.</p>
{_table(cand_rows)}
<h2>Per-cell table</h2>{_table(cell_rows)}
<p><small>Generated by balllink; database {html.escape(str(db.path))}.</small></p>
</body></html>
"""
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _yes_no(v) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def leads_geojson(db, leads: Sequence[Lead]) -> dict:
    """Leads as a GeoJSON FeatureCollection of lines between the two incident locations.

    Leads whose exhibits lack a location are left out (their count is in
    ``properties.n_without_location`` of the collection).
    """
    feats, missing = [], 0
    for lead in leads:
        ea, eb = db.exhibit(lead.a), db.exhibit(lead.b)
        if None in (ea.lat, ea.lon, eb.lat, eb.lon):
            missing += 1
            continue
        feats.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[ea.lon, ea.lat], [eb.lon, eb.lat]],
                },
                "properties": {
                    **lead.as_row(),
                    "flags_a": [f.as_dict() for f in lead.flags_a],
                    "flags_b": [f.as_dict() for f in lead.flags_b],
                    "occurred_a": ea.occurred,
                    "occurred_b": eb.occurred,
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": feats,
        "properties": {"n_without_location": missing},
    }


def leads_csv(leads: Sequence[Lead], fh) -> None:
    """Write lead rows as CSV to an open text file.

    One column per `Lead` field plus ``flagged``; ``flags_a`` / ``flags_b`` hold each
    exhibit's preparation flags as ``code: message; code: message`` (empty when none);
    the LR as ``log10_lr``, ``lr_lo``, ``lr_hi`` (its 90 % interval, LR units),
    ``lr_in_range``, ``lr_reason``, ``lr_at_bound``, ``lr_model`` (empty without one).
    Cells are neutralised against formula injection (`balllink._files.csv_safe`).

    Examples
    --------
    >>> import io
    >>> from balllink.leads import Flag
    >>> lead = Lead(1, 2, 3, 9.5, 12, "PD1", "PD2", "c1", "c2", True, "new", None, None,
    ...             "2025-01-01", False, (), (Flag("small_area", "1.1 mm²"),))
    >>> buf = io.StringIO()
    >>> leads_csv([lead], buf)
    >>> row = dict(zip(*[r.split(",") for r in buf.getvalue().splitlines()]))
    >>> row["flags_b"], row["flagged"], row["log10_lr"], row["lr_lo"]
    ('small_area: 1.1 mm²', 'True', '', '')
    """
    names = [f for f in Lead.__dataclass_fields__ if f != "lr_interval"]
    names[names.index("log10_lr") + 1 : names.index("log10_lr") + 1] = ["lr_lo", "lr_hi"]
    writer = csv.DictWriter(fh, fieldnames=[*names, "flagged"])
    writer.writeheader()
    for lead in leads:
        row = {k: None if v != v else v for k, v in lead.as_row().items()}  # NaN: empty
        writer.writerow(csv_row(row))


def score_histogram(scores, same, threshold: float, path, *, title: str = "") -> None:
    """Histogram PNG of KM and KNM scores with the lead threshold marked."""
    plt = _matplotlib()
    scores = np.asarray(scores, dtype=float)
    same = np.asarray(same, dtype=bool)
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(scores[~same], bins=bins, alpha=0.6, label=f"different gun (n={(~same).sum()})")
    ax.hist(scores[same], bins=bins, alpha=0.6, label=f"same gun (n={same.sum()})")
    ax.axvline(threshold, color="k", ls="--", label=f"lead threshold {threshold:g}")
    ax.set_xlabel("score")
    ax.set_ylabel("pairs")
    ax.set_yscale("log")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def evaluation_summary(names, labels, scores: np.ndarray, threshold: float) -> dict:
    """Quality figures from a symmetric score matrix over labelled scans.

    Parameters
    ----------
    names : sequence of str
    labels : sequence
        Firearm of each scan.
    scores : ndarray (n, n)
        Pair scores (the diagonal is ignored).
    threshold : float
        Lead threshold.

    Returns
    -------
    dict
        ``roc_auc``, ``fpr``/``fnr`` and counts at the threshold, ``variance_ratio``,
        ``top1``/``top10`` (share of queries with a same-gun scan ranked first / in the
        top 10, over queries that have one), KM/KNM score ranges.

    Examples
    --------
    >>> s = np.array([[0, 9, 1], [9, 0, 2], [1, 2, 0]], float)
    >>> r = evaluation_summary(["x", "y", "z"], [1, 1, 2], s, 5.0)
    >>> r["roc_auc"], r["false_positives"], r["top1"]
    (1.0, 0, 1.0)
    """
    from . import metrics

    labels = np.asarray(labels)
    n = len(names)
    iu = np.triu_indices(n, 1)
    pair_scores = scores[iu]
    same = labels[iu[0]] == labels[iu[1]]
    out: dict = {"n_scans": n, "n_km": int(same.sum()), "n_knm": int((~same).sum())}
    if same.any() and (~same).any():
        out["roc_auc"] = metrics.roc_auc(pair_scores, same)
        if same.sum() >= 2 and (~same).sum() >= 2:
            out["variance_ratio"] = metrics.variance_ratio(pair_scores, same)
        out["km_min"] = float(pair_scores[same].min())
        out["knm_max"] = float(pair_scores[~same].max())
    er = metrics.error_rates(pair_scores, same, threshold)
    out.update(
        threshold=float(threshold),
        false_positives=er.false_positives,
        false_negatives=er.false_negatives,
        fpr=er.fpr,
        fnr=er.fnr,
    )
    top1 = top10 = queries = 0
    for i in range(n):
        mates = labels == labels[i]
        mates[i] = False
        if not mates.any():
            continue
        queries += 1
        s = scores[i].astype(float).copy()
        s[i] = -np.inf
        order = np.argsort(-s, kind="stable")
        top1 += bool(mates[order[0]])
        top10 += bool(mates[order[:10]].any())
    out["queries"] = queries
    out["top1"] = top1 / queries if queries else float("nan")
    out["top10"] = top10 / queries if queries else float("nan")
    return out


def write_json(obj, path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=str))
