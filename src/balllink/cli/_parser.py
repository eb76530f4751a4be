"""The ``balllink`` command line. Library code logs; this module prints.

Every command takes ``--db PATH`` (default: the ``BALLLINK_DB`` environment variable, else
``./balllink.db``) and ``--json`` for machine-readable output. Exit codes: 0 success,
1 partial failure (some files skipped, a check that found problems), 2 bad usage or input
or a database/OS error (one line naming the database and what to do; ``--debug`` shows the
traceback), 3 an unexpected error.
``ingest`` stores scans whose preparation was flagged (exit 0) and lists them with their
flags; with ``--strict`` it skips them instead (exit 1). ``link`` compares every exhibit
of a scope with its candidates: in this process by default, on a local Dask cluster with
``--workers N``, on a running one with ``--scheduler tcp://HOST:PORT``; a rerun after a
kill finishes the job (exit 1 when a group failed or a stored scan was damaged).
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

from ..errors import BalllinkError
from ._audit_cmd import cmd_audit_head, cmd_audit_verify, cmd_check
from ._batch import cmd_evaluate, cmd_score
from ._bench import cmd_bench
from ._commands import (
    cmd_ingest,
    cmd_leads,
    cmd_report,
    cmd_search,
    cmd_series,
    cmd_status,
)
from ._common import bbox_arg, date_arg, db_path, error_line, spacing_arg
from ._demo import cmd_demo
from ._link_cmd import cmd_link
from ._lr_cmd import cmd_calibrate, cmd_threshold
from ._serve_cmd import add_parsers as add_review_parsers
from ._validate_cmd import cmd_validate

__all__ = ["build_parser", "main"]


def _common_options(*, before_command: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name.

    After the name they default to `argparse.SUPPRESS`: a subparser's own default would
    otherwise replace a value given before the name (``balllink --db X leads`` would act
    on ./balllink.db)."""
    common = argparse.ArgumentParser(add_help=False)
    d = {} if before_command else {"default": argparse.SUPPRESS}
    common.add_argument(
        "--db", help="lead database folder (default: $BALLLINK_DB, else ./balllink.db)", **d
    )
    common.add_argument(
        "--index",
        metavar="KIND",
        help="the database's candidate index: 'exact' or 'compressed:N' for about N casings "
        "(kept with the database from then on; default: the kind it keeps, else exact)",
        **d,
    )
    common.add_argument("--user", help="examiner recorded in the audit trail (default: login)", **d)
    common.add_argument("--json", action="store_true", help="machine-readable output", **d)
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details", **d)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors", **d)
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(before_command=False)
    parser = argparse.ArgumentParser(
        prog="balllink", description=__doc__, parents=[_common_options(before_command=True)]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help="add scans; correlate; store leads")
    p.add_argument("paths", nargs="+", help="scan files or folders of scans")
    p.add_argument("--agency", required=True, help="jurisdiction code of the submitting agency")
    p.add_argument("--case", dest="case_id", help="case number (default: the file name)")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--caliber")
    p.add_argument("--occurred", type=date_arg, help="incident date YYYY-MM-DD")
    p.add_argument("--make")
    p.add_argument("--model")
    p.add_argument("--serial")
    p.add_argument("--fields", help="CSV with a 'file' column and exhibit fields per file")
    p.add_argument(
        "--spacing", type=spacing_arg, help="µm per pixel of PNG/TIFF photographs (height maps)"
    )
    p.add_argument("--rescore", type=int, default=50, help="candidates compared in full")
    p.add_argument("--threshold", type=float, help="set the database's lead threshold")
    p.add_argument("--no-correlate", action="store_true", help="store only (bulk archive load)")
    p.add_argument(
        "--jobs", type=int, default=1, help="processes reading, preparing and embedding scans"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="skip scans whose preparation was flagged (default: store them, flagged)",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "link", parents=[common], help="link all exhibits in a scope (batch; Dask optional)"
    )
    p.add_argument("-k", type=int, help="candidates per exhibit (default 50)")
    p.add_argument("--agency", action="append", help="only these agencies (repeatable)")
    p.add_argument("--since", type=date_arg, help="occurred on or after YYYY-MM-DD")
    p.add_argument("--until", type=date_arg, help="occurred on or before YYYY-MM-DD")
    p.add_argument("--caliber")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--bbox", type=bbox_arg, help="min_lat,min_lon,max_lat,max_lon")
    p.add_argument("--workers", type=int, help="compare on a local Dask cluster of N processes")
    p.add_argument(
        "--scheduler",
        help="compare on a running Dask cluster (tcp://HOST:PORT; the database folder must be "
        "at the same path on every worker)",
    )
    p.add_argument("--batch", type=int, default=64, help="queries planned at a time")
    p.set_defaults(func=cmd_link)

    p = sub.add_parser("search", parents=[common], help="ranked candidates for a file or id")
    p.add_argument("query", help="scan file or exhibit id")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--agency", action="append", help="only these agencies (repeatable)")
    p.add_argument("--since", type=date_arg, help="occurred on or after YYYY-MM-DD")
    p.add_argument("--until", type=date_arg, help="occurred on or before YYYY-MM-DD")
    p.add_argument("--caliber")
    p.add_argument("--kind", choices=("crime_scene", "test_fire"))
    p.add_argument("--bbox", type=bbox_arg, help="min_lat,min_lon,max_lat,max_lon")
    p.add_argument("--max-rescore", type=int, help="candidates compared in full (default 50)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("leads", parents=[common], help="list or export leads")
    p.add_argument("--since", type=date_arg, help="created at or after (ISO date/time)")
    p.add_argument("--until", type=date_arg, help="created at or before (ISO date/time)")
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

    p = sub.add_parser("validate", parents=[common], help="LR quality on a labelled folder")
    p.add_argument("folder", nargs="?", help="labelled scans (not needed with --pairs)")
    p.add_argument("--truth", help="CSV: file,firearm (not needed with --pairs)")
    p.add_argument("--model", help="LR model file (default: the shipped model)")
    p.add_argument("--cross", action="store_true", help="leave-one-firearm-out models instead")
    p.add_argument("--kind", default="count", choices=("count", "score"), help="with --cross")
    p.add_argument("--pairs", help="reuse a pairs.csv written by an earlier run")
    p.add_argument("-o", "--output", default="validation", help="folder for PNG/CSV/JSON")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("demo", parents=[common], help="the main job end to end")
    p.add_argument("--data", help="a folder of real scans (default: a simulated region)")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--size", type=int, default=0, help="simulated scan side, px (0: 545)")
    p.add_argument(
        "--rescore", type=int, help="candidates compared per casing (default 6, 50 with --data)"
    )
    p.add_argument("--threshold", type=float, help="lead threshold (default: shipped)")
    p.add_argument(
        "--force", action="store_true", help="replace OUT/balllink.db even if demo did not make it"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check", parents=[common], help="SQLite, index, scans, audit agree?")
    p.add_argument("--deep", action="store_true", help="reload every stored scan")
    p.add_argument("--head", help="an audit head kept elsewhere: fail when not in the chain")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("audit", parents=[common], help="the audit trail's head; verify it")
    audit = p.add_subparsers(dest="audit_command", required=True)
    q = audit.add_parser("head", parents=[common], help="print the head hash and record count")
    q.set_defaults(func=cmd_audit_head)
    q = audit.add_parser("verify", parents=[common], help="verify the chain and the rows")
    q.add_argument("--head", help="an audit head kept elsewhere: fail when not in the chain")
    q.set_defaults(func=cmd_audit_verify)

    # ---- likelihood ratios (issue 13): calibrate, threshold ----------------------------
    p = sub.add_parser(
        "calibrate", parents=[common], help="fit, validate and use an LR model on labelled exhibits"
    )
    p.add_argument("--truth", required=True, help="CSV: file,firearm (file = source base name)")
    p.add_argument("--kind", choices=("count", "score"), default="count")
    p.add_argument("--target-rate", type=float, help="target false-lead rate (default 1e-4)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("threshold", parents=[common], help="the LR lead threshold; set its rate")
    p.add_argument("--target-rate", type=float, help="set the target false-lead rate")
    p.set_defaults(func=cmd_threshold)
    # ---- end of likelihood ratios ------------------------------------------------------

    add_review_parsers(sub, common)  # serve, user (issue 15)

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
    debug = args.debug or "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"balllink {args.command}: interrupted", file=sys.stderr)
        return 130
    except (BalllinkError, ValueError, OSError, sqlite3.Error) as exc:
        if debug:
            raise
        line = error_line(exc, db_path(args)).replace("\n", " ")
        print(f"balllink {args.command}: {line}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if debug:
            raise
        print(
            f"balllink {args.command}: unexpected {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 3
