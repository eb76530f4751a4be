"""The ``balllink`` command line. Library code logs; this module prints.

Every command takes ``--db PATH`` (default: the ``BALLLINK_DB`` environment variable, else
``./balllink.db``) and ``--json`` for machine-readable output. Exit codes: 0 success,
1 partial failure (some files skipped, a check that found problems), 2 bad usage or input.
``ingest`` stores scans whose preparation was flagged (exit 0) and lists them with their
flags; with ``--strict`` it skips them instead (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import BalllinkError
from ._batch import cmd_evaluate, cmd_score
from ._bench import cmd_bench
from ._commands import (
    cmd_check,
    cmd_ingest,
    cmd_leads,
    cmd_report,
    cmd_search,
    cmd_series,
    cmd_status,
)
from ._demo import cmd_demo

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", help="lead database folder (default: $BALLLINK_DB, else ./balllink.db)"
    )
    common.add_argument("--user", help="examiner recorded in the audit trail (default: login)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser = argparse.ArgumentParser(prog="balllink", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help="add scans; correlate; store leads")
    p.add_argument("paths", nargs="+", help="scan files or folders of scans")
    p.add_argument("--agency", required=True, help="jurisdiction code of the submitting agency")
    p.add_argument("--case", dest="case_id", help="case number (default: the file name)")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--caliber")
    p.add_argument("--occurred", help="incident date YYYY-MM-DD")
    p.add_argument("--make")
    p.add_argument("--model")
    p.add_argument("--serial")
    p.add_argument("--fields", help="CSV with a 'file' column and exhibit fields per file")
    p.add_argument("--rescore", type=int, default=50, help="candidates compared in full")
    p.add_argument("--threshold", type=float, help="set the database's lead threshold")
    p.add_argument("--no-correlate", action="store_true", help="store only (bulk archive load)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="skip scans whose preparation was flagged (default: store them, flagged)",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", parents=[common], help="ranked candidates for a file or id")
    p.add_argument("query", help="scan file or exhibit id")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--agency", action="append", help="only these agencies (repeatable)")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--caliber")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--bbox", help="min_lat,min_lon,max_lat,max_lon")
    p.add_argument("--max-rescore", type=int, help="candidates compared in full (default 50)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("leads", parents=[common], help="list or export leads")
    p.add_argument("--since", help="created at or after (ISO date/time)")
    p.add_argument("--threshold", type=float)
    p.add_argument("--status", action="append", choices=("new", "confirmed", "rejected"))
    p.add_argument("--cross-only", action="store_true", help="cross-jurisdiction leads only")
    p.add_argument("--format", choices=("table", "csv", "json", "geojson"), default="table")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_leads)

    p = sub.add_parser("series", parents=[common], help="groups of linked exhibits")
    p.add_argument("--threshold", type=float)
    p.set_defaults(func=cmd_series)

    p = sub.add_parser("status", parents=[common], help="confirm or reject a lead")
    p.add_argument("lead", type=int)
    p.add_argument("status", choices=("new", "confirmed", "rejected"))
    p.add_argument("--examiner", required=True)
    p.add_argument("--note")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", parents=[common], help="HTML report of one lead")
    p.add_argument("lead", type=int)
    p.add_argument("-o", "--output", help="output .html (default lead-ID.html)")
    p.add_argument("-k", type=int, default=10, help="length of the candidate list")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("score", parents=[common], help="score a CSV of file pairs (resumable)")
    p.add_argument("pairs", help="CSV: file_a,file_b per row (header optional)")
    p.add_argument("-o", "--output", required=True, help="scores CSV (appended; resumable)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", parents=[common], help="accuracy on a labelled folder")
    p.add_argument("folder")
    p.add_argument("--truth", required=True, help="CSV: file,firearm")
    p.add_argument("--threshold", type=float, help="lead threshold (default: shipped)")
    p.add_argument("-o", "--output", default="evaluation", help="folder for PNG/CSV/JSON")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", parents=[common], help="the main job end to end")
    p.add_argument("--data", help="a folder of real scans (default: a simulated region)")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--size", type=int, default=0, help="simulated scan side, px (0: 545)")
    p.add_argument(
        "--rescore", type=int, help="candidates compared per casing (default 6, 50 with --data)"
    )
    p.add_argument("--threshold", type=float, help="lead threshold (default: shipped)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check", parents=[common], help="SQLite, index, scans, audit agree?")
    p.add_argument("--deep", action="store_true", help="re-hash every stored scan")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", parents=[common], help="ingest rate and search latency")
    p.add_argument("--sizes", default="1000", help="comma-separated database sizes")
    p.add_argument("--ingest", type=int, default=50, help="exhibits ingested with correlation")
    p.add_argument("--queries", type=int, default=5)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``balllink`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (BalllinkError, ValueError, OSError) as exc:
        print(f"balllink {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"balllink {args.command}: interrupted", file=sys.stderr)
        return 130
