"""The pages and actions of the review app: each takes a `Context` and returns a response.

Lists are read one page at a time (`LeadDatabase.exhibits_page`, ``leads_page``,
``comparisons_of``, ``audit_page``); the pair view recomputes the comparison of the two
stored scans (cached) to show the cells, and says so when it no longer matches the stored
one.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np

from ..leads import STATUSES
from ._app import Context
from ._images import cell_boxes, map_points, timeline_points

__all__ = [
    "admin_page",
    "audit_page",
    "change_user",
    "comment",
    "exhibit_page",
    "exhibits_page",
    "health_page",
    "leads_export",
    "leads_page",
    "new_user",
    "pair_comparison",
    "pair_page",
    "run_health",
    "series_page",
    "set_lead_rate",
    "set_status",
]

KINDS = ("crime_scene", "test_fire")


def _pages(total: int, offset: int, size: int) -> dict:
    return {
        "total": total,
        "offset": offset,
        "size": size,
        "first": offset + 1 if total else 0,
        "last": min(offset + size, total),
        "prev": max(offset - size, 0) if offset > 0 else None,
        "next": offset + size if offset + size < total else None,
    }


# ---------------------------------------------------------------------- exhibits
def exhibits_page(ctx: Context):
    size = ctx.app.page_size
    offset = ctx.int_arg("offset")
    filters = {k: ctx.arg(k) for k in ("agency", "caliber", "kind", "since", "until", "q")}
    if filters["kind"] and filters["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    scope = {
        "agencies": [filters["agency"]] if filters["agency"] else None,
        "caliber": [filters["caliber"]] if filters["caliber"] else None,
        "kind": filters["kind"] or None,
        "since": filters["since"] or None,
        "until": filters["until"] or None,
    }
    rows, total = ctx.db.exhibits_page(
        {k: v for k, v in scope.items() if v}, text=filters["q"] or None, limit=size, offset=offset
    )
    return ctx.render(
        "exhibits.html",
        exhibits=rows,
        filters=filters,
        agencies=_distinct(ctx, "agency"),
        calibers=_distinct(ctx, "caliber"),
        kinds=KINDS,
        pages=_pages(total, offset, size),
    )


def _distinct(ctx: Context, column: str) -> list[str]:
    """The values of one exhibits column for a filter menu."""
    return ctx.db.field_values(column, limit=500)


def exhibit_page(ctx: Context):
    eid = int(ctx.request.path_params["id"])
    exhibit = ctx.db.exhibit(eid)
    size = ctx.app.page_size
    offset = ctx.int_arg("offset")
    rows, total = ctx.db.comparisons_of(eid, limit=size, offset=offset)
    candidates = []
    for rank, (lead, is_lead) in enumerate(rows, start=offset + 1):
        other = lead.b if lead.a == eid else lead.a
        candidates.append(
            dict(
                rank=rank,
                lead=lead,
                is_lead=is_lead,
                other=other,
                other_case=lead.case_b if lead.a == eid else lead.case_a,
                other_agency=lead.agency_b if lead.a == eid else lead.agency_a,
            )
        )
    return ctx.render(
        "exhibit.html",
        exhibit=exhibit,
        candidates=candidates,
        n_in_scope=max(ctx.db.count() - 1, 0),
        n_rescored=total,
        pages=_pages(total, offset, size),
    )


# ---------------------------------------------------------------------- pair view
def pair_comparison(ctx: Context, a: int, b: int):
    """The stored comparison of two exhibits, the query first, recomputed (cached) for
    its cells: ``(row, query_exhibit, other_exhibit, comparison)``."""
    from ..comparison import compare

    row = ctx.db.comparison(a, b)
    if row is None:
        raise ValueError(f"exhibits {a} and {b}: no comparison stored (never compared)")
    q = int(row["query"])
    o = int(row["b"] if row["a"] == q else row["a"])
    eq, eo = ctx.db.exhibit(q), ctx.db.exhibit(o)
    key = (q, o, eq.scan_hash, eo.scan_hash)

    def make():
        sq, so = ctx.db.scan(q), ctx.db.scan(o)
        return compare(sq, so)

    return row, eq, eo, ctx.app.pairs.get(key, make)


def pair_page(ctx: Context):
    a, b = int(ctx.request.path_params["a"]), int(ctx.request.path_params["b"])
    t0 = time.perf_counter()
    row, eq, eo, comp = pair_comparison(ctx, a, b)
    seconds = time.perf_counter() - t0
    if (eq.id, eo.id) != (a, b):
        return ctx.redirect(f"/pairs/{eq.id}/{eo.id}", done=ctx.arg("done"))
    lead = ctx.db.lead(int(row["id"]))
    scan = ctx.db.scan(eq.id)
    boxes = cell_boxes(scan, comp)
    cells = comp.cells
    table = [
        dict(
            direction="a in b" if c["direction"] == 0 else "b in a",
            row=int(c["row"]),
            col=int(c["col"]),
            y=float(c["center_y_um"]),
            x=float(c["center_x_um"]),
            theta=float(c["theta_deg"]),
            dy=float(c["dy_px"]),
            dx=float(c["dx_px"]),
            corr=float(c["corr"]),
            congruent=bool(c["congruent"]),
        )
        for c in cells
    ]
    stored_pose = (row["rotation_deg"], row["dy_um"], row["dx_um"])
    same = int(row["cmc_count"]) == int(comp.cmc_count) and _close(
        stored_pose, (comp.rotation_deg, *comp.translation_um)
    )
    return ctx.render(
        "pair.html",
        a=eq,
        b=eo,
        row=row,
        lead=lead,
        comp=comp,
        boxes=boxes,
        shape=scan.shape,
        cells=table,
        agrees=same,
        seconds=seconds,
        n_cells=sum(int(d.n_cells) for d in comp.directions),
        done=ctx.arg("done"),
        history=ctx.db.lead_history(lead.id),
        statuses=STATUSES,
    )


def _close(stored, now, *, degrees: float = 0.5, um: float = 15.0) -> bool:
    """True when two poses ``(rotation_deg, dy_um, dx_um)`` agree within ``degrees`` and
    ``um`` (a stored pose may differ by a fraction of a pixel: the stored scan is the
    float32 copy of the one compared at ingest), or are both undetermined."""
    vals = [np.nan if v is None else float(v) for v in (*stored, *now)]
    (t0, y0, x0), (t1, y1, x1) = vals[:3], vals[3:]
    if all(np.isnan(vals)):
        return True
    turn = abs((t0 - t1 + 180.0) % 360.0 - 180.0)
    return bool(turn <= degrees and abs(y0 - y1) <= um and abs(x0 - x1) <= um)


def set_status(ctx: Context):
    lead_id = int(ctx.request.path_params["id"])
    status = ctx.field("status")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    lead = ctx.db.lead(lead_id)
    with ctx.writer() as db:
        db.set_status(lead_id, status, examiner=ctx.user.name, note=ctx.field("note") or None)
    return ctx.redirect(f"/pairs/{lead.a}/{lead.b}", done=f"lead {lead_id}: {status}")


def comment(ctx: Context):
    lead_id = int(ctx.request.path_params["id"])
    lead = ctx.db.lead(lead_id)
    with ctx.writer() as db:
        db.comment(lead_id, ctx.field("note"))
    return ctx.redirect(f"/pairs/{lead.a}/{lead.b}", done="comment saved")


# ---------------------------------------------------------------------- leads
def _lead_filters(ctx: Context) -> dict:
    status = ctx.arg("status")
    if status and status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    return {
        "status": status,
        "agency": ctx.arg("agency"),
        "cross": ctx.arg("cross"),
        "since": ctx.arg("since"),
    }


def _lead_kw(f: dict) -> dict:
    return dict(
        status=f["status"] or None,
        cross_only=bool(f["cross"]),
        agencies=[f["agency"]] if f["agency"] else None,
        since=f["since"] or None,
    )


def leads_page(ctx: Context):
    size = ctx.app.page_size
    offset = ctx.int_arg("offset")
    filters = _lead_filters(ctx)
    rows, total = ctx.db.leads_page(**_lead_kw(filters), limit=size, offset=offset)
    return ctx.render(
        "leads.html",
        leads=rows,
        filters=filters,
        agencies=_distinct(ctx, "agency"),
        statuses=STATUSES,
        pages=_pages(total, offset, size),
        model=ctx.db.lr_model,
    )


def leads_export(ctx: Context):
    """All leads matching the filters as CSV or GeoJSON (an export: audited)."""
    import json

    from starlette.responses import Response

    from ..report import leads_csv, leads_geojson

    fmt = ctx.request.path_params["fmt"]
    if fmt not in ("csv", "geojson"):
        raise ValueError(f"leads export: format {fmt!r}; use leads.csv or leads.geojson")
    filters = _lead_filters(ctx)
    leads = ctx.db.leads(**_lead_kw(filters))
    if fmt == "csv":
        buf = io.StringIO()
        leads_csv(leads, buf)
        body, media = buf.getvalue(), "text/csv"
    else:
        body, media = json.dumps(leads_geojson(ctx.db, leads)), "application/geo+json"
    if not ctx.app.readonly:
        with ctx.writer() as db:
            db.log_event("export", what="leads", format=fmt, n=len(leads), via="review app",
                         filters={k: v for k, v in filters.items() if v})  # fmt: skip
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="leads.{fmt}"'},
    )


# ---------------------------------------------------------------------- series
def series_page(ctx: Context):
    size = 20
    offset = ctx.int_arg("offset")
    # the whole lead graph, computed once per state of the database (every change to the
    # leads, statuses, threshold or model adds an audit record)
    key = (ctx.db.audit_head(), ctx.db.threshold, ctx.db.lr_model_id)
    everything = ctx.app.series.get(key, ctx.db.series)
    shown = []
    for s in everything[offset : offset + size]:
        members = ctx.db.exhibits_by_id(s.exhibits[:200])
        places = [(e.lat, e.lon, e.case_id) for e in members if e.lat is not None]
        dates = [(e.occurred, e.case_id) for e in members if e.occurred]
        shown.append(
            dict(
                series=s,
                members=members,
                map=map_points(places),
                timeline=timeline_points(dates),
            )
        )
    return ctx.render("series.html", series=shown, pages=_pages(len(everything), offset, size))


# ---------------------------------------------------------------------- audit, health
def audit_page(ctx: Context):
    size = ctx.app.page_size
    offset = ctx.int_arg("offset")
    action, who = ctx.arg("action"), ctx.arg("who")
    rows, total = ctx.db.audit_page(
        limit=size, offset=offset, action=action or None, who=who or None
    )
    return ctx.render(
        "audit.html",
        records=rows,
        filters={"action": action, "who": who},
        head=ctx.db.audit_head(),
        pages=_pages(total, offset, size),
    )


_health_lock = threading.Lock()


def run_health(app) -> None:
    """Run `LeadDatabase.check` in a background thread (one at a time); the health page
    shows the last finished result and whether one is running."""
    with _health_lock:
        if app.health.get("running"):
            return
        app.health["running"] = True

    def work():
        from ..database import LeadDatabase

        t0 = time.perf_counter()
        try:
            with LeadDatabase(app.path, readonly=True) as db:
                rep = db.check()
            app.health["report"] = rep
            app.health["error"] = None
        except Exception as exc:  # shown on the page: the check itself failed
            app.health["error"] = f"{type(exc).__name__}: {exc}"
        app.health["seconds"] = time.perf_counter() - t0
        app.health["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        app.health["running"] = False

    threading.Thread(target=work, name="balllink-check", daemon=True).start()


def health_page(ctx: Context):
    if ctx.request.method == "POST" or "report" not in ctx.app.health:
        run_health(ctx.app)
        if ctx.request.method == "POST":
            return ctx.redirect("/health")
    return ctx.render("health.html", health=ctx.app.health)


# ---------------------------------------------------------------------- admin
def admin_page(ctx: Context):
    model = ctx.db.lr_model
    return ctx.render(
        "admin.html",
        users=ctx.db.users(),
        roles=("analyst", "examiner", "admin"),
        model=model,
        done=ctx.arg("done"),
    )


def new_user(ctx: Context):
    if ctx.field("password") != ctx.field("password2"):
        raise ValueError("the two passwords differ")
    with ctx.writer() as db:
        user = db.add_user(ctx.field("name"), ctx.field("role"), ctx.field("password"))
    return ctx.redirect("/admin", done=f"user {user.name} added ({user.role})")


def change_user(ctx: Context):
    name = ctx.request.path_params["name"]
    action = ctx.field("action")
    with ctx.writer() as db:
        if action == "role":
            db.change_user(name, role=ctx.field("role"))
        elif action in ("disable", "enable"):
            if name == ctx.user.name and action == "disable":
                raise ValueError("you cannot disable yourself")
            db.change_user(name, disabled=action == "disable")
            ctx.app.sessions.drop_user(name)
        else:
            raise ValueError(f"unknown user action {action!r}")
    return ctx.redirect("/admin", done=f"user {name}: {action}")


def set_lead_rate(ctx: Context):
    try:
        rate = float(ctx.field("rate"))
    except ValueError:
        raise ValueError("the target false-lead rate must be a number, e.g. 1e-4") from None
    with ctx.writer() as db:
        db.set_lead_rate(rate)
        thr = db.lr_model.lead_log10_lr
    return ctx.redirect("/admin", done=f"target rate {rate:g}: leads from log10 LR {thr:.2f}")
