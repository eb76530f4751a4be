"""The database commands: ingest, search, leads, series, status, report, check."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from .. import report
from ..comparison import compare
from ..database import exhibit_fields
from ..io import read_scan
from ..leads import Scope
from ._common import (
    Bar,
    check_output,
    db_path,
    emit,
    expand,
    flag_codes,
    format_table,
    lead_lr,
    lead_rows,
    open_db,
    series_rows,
)

__all__ = [
    "cmd_ingest",
    "cmd_leads",
    "cmd_report",
    "cmd_search",
    "cmd_series",
    "cmd_status",
    "write_lead_report",
]


def _read_fields(csv_path) -> dict[str, tuple[int, dict]]:
    """file name or path -> (CSV line, exhibit fields), from a CSV with a ``file`` column.

    Every row is checked when the file is read: more cells than the header, no file, a file
    named twice, or a field value the database would refuse (unknown field, bad date, kind,
    latitude, control characters) is an error naming the row; a header naming a column
    twice, or text that is not UTF-8, is an error naming the file."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            return _fields_rows(csv_path, csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None


def _fields_rows(csv_path, reader: csv.DictReader) -> dict[str, tuple[int, dict]]:
    header = reader.fieldnames or []
    if "file" not in header:
        raise ValueError(f"{csv_path}: the fields CSV needs a 'file' column")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise ValueError(f"{csv_path}, line 1: column(s) {twice} named more than once")
    out: dict[str, tuple[int, dict]] = {}
    for r in reader:
        line = reader.line_num
        if None in r:
            raise ValueError(
                f"{csv_path}, line {line}: {len(header) + len(r[None])} fields, "
                f"the header has {len(header)} ({','.join(header)})"
            )
        name = (r.pop("file") or "").strip()
        if not name:
            raise ValueError(f"{csv_path}, line {line}: no file named in the 'file' column")
        if name in out:
            raise ValueError(
                f"{csv_path}, line {line}: {name} already given on line {out[name][0]}"
            )
        fields = {k: v for k, v in r.items() if v not in (None, "")}
        try:
            exhibit_fields(fields, name, "0" * 12)
        except ValueError as exc:
            raise ValueError(f"{csv_path}, line {line}: {exc}") from None
        out[name] = (line, fields)
    return out


def _fields_for(paths, per_file: dict, csv_path) -> list[dict]:
    """Each path's fields; a fields row that matches no path is an error naming the row."""
    used, extras = set(), []
    for p in paths:
        key = str(p) if str(p) in per_file else p.name if p.name in per_file else None
        used.add(key)
        extras.append(per_file[key][1] if key is not None else {})
    unmatched = [(line, name) for name, (line, _) in per_file.items() if name not in used]
    if unmatched:
        line, name = min(unmatched)
        raise ValueError(
            f"{csv_path}, line {line}: {name} matches none of the files given "
            f"({len(unmatched)} unmatched row(s)); fix the name or give that file"
        )
    return extras


class _Photos:
    """Ingest items that read PNG/TIFF photographs with the given spacing, lazily (one scan
    in memory at a time); a file that cannot be read is kept in ``failed``."""

    def __init__(self, items, spacing_um):
        self.items, self.spacing, self.failed = items, spacing_um, []

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        for p, extra in self.items:
            if p.suffix.lower() not in {".png", ".tif", ".tiff"}:
                yield p, extra
                continue
            try:
                yield read_scan(p, spacing_um=self.spacing), extra
            except (ValueError, OSError) as exc:
                self.failed.append((str(p), str(exc)))


def cmd_ingest(args) -> int:
    paths = expand(args.paths)
    if not paths:
        print("balllink ingest: no scan files given", file=sys.stderr)
        return 2
    common = {"agency": args.agency}
    for name in ("case_id", "kind", "caliber", "occurred", "make", "model", "serial"):
        if getattr(args, name):
            common[name] = getattr(args, name)
    per_file = _read_fields(args.fields) if args.fields else {}
    items = list(zip(paths, _fields_for(paths, per_file, args.fields)))
    if args.spacing is not None:
        items = _Photos(items, args.spacing)
    bar = Bar("ingest", not args.json)
    with open_db(args, rescore_k=args.rescore, threshold=args.threshold) as db:
        rep = db.ingest_many(
            items,
            correlate=not args.no_correlate,
            progress=bar,
            strict=args.strict,
            jobs=args.jobs,
            **common,
        )
    bar.close()
    if args.spacing is not None:
        rep.skipped.extend(items.failed)
    emit(args, rep.as_dict(), _ingest_text(rep))
    return 1 if rep.skipped else 0


def _ingest_text(rep) -> str:
    """The ingest summary: counts, then every flagged exhibit and every skipped file."""
    lines = [
        f"ingested {len(rep.ingested)} exhibit(s) ({len(rep.flagged)} flagged), "
        f"{len(rep.duplicates)} already stored, {len(rep.skipped)} skipped; "
        f"{rep.n_compared} comparisons, {len(rep.new_leads)} new lead(s)"
    ]
    if rep.flagged:
        lines.append("flagged (stored and compared; check these scans before relying on them):")
        for f in rep.flagged:
            lines.append(f"  exhibit {f.exhibit_id}  {f.name}")
            lines += [f"    {flag}" for flag in f.flags]
    if rep.skipped:
        lines.append("skipped (could not be used):")
        lines += [f"  {name}: {why.removeprefix(f'{name}: ')}" for name, why in rep.skipped]
    return "\n".join(lines)


