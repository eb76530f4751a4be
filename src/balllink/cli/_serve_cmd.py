"""``balllink serve`` (the review app in the browser) and ``balllink user`` (its reviewers)."""

from __future__ import annotations

import getpass
import sys

from ..database import LeadDatabase
from ._common import db_path, emit, open_db

__all__ = ["cmd_serve", "cmd_user_add", "cmd_user_list", "cmd_user_set"]


def _password(args, prompt: str = "password") -> str:
    """The new password: from stdin with ``--password-stdin`` (first line), else asked
    twice on the terminal (never taken from the command line, where ``ps`` shows it)."""
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ValueError("--password-stdin: no password on the first line of stdin")
        return line
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask the password on: give it with --password-stdin")
    first = getpass.getpass(f"{prompt} for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise ValueError("the two passwords differ")
    return first


def cmd_user_add(args) -> int:
    with open_db(args) as db:
        user = db.add_user(args.name, args.role, _password(args))
    emit(args, {"name": user.name, "role": user.role}, f"added {user.name} ({user.role})")
    return 0


def cmd_user_list(args) -> int:
    with LeadDatabase(db_path(args), readonly=True) as db:
        users = db.users()
    rows = [{"name": u.name, "role": u.role, "created": u.created,
             "disabled": u.disabled} for u in users]  # fmt: skip
    text = "\n".join(
        f"{u.name:<20} {u.role:<9} since {u.created[:10]}{'  (disabled)' if u.disabled else ''}"
        for u in users
    )
    emit(args, rows, text or "no users (balllink user add NAME --role admin)")
    return 0


def cmd_user_set(args) -> int:
    disabled = True if args.disable else (False if args.enable else None)
    password = _password(args, "new password") if (args.password or args.password_stdin) else None
    with open_db(args) as db:
        user = db.change_user(args.name, role=args.role, password=password, disabled=disabled)
    state = "disabled" if user.disabled else "active"
    emit(args, {"name": user.name, "role": user.role, "disabled": user.disabled},
         f"{user.name}: {user.role}, {state}")  # fmt: skip
    return 0


def cmd_serve(args) -> int:
    from ..review import serve

    path = db_path(args)
    scheme = "https" if args.certfile else "http"
    print(f"balllink review of {path} on {scheme}://{args.host}:{args.port}/ (Ctrl-C stops)")
    serve(
        path,
        host=args.host,
        port=args.port,
        certfile=args.certfile,
        keyfile=args.keyfile,
        readonly=args.readonly,
        warn=lambda text: print(f"warning: {text}", file=sys.stderr),
    )
    return 0


def add_parsers(sub, common) -> None:
    """The ``serve`` and ``user`` commands."""
    from ..database import ROLES

    p = sub.add_parser("serve", parents=[common], help="review leads in the browser")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: this machine)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--certfile", help="PEM certificate: serve over HTTPS")
    p.add_argument("--keyfile", help="PEM private key of --certfile")
    p.add_argument("--readonly", action="store_true", help="review only: no change possible")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("user", parents=[common], help="reviewers of the browser app")
    users = p.add_subparsers(dest="user_command", required=True)
    q = users.add_parser("add", parents=[common], help="add a reviewer")
    q.add_argument("name")
    q.add_argument("--role", choices=ROLES, required=True)
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    q.set_defaults(func=cmd_user_add)
    q = users.add_parser("list", parents=[common], help="list the reviewers")
    q.set_defaults(func=cmd_user_list)
    q = users.add_parser("set", parents=[common], help="change a reviewer")
    q.add_argument("name")
    q.add_argument("--role", choices=ROLES)
    q.add_argument("--password", action="store_true", help="set a new password (asked)")
    q.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    group = q.add_mutually_exclusive_group()
    group.add_argument("--disable", action="store_true", help="refuse their sign-in")
    group.add_argument("--enable", action="store_true")
    q.set_defaults(func=cmd_user_set)
