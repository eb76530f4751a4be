"""Build a lead database from a folder of scans and list the cross-jurisdiction leads.

Usage::

    python examples/build_lead_database.py [FOLDER] [--db leads.db]

Each file is filed under one of three agencies (a real unit would give each file's agency,
case number, date and place: see ``balllink ingest --fields``). Without a folder, a few
simulated casings are written as X3P files to a temporary folder first.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import balllink as bl

AGENCIES = ["METRO-PD", "RIVER-CO-SO", "STATE-HP"]


def shape(size: int):
    """Simulated grid: (size, size), or the Fadul-like 545 x 545 default when 0."""
    return (size, size) if size else None


def simulated_folder(folder: Path, size: int) -> Path:
    sims = bl.simulate.casings(3, 2, seed=5, shape=shape(size), difficulty="fadul-like")
    for scan, row in zip(sims.scans, sims.truth):
        bl.write_scan(scan, folder / f"gun{row['firearm_id']}-casing{row['casing_id']}.x3p")
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", help="folder of scans (default: simulated)")
    parser.add_argument("--db", default=None, help="database folder (default: temporary)")
    parser.add_argument("--size", type=int, default=0, help="simulated side, px (0: 545)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="balllink-example-"))
    try:
        folder = Path(args.folder) if args.folder else simulated_folder(tmp, args.size)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".x3p", ".npz"})
        db = bl.LeadDatabase(args.db or tmp / "leads.db")
        items = [
            (path, {"agency": AGENCIES[n % 3], "case_id": f"case-{n:03d}"})
            for n, path in enumerate(files)
        ]
        report = db.ingest_many(items, progress=lambda done, total: None)
        print(
            f"{len(report.ingested)} exhibits ingested ({len(report.flagged)} flagged), "
            f"{len(report.skipped)} skipped"
        )
        for item in report.flagged:  # stored and compared, but worth a look
            codes = ", ".join(f.code for f in item.flags)
            print(f"  flagged {item.name} (exhibit {item.exhibit_id}): {codes}")
        for path, reason in report.skipped:
            print(f"  skipped {path}: {reason}")

        cross = db.leads(cross_only=True)
        model = db.lr_model
        print(
            f"{len(cross)} cross-jurisdiction lead(s) at LR >= {10**model.lead_log10_lr:.3g} "
            f"(target false-lead rate {model.target_rate:g}):"
        )
        for lead in cross:
            a, b = db.exhibit(lead.a), db.exhibit(lead.b)
            print(
                f"  lead {lead.id}: {Path(a.source).name} ({lead.agency_a}) <-> "
                f"{Path(b.source).name} ({lead.agency_b})  LR {10**lead.log10_lr:.3g}"
            )
        for n, series in enumerate(db.series(), start=1):
            print(f"series {n}: exhibits {series.exhibits}, agencies {series.agencies}")
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
