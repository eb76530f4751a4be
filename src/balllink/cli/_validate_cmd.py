"""``balllink validate FOLDER --truth CSV``: how good the likelihood ratios are on a
labelled folder: Cllr, Cllr-min, Cllr-cal, rates of misleading evidence, Tippett,
empirical cross-entropy and reliability plots (`balllink.evidence.validate`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..evidence import LRModel, Pairs, default_model, validate
from ._batch import score_groups
from ._common import Bar, check_output, db_path, emit, read_truth

__all__ = ["cmd_validate", "labelled_pairs"]


def labelled_pairs(
    folder, truth: dict[str, str], *, jobs: int = 1, progress=None
) -> tuple[Pairs, list[str]]:
    """Compare every pair of the labelled scans of ``folder``; the pairs that compared, and
    one line per pair that failed."""
    names = sorted(f for f in truth if (Path(folder) / f).exists())
    paths = [str(Path(folder) / f) for f in names]
    name_of = dict(zip(paths, names))
    groups = [(paths[i], paths[i + 1 :]) for i in range(len(paths) - 1)]
    rows: list[dict] = []
    score_groups(groups, jobs, rows.extend, progress or (lambda d, t: None))
    ok = [r for r in rows if r["score"] != ""]
    failed = [f"{r['file_a']} ~ {r['file_b']}: {r['reason']}" for r in rows if r["score"] == ""]
    a = [name_of[r["file_a"]] for r in ok]
    b = [name_of[r["file_b"]] for r in ok]
    pairs = Pairs.build(
        k=[int(r["cmc_count"]) for r in ok], n=[int(r["n_cells"]) for r in ok],
        raw=[float(r["raw_score"]) for r in ok], same=[truth[x] == truth[y] for x, y in zip(a, b)],
        firearm_a=[truth[x] for x in a], firearm_b=[truth[y] for y in b],
        spacing_um=[float(r["spacing_um"] or "nan") for r in ok], a=a, b=b,
        set=[str(folder)] * len(ok),
    )  # fmt: skip
    return pairs, failed


def cmd_validate(args) -> int:
    if not args.pairs and not (args.folder and args.truth):
        print("balllink validate: give FOLDER and --truth CSV, or --pairs CSV", file=sys.stderr)
        return 2
    outdir = Path(args.output)
    inputs = [p for p in (args.truth, args.pairs) if p]
    for name in ("validation.json", "pairs.csv", "tippett.png", "ece.png", "reliability.png"):
        check_output(outdir / name, db=db_path(args), inputs=inputs)
    if args.pairs:
        pairs, failed = Pairs.from_csv(args.pairs), []
    else:
        bar = Bar("validate", not args.json)
        truth = read_truth(args.truth)
        pairs, failed = labelled_pairs(args.folder, truth, jobs=args.jobs, progress=bar)
        bar.close()
    if pairs.n_same < 2 or pairs.n_different < 2:
        print(
            f"balllink validate: {args.folder or args.pairs} gives {pairs.n_same} same-source and "
            f"{pairs.n_different} different-source pairs; at least 2 of each are needed",
            file=sys.stderr,
        )
        return 2
    outdir.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(outdir / "pairs.csv")
    if args.cross:
        title = f"{args.folder or Path(args.pairs).name} (leave-one-firearm-out)"
        summary = validate(pairs, outdir, kind=args.kind, title=title)
    else:
        model = LRModel.load(args.model) if args.model else default_model()
        title = f"{args.folder or Path(args.pairs).name} ({model.id})"
        summary = validate(pairs, outdir, model=model, title=title)
        summary["model_training_sets"] = model.training.get("sets", [])
    summary["failed_pairs"] = failed
    lines = [
        f"pairs            {summary['n_same']} same-source, {summary['n_different']} different-source"
        + (f", {len(failed)} failed" if failed else ""),
        f"scored by        {summary['how'].get('model') or summary['how']['scheme']}",
        f"Cllr             {summary['cllr']:.4f}  (0 perfect, 1 uninformative)",
        f"Cllr-min         {summary['cllr_min']:.4f}  (discrimination)",
        f"Cllr-cal         {summary['cllr_cal']:.4f}  (calibration loss)",
        f"misleading       {summary['misleading_same']:.4f} of same-source pairs with LR < 1, "
        f"{summary['misleading_different']:.4f} of different-source pairs with LR > 1",
        f"reliability      largest deviation {summary['reliability']['max_deviation']:.3f} "
        "(bins of >= 10 pairs)",
    ]
    lines += [f"  misleading: {p}" for p in summary["misleading_same_pairs"][:20]]
    lines += [f"  misleading: {p}" for p in summary["misleading_different_pairs"][:20]]
    if not args.cross and summary.get("model_training_sets"):
        lines.append(
            f"note: the model was trained on {', '.join(summary['model_training_sets'])}; "
            "on those data use --cross (leave-one-firearm-out)"
        )
    lines.append(
        f"written to {outdir}/ (validation.json, pairs.csv, tippett.png, ece.png, reliability.png)"
    )
    emit(args, summary, "\n".join(lines))
    return 1 if failed else 0