def _scope(args):
    return Scope(
        agencies=args.agency or None,
        since=args.since,
        until=args.until,
        caliber=args.caliber,
        kind=args.kind,
        bbox=args.bbox,
        max_rescore=args.max_rescore or max(args.k, 50),
    )


def cmd_search(args) -> int:
    with open_db(args) as db:
        query = int(args.query) if args.query.isdigit() else args.query
        res = db.search(query, k=args.k, scope=_scope(args))
    rows = [
        {
            "rank": c.rank,
            "exhibit": c.exhibit_id,
            "case": c.case_id,
            "agency": c.agency,
            "LR": lead_lr(c),
            "score": c.score,
            "cmc": c.cmc_count,
            "rot°": c.rotation_deg,
            "p_chance": c.p_chance,
            "lead": "LEAD" if c.lead else "",
            "mirrored": "M" if c.mirrored else "",
            "flags": flag_codes(c.flags),
        }
        for c in res
    ]
    head = f"{res.n_in_scope} exhibit(s) in scope, {res.n_rescored} rescored; " + _rule(
        res.lr_threshold, res.threshold
    )
    if res.query_flags:
        head += "\nquery flagged: " + "; ".join(map(str, res.query_flags))
    emit(args, res.as_dict(), head + "\n" + format_table(rows))
    return 0


def cmd_leads(args) -> int:
    if args.output:
        check_output(args.output, db=db_path(args))
    with open_db(args) as db:
        leads = db.leads(
            args.threshold, since=args.since, status=args.status, cross_only=args.cross_only
        )
        if args.until:
            leads = [x for x in leads if _until(x.created, args.until)]
        fmt = "json" if args.json and args.format == "table" else args.format
        out = open(args.output, "w", newline="") if args.output else sys.stdout
        try:
            if fmt == "csv":
                report.leads_csv(leads, out)
            elif fmt == "json":
                out.write(json.dumps([lead.as_dict() for lead in leads], indent=2) + "\n")
            elif fmt == "geojson":
                out.write(json.dumps(report.leads_geojson(db, leads), indent=2) + "\n")
            else:
                rows = lead_rows(leads, full=True)
                rule = _rule(db.lr_model.lead_log10_lr, db.threshold, args.threshold)
                out.write(f"{len(leads)} lead(s); {rule}\n")
                out.write(format_table(rows) + "\n")
        finally:
            if args.output:
                out.close()
        if fmt != "table" or args.output:
            db.log_event("export", what="leads", format=fmt, n=len(leads), path=args.output)
    return 0


def _rule(lead_log10: float, threshold: float, given: float | None = None) -> str:
    """The lead rule in force, in words."""
    t = threshold if given is None else given
    return f"lead at LR >= {10.0**lead_log10:.3g} (score >= {t:g} for pairs without LR)"


def _until(created: str, until: str) -> bool:
    """``created`` (ISO, date or date and time) is at or before ``until`` (same form).

    Examples
    --------
    >>> _until("2025-03-04 10:00:00", "2025-03-04"), _until("2025-03-04T10:00", "2025-03-03")
    (True, False)
    """
    return created.replace(" ", "T")[: len(until)] <= until


def cmd_series(args) -> int:
    with open_db(args) as db:
        series = db.series(args.threshold)
        by_id = {x.id: x for x in db.leads(args.threshold)}
        rule = _rule(db.lr_model.lead_log10_lr, db.threshold, args.threshold)
    best = {}
    for n, s in enumerate(series):
        ranked = sorted(
            (by_id[i] for i in s.leads if i in by_id and by_id[i].log10_lr == by_id[i].log10_lr),
            key=lambda x: -x.log10_lr,
        )
        if ranked:
            best[n] = lead_lr(ranked[0])
    text = f"{len(series)} series; {rule}\n" + format_table(series_rows(series, best))
    emit(args, [s.as_dict() for s in series], text)
    return 0


def cmd_status(args) -> int:
    with open_db(args) as db:
        db.set_status(args.lead, args.status, examiner=args.examiner, note=args.note)
        lead = db.lead(args.lead)
    emit(args, lead.as_dict(), f"lead {lead.id}: {lead.status} ({lead.examiner})")
    return 0


def write_lead_report(db, lead_id: int, path: Path, *, k: int = 10) -> None:
    """Compare the lead's two stored scans again (for the pose and the per-cell table),
    take exhibit a's candidate list (read only), write the HTML report and record the
    export in the audit trail."""
    lead = db.lead(lead_id)
    comparison = compare(db.scan(lead.a), db.scan(lead.b))
    candidates = db.candidates(lead.a, k=k)
    report.lead_report(db, lead, comparison, candidates, path)
    db.log_event("export", what="lead_report", lead=lead.id, path=str(path))


def cmd_report(args) -> int:
    out = check_output(args.output or f"lead-{args.lead}.html", db=db_path(args))
    with open_db(args) as db:
        write_lead_report(db, args.lead, out, k=args.k)
    emit(args, {"report": str(out)}, f"wrote {out}")
    return 0
