"""The likelihood-ratio commands: ``calibrate`` (fit, validate and use a model on the
database's labelled exhibits) and ``threshold`` (the target false-lead rate)."""

from __future__ import annotations

from ._common import Bar, emit, open_db

__all__ = ["cmd_calibrate", "cmd_threshold", "threshold_line"]


def threshold_line(model) -> str:
    """The lead threshold of a model in force, in words."""
    return (
        f"lead threshold LR >= {10.0**model.lead_log10_lr:.3g} "
        f"(log10 {model.lead_log10_lr:.2f}); predicted false-lead rate "
        f"{model.predicted_rate:.2g} per different-source comparison "
        f"(target {model.target_rate:g}); model {model.id}"
    )


def cmd_calibrate(args) -> int:
    bar = Bar("compare", not args.json)
    with open_db(args) as db:
        cal = db.calibrate(args.truth, kind=args.kind, target_rate=args.target_rate, progress=bar)
        stored_id = db.lr_model_id
    bar.close()
    d = {**cal.as_dict(), "stored_model": stored_id}
    lines = [
        f"calibrated model {stored_id} ({cal.model.kind}) on {cal.n_exhibits} exhibits of "
        f"{cal.n_firearms} firearms: {cal.n_same} same-source and {cal.n_different} "
        f"different-source pairs ({cal.n_compared} compared now)",
        f"leave-one-firearm-out: Cllr {d['cllr']:.3f}, Cllr-min {d['cllr_min']:.3f}, "
        f"misleading same-source {d['misleading_same']:.1%}, "
        f"misleading different-source {d['misleading_different']:.1%}",
        f"LR bounds {10.0 ** cal.model.bounds[0]:.3g} to {10.0 ** cal.model.bounds[1]:.3g}",
        threshold_line(cal.model),
        f"validation plots and validation.json in {cal.folder}",
    ]
    emit(args, d, "\n".join(lines))
    return 0


def cmd_threshold(args) -> int:
    with open_db(args) as db:
        if args.target_rate is not None:
            db.set_lead_rate(args.target_rate)
        model = db.lr_model
        n = len(db.leads())
        d = {
            "model": db.lr_model_id,
            "target_rate": model.target_rate,
            "lead_log10_lr": model.lead_log10_lr,
            "lead_lr": 10.0**model.lead_log10_lr,
            "predicted_rate": model.predicted_rate,
            "legacy_score_threshold": db.threshold,
            "n_leads": n,
        }
    emit(args, d, threshold_line(model) + f"\n{n} lead(s) at this threshold")
    return 0
