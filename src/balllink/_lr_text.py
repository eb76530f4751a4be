"""How a likelihood ratio is written for people: one line for tables (`lr_text`), and for
the lead report one plain sentence of what it means, its caveats and its figures."""

from __future__ import annotations

import html
import math

__all__ = ["lr_html", "lr_line", "lr_rows", "lr_text", "yes_no"]


def yes_no(v) -> str:
    """``yes`` / ``no``, ``unknown`` for None."""
    return "unknown" if v is None else ("yes" if v else "no")


def lr_text(log10_lr, interval=None, in_range=None, reason=None, at_bound=None) -> str:
    """One line for an LR: value, 90 % interval (LR units), ``(at bound)`` when held at a
    bound the data support, ``*`` and the reason when out of the trained range; empty
    for no LR.

    Examples
    --------
    >>> lr_text(2.84, (410.0, 690.0), True, "", True)
    'LR 6.9e+02 [4.1e+02, 6.9e+02] (at bound)'
    >>> lr_text(0.5, (2.0, 4.0), False, "measured at 3 µm")
    'LR 3.2 [2, 4] * measured at 3 µm'
    >>> lr_text(float("nan"))
    ''
    """
    if log10_lr is None or not math.isfinite(log10_lr):
        return ""
    g = lambda v: f"{v:.2g}" if 0.01 <= abs(v) < 100 else f"{v:.1e}"  # noqa: E731
    out = f"LR {g(10.0**log10_lr)}"
    if interval is not None and all(math.isfinite(v) for v in interval):
        out += f" [{g(interval[0])}, {g(interval[1])}]"
    if at_bound:
        out += " (at bound)"
    if in_range is False:
        out += f" * {reason}" if reason else " *"
    return out


def lr_line(lead) -> str:
    text = lr_text(lead.log10_lr, lead.lr_interval, lead.lr_in_range, lead.lr_reason,
                   lead.lr_at_bound)  # fmt: skip
    return f"{text}; " if text else "no likelihood ratio (stored before LRs); "


def lr_html(lead) -> str:
    """One plain sentence of what the LR means, and its caveats."""
    if not math.isfinite(lead.log10_lr):
        return (
            "<p>This pair was stored without the cell counts a likelihood ratio is computed "
            "from: it is a lead by the legacy score threshold.</p>"
        )
    lr = 10.0**lead.log10_lr
    n = f"{lr:.2g}" if lr < 1e3 else f"{lr:.1e}"
    more = "more" if lr >= 1 else "less"
    times = n if lr >= 1 else (f"{1 / lr:.2g}" if lr > 1e-3 else f"{1 / lr:.1e}")
    text = (
        f"<p>The observed agreement is about {html.escape(times)} times {more} probable if "
        "the two casings were fired by the same firearm than by two different firearms "
        f"(likelihood ratio {html.escape(n)}, model {html.escape(str(lead.lr_model))}).</p>"
    )
    if lead.lr_at_bound:
        text += "<p>The LR is held at a bound: the validation data support no stronger value.</p>"
    if lead.lr_in_range is False:
        text += (
            '<div class="flags"><strong>Outside the validated range.</strong> '
            f"{html.escape(lead.lr_reason or '')}: the LR is an extrapolation.</div>"
        )
    return text


def lr_rows(lead, model) -> list[dict]:
    if not math.isfinite(lead.log10_lr):
        return [{"measure": "likelihood ratio", "value": "none (stored before LRs)"}]
    return [
        {"measure": "likelihood ratio (LR)", "value": lead.lr},
        {"measure": "LR 90 % interval", "value": tuple(lead.lr_interval)},
        {
            "measure": "LR bounds the data support (ELUB)",
            "value": tuple(10.0**b for b in model.bounds),
        },
        {"measure": "LR at a bound", "value": yes_no(lead.lr_at_bound)},
        {"measure": "within the model's validated range", "value": yes_no(lead.lr_in_range)},
        {"measure": "out-of-range reason", "value": lead.lr_reason or ""},
        {"measure": "LR model", "value": lead.lr_model},
        {"measure": "lead threshold (LR)", "value": 10.0**model.lead_log10_lr},
        {"measure": "target false-lead rate", "value": model.target_rate},
    ]
