"""Batch scoring without a database: ``score`` (a CSV of pairs, resumable, in parallel)
and ``evaluate`` (every pair of a labelled folder)."""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import report
from .._files import csv_row
from ..comparison import compare_many
from ..evidence import source_spacing_um
from ..io import read_scan
from ..leads import default_threshold
from ..preprocessing import prepare_if_needed
from ._common import Bar, check_output, db_path, emit, read_truth

__all__ = ["Evaluation", "cmd_evaluate", "cmd_score", "evaluate_folder", "score_groups"]


_SCORE_COLUMNS = [
    "file_a",
    "file_b",
    "score",
    "cmc_count",
    "rotation_deg",
    "dy_um",
    "dx_um",
    "lead",
    "reason",
    "n_cells",
    "raw_score",
    "spacing_um",
    "log10_lr",
    "lr_lo",
    "lr_hi",
    "lr_in_range",
]


def _row(a, b, cmp=None, reason="", spacing=None) -> dict:
    if cmp is None:
        return dict.fromkeys(_SCORE_COLUMNS, "") | {"file_a": a, "file_b": b, "reason": reason}
    dy, dx = cmp.translation_um
    ev = cmp.evidence
    lr = {"log10_lr": "", "lr_lo": "", "lr_hi": "", "lr_in_range": ""}
    if ev is not None:
        lr = {
            "log10_lr": f"{ev.log10_lr:.4f}",
            "lr_lo": f"{ev.interval[0]:.4f}",
            "lr_hi": f"{ev.interval[1]:.4f}",
            "lr_in_range": int(ev.in_range),
        }
    return lr | {
        "file_a": a,
        "file_b": b,
        "score": f"{float(cmp.score):.6g}",
        "cmc_count": int(cmp.cmc_count),
        "rotation_deg": f"{float(cmp.rotation_deg):.3f}",
        "dy_um": f"{float(dy):.2f}",
        "dx_um": f"{float(dx):.2f}",
        "lead": int(bool(cmp.lead)),
        "reason": cmp.reason or "",
        "n_cells": sum(d.n_cells for d in cmp.directions),
        "raw_score": f"{float(cmp.raw_score):.6g}",
        "spacing_um": "" if spacing is None else f"{spacing:g}",
    }


def _load_prepared(path):
    return prepare_if_needed(read_scan(path))


def _score_group(job):
    """Worker: one query file against its partner files (compare_many)."""
    a, partners = job
    try:
        qa = _load_prepared(a)
    except Exception as exc:
        return [_row(a, b, reason=f"{a}: {exc}") for b in partners]
    preps, rows, ok = [], {}, []
    for b in partners:
        try:
            preps.append(_load_prepared(b))
            ok.append(b)
        except Exception as exc:
            rows[b] = _row(a, b, reason=f"{b}: {exc}")
    for b, p, cmp in zip(ok, preps, compare_many(qa, preps) if preps else []):
        rows[b] = _row(a, b, cmp, spacing=max(source_spacing_um(qa), source_spacing_um(p)))
    return [rows[b] for b in partners]


def score_groups(groups, jobs: int, on_rows, bar) -> None:
    """Compare each ``(query file, [partner files])`` group (in ``jobs`` processes), handing
    the rows (`_SCORE_COLUMNS`) of each group to ``on_rows`` as it finishes."""
    _run_groups(groups, jobs, on_rows, bar)


def _run_groups(groups, jobs: int, on_rows, bar) -> None:
    total = sum(len(p) for _, p in groups)
    done = 0
    if jobs <= 1 or len(groups) <= 1:
        for g in groups:
            rows = _score_group(g)
            on_rows(rows)
            done += len(rows)
            bar(done, total)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_score_group, g) for g in groups]
        for fut in as_completed(futures):
            rows = fut.result()
            on_rows(rows)
            done += len(rows)
            bar(done, total)


def _read_pairs(path) -> list[tuple[str, str]]:
    """The pairs of a pairs CSV (header and ``#`` comments skipped); a row without exactly
    two files, text that is not UTF-8, or a file without a pair is an error naming it."""
    pairs = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            for r in reader:
                if not r or r[0].startswith("#"):
                    continue
                if not pairs and r[:2] in (["file_a", "file_b"], ["a", "b"]):
                    continue
                if len(r) < 2 or not r[0].strip() or not r[1].strip():
                    raise ValueError(
                        f"{path}, line {reader.line_num}: a row needs two files, got {r}"
                    )
                if any(c.strip() for c in r[2:]):
                    raise ValueError(
                        f"{path}, line {reader.line_num}: {len(r)} cells, a row holds two "
                        f"files (file_a,file_b), got {r}"
                    )
                pairs.append((r[0].strip(), r[1].strip()))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    if not pairs:
        raise ValueError(f"{path}: no pairs to score (a row per pair: file_a,file_b)")
    return pairs


def _unique(pairs) -> list[tuple[str, str]]:
    """The pairs in order, each unordered pair once.

    Examples
    --------
    >>> _unique([("a", "b"), ("b", "a"), ("a", "b"), ("a", "c")])
    [('a', 'b'), ('a', 'c')]
    """
    seen, out = set(), []
    for a, b in pairs:
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append((a, b))
    return out


