"""The URL map of the review app, signing in and out, the pictures, the headers."""

from __future__ import annotations

import logging

from ._app import SECURITY_HEADERS, Context, ReviewApp
from ._images import posed, surface_png
from ._pages import (
    admin_page,
    audit_page,
    change_user,
    comment,
    exhibit_page,
    exhibits_page,
    health_page,
    leads_export,
    leads_page,
    new_user,
    pair_comparison,
    pair_page,
    series_page,
    set_lead_rate,
    set_status,
)

__all__ = ["build", "create_app"]

log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (no ``//host``, no scheme).

    Examples
    --------
    >>> _safe_next("/leads?status=new"), _safe_next("//evil.example/x"), _safe_next("https://x")
    ('/leads?status=new', '/exhibits', '/exhibits')
    """
    t = str(target or "")
    if not t.startswith("/") or t.startswith("//") or "\\" in t:
        return "/exhibits"
    return t


def _png(body: bytes):
    from starlette.responses import Response

    return Response(
        body, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


def exhibit_png(ctx: Context):
    eid = int(ctx.request.path_params["id"])
    ex = ctx.db.exhibit(eid)
    key = ("surface", ex.scan_hash)
    return _png(ctx.app.images.get(key, lambda: surface_png(ctx.db.scan(eid).masked_heights())))


def pair_png(ctx: Context):
    """``/img/pair/A/B/posed.png``: B moved onto A's grid by the stored comparison's pose."""
    a, b = int(ctx.request.path_params["a"]), int(ctx.request.path_params["b"])
    _row, eq, eo, comp = pair_comparison(ctx, a, b)
    key = ("posed", eq.scan_hash, eo.scan_hash)

    def make():
        return surface_png(posed(ctx.db.scan(eq.id), ctx.db.scan(eo.id), comp))

    return _png(ctx.app.images.get(key, make))


def build(app: ReviewApp):
    """The Starlette application of ``app``."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def login(request):
        session = app.session_of(request)
        if request.method == "GET":
            if session is not None and session.user is not None:
                return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
            session = session or app.sessions.new()
            from starlette.concurrency import run_in_threadpool

            no_users = not await run_in_threadpool(app.has_users)
            response = app.render(
                "login.html",
                csrf=session.csrf,
                next=_safe_next(request.query_params.get("next")),
                no_users=no_users,
            )
            app.set_cookie(response, session)
            return response
        form = await request.form()
        if session is None or not session.csrf_ok(form.get("csrf_token")):
            return app.render(
                "error.html",
                status=403,
                title="Refused",
                message="The sign-in form's security token is missing or expired "
                "(CSRF protection). Open the sign-in page again.",
            )
        from starlette.concurrency import run_in_threadpool

        name, password = str(form.get("name", "")), str(form.get("password", ""))

        def check():
            with app.reader() as db:
                return db.authenticate(name, password)

        user = await run_in_threadpool(check)
        if user is None:
            log.warning("review app: failed sign-in for %r", name[:64])
            response = app.render(
                "login.html",
                status=401,
                csrf=session.csrf,
                next=_safe_next(form.get("next")),
                error="Wrong name or password.",
                no_users=False,
            )
            return response
        fresh = app.sessions.sign_in(session, user.name)
        if not app.readonly:
            await run_in_threadpool(_log_sign_in, app, user.name, request)
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        app.set_cookie(response, fresh)
        return response

    async def logout(request):
        session = app.session_of(request)
        if request.method == "POST":
            form = await request.form()
            if session is not None and session.csrf_ok(form.get("csrf_token")):
                app.sessions.drop(session.key)
                response = RedirectResponse("/login", status_code=303)
                app.set_cookie(response, None)
                return response
            return app.render("error.html", status=403, title="Refused",
                              message="Sign out needs the form's security token (CSRF).")  # fmt: skip
        return RedirectResponse("/login", status_code=303)

    async def home(request):
        return RedirectResponse("/exhibits", status_code=303)

    page = app.page
    routes = [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/exhibits", page(exhibits_page)),
        Route("/exhibits/{id:int}", page(exhibit_page)),
        Route("/pairs/{a:int}/{b:int}", page(pair_page)),
        Route("/leads", page(leads_page)),
        Route("/leads.{fmt:str}", page(leads_export)),
        Route(
            "/leads/{id:int}/status",
            page(set_status, role="examiner", write=True),
            methods=["POST"],
        ),
        Route("/leads/{id:int}/comment", page(comment, write=True), methods=["POST"]),
        Route("/series", page(series_page)),
        Route("/audit", page(audit_page)),
        Route("/health", page(health_page), methods=["GET", "POST"]),
        Route("/admin", page(admin_page, role="admin")),
        Route("/admin/users", page(new_user, role="admin", write=True), methods=["POST"]),
        Route(
            "/admin/users/{name:str}", page(change_user, role="admin", write=True), methods=["POST"]
        ),
        Route("/admin/lead-rate", page(set_lead_rate, role="admin", write=True), methods=["POST"]),
        Route("/img/exhibit/{id:int}.png", page(exhibit_png)),
        Route("/img/pair/{a:int}/{b:int}/posed.png", page(pair_png)),
        Mount("/static", StaticFiles(packages=[("balllink.review", "static")]), name="static"),
    ]
    starlette = Starlette(routes=routes)
    return _Headers(starlette)


def _log_sign_in(app: ReviewApp, name: str, request) -> None:
    from ..database import LeadDatabase

    try:
        with LeadDatabase(app.path, user=name) as db:
            db.log_event("sign in", via="review app", client=getattr(request.client, "host", None))
    except Exception as exc:  # signing in never fails for want of an audit record
        log.warning("review app: sign-in of %s not recorded: %s", name, exc)


class _Headers:
    """ASGI middleware adding `SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app):
        self.app = app
        self._extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + self._extra
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(path, *, secure_cookies: bool = False, page_size: int = 50, readonly: bool = False):
    """The review web application (ASGI) of a lead database: ``balllink serve`` runs it.

    Parameters
    ----------
    path : str or Path
        The lead database folder.
    secure_cookies : bool
        Session cookie over HTTPS only (``balllink serve`` sets it with ``--certfile``).
    page_size : int
        Rows per page.
    readonly : bool
        Review only (no change can be made through the app).

    Returns
    -------
    starlette.applications.Starlette

    Examples
    --------
    >>> import tempfile
    >>> from starlette.testclient import TestClient
    >>> from balllink.database import LeadDatabase
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     LeadDatabase(tmp + "/l.db").close()
    ...     client = TestClient(create_app(tmp + "/l.db"))
    ...     r = client.get("/exhibits", follow_redirects=False)
    ...     print(r.status_code, r.headers["location"])
    303 /login?next=/exhibits
    """
    return build(ReviewApp(path, secure_cookies=secure_cookies, page_size=page_size,
                           readonly=readonly))  # fmt: skip
