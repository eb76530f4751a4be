"""The audit commands: ``audit head`` (the head hash to keep elsewhere), ``audit verify``
and ``check`` (``--head H`` checks against a kept head; a database that refuses to open,
e.g. a deleted SQLite file beside stored scans, is reported as a problem)."""

from __future__ import annotations

from ..errors import DatabaseError
from ._common import emit, open_db

__all__ = ["cmd_audit_head", "cmd_audit_verify", "cmd_check"]


def cmd_audit_head(args) -> int:
    with open_db(args) as db:
        head, n = db.audit_head()
    emit(args, {"head": head, "records": n}, f"{head} {n}")
    return 0


def cmd_audit_verify(args) -> int:
    with open_db(args) as db:
        rep = db.verify_audit(head=args.head)
    lines = [f"{'OK' if rep.ok else 'PROBLEMS'}: {rep.n_records} records, head {rep.head}"]
    if rep.reason:
        lines.append(f"  problem: {rep.reason}")
    lines += [f"  problem: {p}" for p in rep.problems if p != rep.reason]
    lines += [f"  note: {n}" for n in rep.notes]
    emit(args, rep.as_dict(), "\n".join(lines))
    return 0 if rep.ok else 1


def cmd_check(args) -> int:
    try:
        with open_db(args) as db:
            rep = db.check(deep=args.deep, head=args.head)
    except DatabaseError as exc:  # the database cannot be opened: that is the finding
        emit(args, {"ok": False, "problems": [str(exc)]}, f"PROBLEMS:\n  problem: {exc}")
        return 1
    lines = [f"{'OK' if rep.ok else 'PROBLEMS'}: {rep.counts}"]
    lines += [f"  problem: {p}" for p in rep.problems]
    lines += [f"  warning: {w}" for w in rep.warnings]
    lines += [f"  note: {n}" for n in rep.notes]
    emit(args, rep.as_dict(), "\n".join(lines))
    return 0 if rep.ok else 1
