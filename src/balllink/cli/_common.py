"""What the commands share: the database path, the progress bar, tables and output.

Library code logs; the command line prints, here and in the command modules.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import errno
import json
import math
import os
import sqlite3
import sys
from pathlib import Path

from ..database import LeadDatabase
from ..leads import lr_text

__all__ = [
    "SCAN_SUFFIXES",
    "Bar",
    "bbox_arg",
    "check_output",
    "date_arg",
    "db_path",
    "emit",
    "error_line",
    "expand",
    "flag_codes",
    "format_table",
    "lead_flags",
    "lead_lr",
    "lead_rows",
    "open_db",
    "read_truth",
    "series_rows",
    "spacing_arg",
]

SCAN_SUFFIXES = {".x3p", ".npz", ".npy", ".png", ".tif", ".tiff"}


def db_path(args) -> Path:
    return Path(args.db or os.environ.get("BALLLINK_DB") or "balllink.db")


def open_db(args, **kw) -> LeadDatabase:
    kind = getattr(args, "index", None)
    if kind is not None:
        kw.setdefault("index_class", kind)  # a name: "exact" or "compressed:N"
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


def lead_lr(x) -> str:
    """The LR of a lead or candidate as one cell (``-`` when it has none)."""
    return lr_text(x.log10_lr, x.lr_interval, x.lr_in_range, x.lr_reason, x.lr_at_bound) or "-"


def lead_rows(leads, *, full: bool) -> list[dict]:
    """Table rows of leads; ``full`` adds the case numbers and the review status."""
    rows = []
    for x in leads:
        row = {
            "lead": x.id,
            "a": x.a,
            "b": x.b,
            "LR": lead_lr(x),
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


def series_rows(series, best_lr: dict | None = None) -> list[dict]:
    """Table rows of series; ``best_lr`` (series number -> text) adds the strongest LR."""
    return [
        {
            **({"best LR": best_lr.get(n, "-")} if best_lr is not None else {}),
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


def check_output(path, *, db=None, inputs=()) -> Path:
    """``path`` as an export target, refused when it lies inside the database folder ``db``
    or is one of the ``inputs`` (symbolic links resolved); raises `ValueError` saying so.

    Examples
    --------
    >>> check_output("out.csv", inputs=["pairs.csv"]).name
    'out.csv'
    >>> check_output("pairs.csv", inputs=["pairs.csv"])
    Traceback (most recent call last):
    ...
    ValueError: refusing to write pairs.csv: it is an input of this command; choose another output
    """
    target = Path(path).resolve()
    if db is not None:
        root = Path(db).resolve()
        if target == root or root in target.parents:
            raise ValueError(
                f"refusing to write {path}: it lies inside the lead database {db}; "
                "choose an output outside the database folder"
            )
    for f in inputs:
        if Path(f).resolve() == target:
            raise ValueError(
                f"refusing to write {path}: it is an input of this command; choose another output"
            )
    return Path(path)


def date_arg(text: str) -> str:
    """argparse type: an ISO date ``YYYY-MM-DD`` (or date and time ``YYYY-MM-DDTHH:MM``).

    Examples
    --------
    >>> date_arg("2025-03-04"), date_arg("2025-03-04T10:00")
    ('2025-03-04', '2025-03-04T10:00')
    """
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; expected YYYY-MM-DD (or YYYY-MM-DDTHH:MM)"
        ) from None
    return text


def bbox_arg(text: str) -> tuple[float, float, float, float]:
    """argparse type: ``min_lat,min_lon,max_lat,max_lon``, four finite numbers, min <= max.

    Examples
    --------
    >>> bbox_arg("39,-95,40,-94")
    (39.0, -95.0, 40.0, -94.0)
    """
    form = "expected min_lat,min_lon,max_lat,max_lon (four numbers, e.g. 39.0,-95.0,39.5,-94.2)"
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(map(math.isfinite, values)):
        raise argparse.ArgumentTypeError(f"{text!r}: {form}")
    lat0, lon0, lat1, lon1 = values
    if not (-90 <= lat0 <= lat1 <= 90 and -180 <= lon0 <= lon1 <= 180):
        raise argparse.ArgumentTypeError(f"{text!r}: {form}, min <= max, within [-90, 90] lat")
    return values


def spacing_arg(text: str) -> float:
    """argparse type: a pixel spacing in micrometres, between 0.01 and 1000.

    Examples
    --------
    >>> spacing_arg("3.5")
    3.5
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0.01 <= value <= 1000):  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a pixel spacing; expected micrometres per pixel in [0.01, 1000] "
            "(e.g. 3.125)"
        )
    return value


def error_line(exc: BaseException, db) -> str:
    """One line telling the user what went wrong with the database ``db`` and what to do.

    Examples
    --------
    >>> error_line(sqlite3.DatabaseError("database disk image is malformed"), "x.db")[:52]
    'database x.db: database disk image is malformed; the'
    """
    msg = str(exc)
    if isinstance(exc, sqlite3.Error):
        low = msg.lower()
        if "locked" in low or "busy" in low:
            todo = "another balllink process is writing it; wait for it to finish and retry"
        elif "full" in low:
            todo = "the disk is full; free space and retry (nothing stored earlier is lost)"
        elif "readonly" in low or "read-only" in low:
            todo = "the storage is read-only; copy the database to writable storage to change it"
        elif isinstance(exc, sqlite3.OperationalError) and "unable to open" in low:
            todo = "check that the folder exists and that you may read and write it"
        else:
            todo = (
                f"the SQLite file may be damaged; run 'balllink check --db {db}' and restore "
                "the database folder from a backup"
            )
        return f"database {db}: {msg}; {todo}"
    if isinstance(exc, OSError):
        where = exc.filename or db
        what = exc.strerror or msg
        if exc.errno == errno.ENOSPC:
            todo = "the disk is full; free space and retry (nothing stored earlier is lost)"
        elif isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
            todo = "check the owner and permissions of the file and its folder"
        else:
            todo = f"check the path (database {db})"
        return f"{where}: {what}; {todo}"
    return msg