def cmd_score(args) -> int:
    base = Path(args.pairs).parent

    def resolve(f):
        return str(f if Path(f).is_absolute() or Path(f).exists() else base / f)

    all_pairs = _read_pairs(args.pairs)
    pairs = _unique(all_pairs)
    inputs = [args.pairs, *{resolve(f) for p in pairs for f in p}]
    out = check_output(args.output, db=db_path(args), inputs=inputs)
    done = set()
    if out.exists():
        with open(out, newline="") as fh:
            done = {
                frozenset((r["file_a"], r["file_b"]))
                for r in csv.DictReader(fh)
                if r.get("score") or r.get("file_a") == r.get("file_b")
            }
    todo = [p for p in pairs if frozenset(csv_row(p)) not in done]  # as written
    selfs = [(a, b) for a, b in todo if resolve(a) == resolve(b)]
    groups: dict[str, list[str]] = defaultdict(list)
    for a, b in todo:
        if (a, b) not in selfs:
            groups[a].append(b)

    jobs = [(resolve(a), [resolve(b) for b in bs]) for a, bs in groups.items()]
    names = {resolve(f): f for p in todo for f in p}
    new_file = not out.exists() or out.stat().st_size == 0
    failed = 0
    with open(out, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_SCORE_COLUMNS)
        if new_file:
            writer.writeheader()

        def on_rows(rows, named=False):
            nonlocal failed
            for r in rows:
                if not named:
                    r["file_a"], r["file_b"] = names[r["file_a"]], names[r["file_b"]]
                failed += not r["score"]
                writer.writerow(csv_row(r))
            fh.flush()

        on_rows([_row(a, b, reason=f"{a}: a file paired with itself") for a, b in selfs], True)

        bar = Bar("score", not args.json)
        _run_groups(jobs, args.jobs, on_rows, bar)
        bar.close()
    summary = {
        "pairs": len(pairs),
        "duplicates_dropped": len(all_pairs) - len(pairs),
        "already_scored": len(pairs) - len(todo),
        "scored": len(todo) - failed,
        "failed": failed,
        "output": str(out),
    }
    emit(
        args,
        summary,
        f"{summary['scored']} pair(s) scored, {summary['already_scored']} already in {out}, "
        f"{failed} failed, {summary['duplicates_dropped']} duplicate pair(s) dropped",
    )
    return 1 if failed else 0


class Evaluation(NamedTuple):
    """Every pair of a labelled folder scored: ``scores[i, j]`` of ``names[i]``, ``names[j]``
    (NaN where the comparison failed); ``labels`` are the firearms."""

    names: list[str]
    labels: list[str]
    scores: np.ndarray


def evaluate_folder(folder, truth: dict[str, str], *, jobs: int = 1, progress=None) -> Evaluation:
    """Score every pair of the labelled scans of ``folder`` (symmetric score matrix)."""
    names = sorted(f for f in truth if (Path(folder) / f).exists())
    paths = [str(Path(folder) / f) for f in names]
    groups = [(paths[i], paths[i + 1 :]) for i in range(len(paths) - 1)]
    index = {p: i for i, p in enumerate(paths)}
    scores = np.full((len(paths), len(paths)), np.nan)

    def on_rows(rows):
        for r in rows:
            i, j = index[r["file_a"]], index[r["file_b"]]
            scores[i, j] = scores[j, i] = float(r["score"]) if r["score"] else np.nan

    _run_groups(groups, jobs, on_rows, progress or (lambda d, t: None))
    return Evaluation(names, [truth[n] for n in names], scores)


def cmd_evaluate(args) -> int:
    truth = read_truth(args.truth)
    bar = Bar("evaluate", not args.json)
    names, labels, scores = evaluate_folder(args.folder, truth, jobs=args.jobs, progress=bar)
    bar.close()
    if len(names) < 2:
        print(f"balllink evaluate: fewer than 2 labelled scans in {args.folder}", file=sys.stderr)
        return 2
    failed = int(np.isnan(scores[np.triu_indices(len(names), 1)]).sum())
    scores = np.nan_to_num(scores, nan=-np.inf)
    thr = args.threshold if args.threshold is not None else default_threshold()
    summary = report.evaluation_summary(names, labels, scores, thr)
    summary["failed_pairs"] = failed
    outdir = Path(args.output)
    for name in ("scores.csv", "histogram.png", "evaluation.json"):
        check_output(outdir / name, db=db_path(args), inputs=[args.truth])
    outdir.mkdir(parents=True, exist_ok=True)
    iu = np.triu_indices(len(names), 1)
    same = np.asarray(labels)[iu[0]] == np.asarray(labels)[iu[1]]
    pair_scores = scores[iu]
    fin = np.isfinite(pair_scores)
    report.score_histogram(
        pair_scores[fin], same[fin], thr, outdir / "histogram.png", title=str(args.folder)
    )
    with open(outdir / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_a", "file_b", "score", "same_firearm"])
        for i, j in zip(*iu):
            row = [names[i], names[j], f"{scores[i, j]:.6g}", int(labels[i] == labels[j])]
            w.writerow(csv_row(row))
    summary["histogram"] = str(outdir / "histogram.png")
    report.write_json(summary, outdir / "evaluation.json")
    text = "\n".join(
        f"{k:16s} {v:.4g}" if isinstance(v, float) else f"{k:16s} {v}" for k, v in summary.items()
    )
    emit(args, summary, text)
    return 1 if failed else 0
