"""What the commands share: the database path, the progress bar, tables and output.

Library code logs; the command line prints, here and in the command modules.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from ..database import LeadDatabase

__all__ = [
    "SCAN_SUFFIXES",
    "Bar",
    "db_path",
    "emit",
    "expand",
    "flag_codes",
    "format_table",
    "lead_flags",
    "lead_rows",
    "open_db",
    "read_truth",
    "series_rows",
]

SCAN_SUFFIXES = {".x3p", ".npz", ".npy", ".png", ".tif", ".tiff"}


def db_path(args) -> Path:
    return Path(args.db or os.environ.get("BALLLINK_DB") or "balllink.db")


def open_db(args, **kw) -> LeadDatabase:
    return LeadDatabase(db_path(args), user=getattr(args, "user", None), **kw)


class Bar:
    """A ``progress(done, total)`` callback drawing a tqdm bar (on stderr)."""

    def __init__(self, desc: str, enabled: bool = True):
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, done, total):
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="scan", file=sys.stderr)
        self.bar.update(done - self.bar.n)  # tqdm throttles the redraws

    def close(self):
        if self.bar is not None:
            self.bar.close()


def emit(args, obj, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str))
    elif text is not None:
        print(text)


def flag_codes(flags) -> str:
    return ",".join(f.code for f in flags)


def lead_flags(lead) -> str:
    """``a:code,code b:code`` for the sides of a lead that carry preparation flags."""
    sides = [(s, flag_codes(f)) for s, f in (("a", lead.flags_a), ("b", lead.flags_b)) if f]
    return " ".join(f"{s}:{codes}" for s, codes in sides)


def lead_rows(leads, *, full: bool) -> list[dict]:
    """Table rows of leads; ``full`` adds the case numbers and the review status."""
    rows = []
    for x in leads:
        row = {
            "lead": x.id,
            "a": x.a,
            "b": x.b,
            "score": x.score,
            "cmc": x.cmc_count,
            "agencies": f"{x.agency_a}/{x.agency_b}",
        }
        if full:
            row["cases"] = f"{x.case_a}/{x.case_b}"
        row["cross"] = "X" if x.cross_jurisdiction else ""
        if full:
            row["status"] = x.status
        row["mirrored"] = "M" if x.mirrored else ""
        row["flags"] = lead_flags(x)
        rows.append(row)
    return rows


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, tuple | list):
            return ",".join(fmt(x) for x in v)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def expand(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in SCAN_SUFFIXES)
        else:
            out.append(p)
    return out


def series_rows(series) -> list[dict]:
    return [
        {
            "series": n + 1,
            "exhibits": len(s.exhibits),
            "ids": ",".join(map(str, s.exhibits)),
            "agencies": ",".join(s.agencies),
            "cases": len(s.cases),
            "first": s.first,
            "last": s.last,
        }
        for n, s in enumerate(series)
    ]


def read_truth(path) -> dict[str, str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: empty truth CSV")
    cols = list(rows[0])
    fcol = "file" if "file" in cols else cols[0]
    gcol = next((c for c in ("firearm", "gun", "label") if c in cols), cols[1])
    return {r[fcol]: r[gcol] for r in rows}
