"""The review app: a Starlette application over one lead database.

Every page is read through a read-only `LeadDatabase` opened for the request; every action
(a status, a comment, a user, the lead rate) opens it writable for that one change, as the
signed-in user, so that it lands in the audit trail under their name exactly as the same
change made with the CLI. No page is served without signing in; every form carries the
session's CSRF token and a POST without it is refused; pages are sent with a strict
Content-Security-Policy (only this server's own scripts, styles and images).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ..database import LeadDatabase, User
from ..errors import BalllinkError, DatabaseError
from ._images import LRU
from ._sessions import COOKIE, Session, SessionStore

__all__ = ["SECURITY_HEADERS", "Context", "Forbidden", "ReviewApp"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent

#: Sent with every response.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class Forbidden(Exception):
    """The signed-in user may not do this (role), or the request is not genuine (CSRF)."""


@dataclass
class Context:
    """What a page handler gets: the request, the session, the user, the read-only
    database, the form (POST) and the app."""

    app: ReviewApp
    request: Any
    session: Session
    user: User
    db: LeadDatabase
    form: Any = None

    def arg(self, name: str, default: str = "") -> str:
        """A query parameter, stripped."""
        return str(self.request.query_params.get(name, default)).strip()

    def int_arg(self, name: str, default: int = 0, *, low: int = 0, high: int = 10**9) -> int:
        try:
            return min(max(int(self.request.query_params.get(name, default)), low), high)
        except (TypeError, ValueError):
            return default

    def field(self, name: str, default: str = "") -> str:
        """A form field, stripped."""
        return str((self.form or {}).get(name, default)).strip()

    def require(self, role: str) -> None:
        if not self.user.can(role):
            raise Forbidden(f"this needs the {role} role; {self.user.name} is {self.user.role}")

    def writer(self) -> LeadDatabase:
        """The database opened writable, as the signed-in user (for one change)."""
        if self.app.readonly:
            raise DatabaseError(f"{self.app.path}: served read-only, nothing can change")
        return LeadDatabase(self.app.path, user=self.user.name)

    def render(self, template: str, status: int = 200, **values):
        return self.app.render(template, status=status, ctx=self, **values)

    def redirect(self, url: str, **params):
        from starlette.responses import RedirectResponse

        query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
        return RedirectResponse(url + (f"?{query}" if query else ""), status_code=303)


class ReviewApp:
    """The review application of the lead database at ``path``.

    Parameters
    ----------
    path : str or Path
        A lead database folder (it must exist).
    secure_cookies : bool
        Send the session cookie only over HTTPS (set when serving with TLS).
    page_size : int
        Rows per page of every list.
    readonly : bool
        Review only: no status, comment, user or threshold change (also chosen when the
        database folder cannot be written).
    """

    def __init__(
        self, path, *, secure_cookies: bool = False, page_size: int = 50, readonly: bool = False
    ):
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        self.path = Path(path)
        LeadDatabase(self.path, readonly=True).close()  # exists, readable, right schema
        self.readonly = bool(readonly) or not os.access(self.path, os.W_OK)
        self.secure_cookies = bool(secure_cookies)
        self.page_size = int(page_size)
        self.sessions = SessionStore()
        self.images = LRU(256)  # PNG bytes by (kind, ids, hashes)
        self.pairs = LRU(32)  # recomputed comparisons by (query, other, hashes)
        self.series = LRU(4)  # the series of one state of the database
        self.health: dict = {}
        self.env = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(("html", "svg"), default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["lr"] = _lr
        self.env.filters["qs"] = _qs

    # ------------------------------------------------------------------ plumbing
    def has_users(self) -> bool:
        """Whether anyone can sign in yet (the sign-in page says how to add a reviewer)."""
        with self.reader() as db:
            return bool(db.users())

    def reader(self) -> LeadDatabase:
        return LeadDatabase(self.path, readonly=True)

    def render(self, template: str, *, status: int = 200, ctx: Context | None = None, **values):
        from starlette.responses import HTMLResponse

        values.setdefault("user", ctx.user if ctx else None)
        values.setdefault("csrf", ctx.session.csrf if ctx else "")
        values.setdefault("path", ctx.request.url.path if ctx else "")
        values.setdefault("readonly", self.readonly)
        html = self.env.get_template(template).render(**values)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def session_of(self, request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def set_cookie(self, response, session: Session | None) -> None:
        if session is None:
            response.delete_cookie(COOKIE, path="/")
            return
        response.set_cookie(
            COOKIE,
            session.key,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
            path="/",
            max_age=int(self.sessions.idle_seconds),
        )

    def page(self, handler: Callable, *, role: str = "analyst", write: bool = False):
        """The endpoint of a page or an action: signed in (else to the sign-in page), the
        role checked, the CSRF token checked on every POST; the handler runs in a worker
        thread with a read-only database opened for the request."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import RedirectResponse

        async def endpoint(request):
            session = self.session_of(request)
            if session is None or session.user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            form = None
            if request.method == "POST":
                form = await request.form()
                token = form.get("csrf_token") or request.headers.get("x-csrf-token")
                if not session.csrf_ok(token):
                    log.warning("refused a POST to %s without a valid CSRF token", request.url.path)
                    return self.render(
                        "error.html",
                        status=403,
                        title="Refused",
                        message="The form's security token is missing or wrong "
                        "(CSRF protection). Reload the page and try again.",
                    )
            return await run_in_threadpool(self._run, handler, request, session, form, role, write)

        return endpoint

    def _run(self, handler, request, session, form, role, write):
        try:
            with self.reader() as db:
                user = _current_user(db, session.user)
                if user is None:  # removed or disabled since signing in
                    self.sessions.drop(session.key)
                    return Context(self, request, session, _GONE, db).redirect("/login")
                ctx = Context(self, request, session, user, db, form)
                ctx.require(role)
                if write and self.readonly:
                    raise DatabaseError("this database is served read-only: nothing can change")
                return handler(ctx)
        except Forbidden as exc:
            return self._error(session, 403, "Not allowed", str(exc))
        except (BalllinkError, ValueError) as exc:
            missing = _MISSING.search(str(exc)) is not None
            return self._error(session, 404 if missing else 400, "Not done", str(exc))

    def _error(self, session: Session, status: int, title: str, message: str):
        return self.render(
            "error.html", status=status, title=title, message=message, csrf=session.csrf
        )


#: Errors that say a thing does not exist (answered 404, the others 400).
_MISSING = re.compile(r"\bno (exhibit|lead|user|comparison)\b|not found")

_GONE = User("(signed out)", "analyst", "", True)


def _current_user(db: LeadDatabase, name: str) -> User | None:
    for u in db.users():
        if u.name == name:
            return None if u.disabled else u
    return None


def _lr(lead) -> str:
    """The LR line of a lead (`balllink._lr_text.lr_text`), ``no LR`` without one."""
    from .._lr_text import lr_text

    text = lr_text(lead.log10_lr, lead.lr_interval, lead.lr_in_range, lead.lr_reason,
                   lead.lr_at_bound)  # fmt: skip
    return text or "no LR"


def _qs(params: dict, **changes) -> str:
    """A query string from ``params`` with ``changes`` applied (empty values dropped)."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "", False)})
