"""Ingest: exhibit fields checked, scans read, prepared, stored, correlated, leads kept.

Crash safety: a stored scan is written before the SQLite row that references it; each
exhibit with its comparisons and audit record is one SQLite transaction; the index is
saved at the end of a batch (and every ``save_every`` exhibits). A killed ingest run again
finds the exhibits already stored (by file hash, then by prepared-scan hash) and goes on.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._files import file_sha256
from .._scan import Scan
from ..errors import BalllinkError, DatabaseError, PreprocessError
from ..features import remember_embedding
from ..leads import KINDS, Flag, Scope, flags_json, iso_date
from ._audit import AuditTrail
from ._bulk import Failed, Ready, ready_stream
from ._exhibits import FIELDS, Exhibits, prepared_flags
from ._index_cache import IndexCache
from ._lr import LRBook, features_of
from ._schema import DiskFullError, Sql, is_disk_full, now
from ._search import Searcher
from ._settings import Settings
from ._store import WriteLock, scan_sha256, stored_form

__all__ = [
    "FlaggedExhibit",
    "IngestReport",
    "Ingester",
    "StoredComparisons",
    "exhibit_fields",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlaggedExhibit:
    """An exhibit stored by an ingest although its preparation noted problems."""

    name: str
    exhibit_id: int
    flags: tuple[Flag, ...]


@dataclass
class IngestReport:
    """What a batch ingest did.

    Attributes
    ----------
    ingested : list of int
        New exhibit ids, flagged ones included.
    duplicates : list of (name, exhibit id)
        Scans already stored (same file or same prepared scan); nothing was added.
    skipped : list of (name, reason)
        Every file that could not be used (unreadable, nothing measured, or flagged
        under ``strict=True``) and why.
    flagged : list of FlaggedExhibit
        Every exhibit of this batch stored with preparation flags, with the flags.
    new_leads : list of int
        Comparison ids of the leads this batch created.
    n_compared : int
        Full comparisons run.
    """

    ingested: list[int] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    flagged: list[FlaggedExhibit] = field(default_factory=list)
    new_leads: list[int] = field(default_factory=list)
    n_compared: int = 0

    def counts(self) -> dict[str, int]:
        """How many of each: the summary line of a batch."""
        return {
            "ingested": len(self.ingested),
            "flagged": len(self.flagged),
            "duplicates": len(self.duplicates),
            "skipped": len(self.skipped),
            "compared": self.n_compared,
            "new_leads": len(self.new_leads),
        }

    def as_dict(self) -> dict:
        return {**asdict(self), "counts": self.counts()}


class Outcome(NamedTuple):
    """What `Ingester.ingest_one` did with one item."""

    exhibit_id: int
    duplicate: bool
    n_compared: int = 0
    leads: Sequence[int] = ()
    flags: tuple[Flag, ...] = ()


class NewExhibit(NamedTuple):
    """A prepared scan, stored, with the row values of its exhibit."""

    prep: Scan
    values: dict
    source: str | None
    source_hash: str
    scan_hash: str
    scan_file: str
    flags: tuple[Flag, ...]


class Stored(NamedTuple):
    """The new exhibit's id and the comparison ids of the leads it made."""

    exhibit_id: int
    leads: list[int]


class StoredComparisons(NamedTuple):
    """The comparison ids stored for one query, and those among them that are leads."""

    ids: list[int]
    leads: list[int]


class Source(NamedTuple):
    """An item to ingest: the scan (None until a file is read), its path, its hash."""

    scan: Scan | None
    path: str | None
    digest: str


def source_of(item) -> Source:
    """A scan (hashed by content) or a scan file (hashed by its bytes)."""
    if isinstance(item, Scan):
        return Source(item, item.source, scan_sha256(item))
    path = Path(item)
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return Source(None, str(path), digest)


def exhibit_fields(fields: Mapping[str, Any], source: str | None, digest: str) -> dict:
    """The exhibit's column values from the fields given at ingest, checked.

    Empty text counts as not given; ``kind`` defaults to ``crime_scene``, ``agency`` to
    ``unknown``, ``case_id`` to the file's stem (else ``exhibit-<hash>``).

    Examples
    --------
    >>> v = exhibit_fields({"agency": "PD1", "occurred": "2025-03-04T09:00"}, "a/c1.x3p", "ab")
    >>> v["case_id"], v["kind"], v["occurred"]
    ('c1', 'crime_scene', '2025-03-04')
    >>> exhibit_fields({"lat": 95}, None, "ab")
    Traceback (most recent call last):
    ...
    ValueError: lat must lie in [-90, 90], got 95.0
    >>> exhibit_fields({"agency": "PD" + chr(0)}, None, "ab")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: agency contains a control character ...
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown exhibit field(s) {sorted(unknown)}; use {list(FIELDS)}")
    out = {k: fields.get(k) for k in FIELDS}
    for k in FIELDS:
        if isinstance(out[k], str) and not out[k].strip():
            out[k] = None
    out["kind"] = out["kind"] or "crime_scene"
    if out["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {out['kind']!r}")
    out["agency"] = str(out["agency"] or "unknown")
    if out["case_id"] is None:
        out["case_id"] = Path(source).stem if source else f"exhibit-{digest[:12]}"
    out["case_id"] = str(out["case_id"])
    out["occurred"] = iso_date(out["occurred"])
    for k in ("lat", "lon"):
        if out[k] is not None:
            try:
                out[k] = float(out[k])
            except (TypeError, ValueError):
                raise ValueError(f"{k} must be a number in degrees, got {out[k]!r}") from None
            if not math.isfinite(out[k]):
                raise ValueError(f"{k} must be a finite number in degrees, got {out[k]!r}")
    if out["lat"] is not None and not -90 <= out["lat"] <= 90:
        raise ValueError(f"lat must lie in [-90, 90], got {out['lat']}")
    if out["lon"] is not None and not -180 <= out["lon"] <= 180:
        raise ValueError(f"lon must lie in [-180, 180], got {out['lon']}")
    for k in ("make", "model", "serial", "caliber", "notes"):
        if out[k] is not None:
            out[k] = str(out[k])
    for k in ("agency", "case_id", "make", "model", "serial", "caliber", "notes"):
        allowed = "\n\t" if k == "notes" else ""
        bad = [c for c in out[k] or "" if (ord(c) < 32 or ord(c) == 127) and c not in allowed]
        if bad:
            raise ValueError(f"{k} contains a control character ({bad[0]!r}): {out[k]!r}")
    return out


class Ingester:
    """Adds exhibits to one database (see `LeadDatabase.ingest_many`)."""

    def __init__(
        self,
        sql: Sql,
        exhibits: Exhibits,
        index: IndexCache,
        searcher: Searcher,
        settings: Settings,
        audit: AuditTrail,
        lock: WriteLock,
        lr: LRBook,
    ):
        self._lr = lr
        self._sql = sql
        self._exhibits = exhibits
        self._index = index
        self._searcher = searcher
        self._settings = settings
        self._audit = audit
        self._lock = lock

    def ingest_many(
        self,
        items: Iterable,
        fields: Mapping[str, Any],
        *,
        correlate: bool,
        scope: Scope,
        strict: bool,
        progress: Callable | None,
        save_every: int,
        jobs: int = 1,
    ) -> IngestReport:
        self._sql.require_writable("ingest")
        total = len(items) if hasattr(items, "__len__") else None  # iterators stay lazy
        report = IngestReport()
        with self._lock:
            self._exhibits.store.clean_temp()
            self._index.clean_temp()
            self._index.get()  # open / catch up before the batch
            since_save = 0
            for done, (item, ready) in enumerate(self._with_ready(items, jobs), start=1):
                obj, extra = item if isinstance(item, tuple) else (item, {})
                merged = {**fields, **(extra or {})}
                name = obj.source or obj.name if isinstance(obj, Scan) else str(obj)
                try:
                    out = self.ingest_one(
                        obj, merged, correlate=correlate, scope=scope, strict=strict, ready=ready
                    )
                except (BalllinkError, OSError, ValueError) as exc:
                    if is_disk_full(exc):  # every later item would fail too: stop here
                        raise self._disk_full(name, report, exc) from exc
                    log.warning("skipped %s: %s", name, exc)
                    report.skipped.append((name, str(exc)))
                else:
                    if out.duplicate:
                        report.duplicates.append((name, out.exhibit_id))
                    else:
                        self._count(report, name, out)
                        since_save += 1
                        # saving rewrites the whole index: space the saves with its size
                        if since_save >= max(save_every, len(self._index.indexed) // 10):
                            self._index.save()
                            since_save = 0
                if progress is not None:
                    progress(done, total)
            if self._index.needs_save:
                self._index.save()
        return report

    def _with_ready(self, items: Iterable, jobs: int) -> Iterator[tuple[Any, Ready | None]]:
        """Each item with its `Ready` from the worker processes (None: prepared here)."""
        if jobs <= 1:
            yield from ((item, None) for item in items)
            return
        items, mine = itertools.tee(items)
        objs = (item[0] if isinstance(item, tuple) else item for item in items)
        stream = ready_stream(
            objs, read=self._searcher.read, prepare=self._searcher.prepare, jobs=jobs
        )
        yield from zip(mine, stream, strict=True)

    def _disk_full(self, name: str, report: IngestReport, exc: BaseException):
        """The error that stops a batch on a full disk: what was kept, what to do."""
        return DiskFullError(
            f"{self._sql.label}: the disk is full, ingest stopped at {name} "
            f"({getattr(exc, 'strerror', None) or exc}); {len(report.ingested)} new exhibit(s) "
            "of this batch were stored before it and are kept. Free some space and run the "
            "same ingest again: what is stored already is recognised and skipped"
        )

    @staticmethod
    def _count(report: IngestReport, name: str, out: Outcome) -> None:
        report.ingested.append(out.exhibit_id)
        if out.flags:
            codes = ", ".join(f.code for f in out.flags)
            log.warning("stored %s flagged (%s)", name, codes)
            report.flagged.append(FlaggedExhibit(name, out.exhibit_id, out.flags))
        report.n_compared += out.n_compared
        report.new_leads += out.leads

    def ingest_one(
        self, obj, fields, *, correlate, scope, strict: bool = False, ready=None
    ) -> Outcome:
        """Store one scan or file with its comparisons; raises when it cannot be used.

        ``ready``: the item already read, prepared and embedded by a worker process
        (`Ready`), or what stopped it there (`Failed`, raised where reading would be).
        """
        scan, source, source_hash = source_of(obj)
        existing = self._exhibits.find(source_hash)
        if existing is not None:
            return Outcome(existing, True)
        values = exhibit_fields(fields, source, source_hash)
        if isinstance(ready, Failed):
            raise ready.error
        if ready is not None:
            prep = ready.prep
            if prep.n_valid:
                remember_embedding(prep, ready.table)
        else:
            if scan is None:
                scan = self._searcher.read(source)
            prep = stored_form(self._searcher.prepare(scan))
        if prep.n_valid == 0:
            raise PreprocessError(f"scan {prep.name}: nothing usable left after preparation")
        scan_hash = scan_sha256(prep)
        existing = self._exhibits.find(source_hash, scan_hash)
        if existing is not None:
            return Outcome(existing, True)
        flags = prepared_flags(scan, prep) if ready is None else ready.flags
        if strict and flags:
            raise PreprocessError(
                "refused under strict=True, its preparation was flagged: "
                + "; ".join(map(str, flags))
                + " (ingest without strict to store it flagged)"
            )
        rel = self._exhibits.store.save(prep, scan_hash)  # file first, row after
        comparisons, cand_ids, feats = [], [], []
        if correlate and self._exhibits.count():
            cand_ids = self._searcher.retrieve(prep, scope).ids
            cand_ids, cands = self._exhibits.loadable(cand_ids)  # damaged: skipped, warned
            if cand_ids:
                comparisons = self._searcher.compare_many(prep, cands)
                feats = [features_of(c, prep, s) for c, s in zip(comparisons, cands)]
        new = NewExhibit(prep, values, source, source_hash, scan_hash, rel, flags)
        stored = self._insert(new, cand_ids, comparisons, feats)
        self._exhibits.store.remember(stored.exhibit_id, prep)
        self._index.add_new(stored.exhibit_id, prep, now_=correlate)
        return Outcome(stored.exhibit_id, False, len(comparisons), stored.leads, flags)

    def _insert(self, new: NewExhibit, cand_ids: Sequence[int], comparisons, feats) -> Stored:
        """The exhibit row, its comparisons, their LRs and the audit record: one
        transaction."""
        prep, values, flags = new.prep, new.values, new.flags
        created = now()
        with self._sql.tx(f"store exhibit {new.source or new.scan_hash[:12]}") as con:
            cur = con.execute(
                "INSERT INTO exhibits (case_id, agency, kind, make, model, serial, occurred, "
                "lat, lon, caliber, notes, source, source_hash, scan_hash, scan_file, ny, nx, "
                "spacing_um, n_valid, created, flags, file_sha256, file_size) VALUES ("
                + ",".join("?" * 23)
                + ")",
                (
                    *(values[k] for k in FIELDS),
                    new.source,
                    new.source_hash,
                    new.scan_hash,
                    new.scan_file,
                    prep.shape[0],
                    prep.shape[1],
                    float(prep.spacing_um[1]),
                    prep.n_valid,
                    created,
                    flags_json(flags),
                    *self._exhibits.store.file_record(new.scan_file),
                ),
            )
            eid = int(cur.lastrowid)
            leads, comp_ids = self._comparisons(
                con, eid, values["case_id"], cand_ids, comparisons, feats, created
            )
            self._audit.append(
                "ingest",
                covers=[("exhibits", [eid]), ("comparisons", comp_ids)],
                exhibit=eid,
                source=new.source,
                source_hash=new.source_hash,
                scan_hash=new.scan_hash,
                case_id=values["case_id"],
                agency=values["agency"],
                compared=len(comparisons),
                new_leads=leads,
                flags=[f.code for f in flags],
            )
        return Stored(eid, leads)

    def _comparisons(self, con, eid, case_id, cand_ids, comparisons, feats, created):
        """Insert the comparisons of exhibit ``eid`` (the query) with ``cand_ids`` and their
        LRs (inside a transaction); returns (lead comparison ids, comparison ids)."""
        model = self._lr.base() if comparisons else None
        comp_ids, with_lr = [], []
        cases = {r["id"]: r["case_id"] for r in self._exhibits.summaries(cand_ids).values()}
        for cid, cmp, f in zip(cand_ids, comparisons, feats):
            score = float(cmp.score)
            dy, dx = (float(v) for v in cmp.translation_um)
            cur = con.execute(
                "INSERT INTO comparisons (a, b, query, score, cmc_count, rotation_deg, "
                "dy_um, dx_um, reason, created, mirrored, n_cells, raw_score, "
                "source_spacing_um) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    min(cid, eid), max(cid, eid), eid,
                    score if np.isfinite(score) else 0.0, int(cmp.cmc_count),
                    float(cmp.rotation_deg), dy, dx, cmp.reason or None, created,
                    int(bool(cmp.mirrored)), *f,
                ),
            )  # fmt: skip
            comp_ids.append(int(cur.lastrowid))
            usable = f.n_cells is not None and (model.kind == "count" or f.raw_score is not None)
            if usable and self._lr.applies(model, cmp):
                with_lr.append(int(cur.lastrowid))
        leads = self._leads_among(con, model, comp_ids, with_lr, lambda cid: cases[cid] != case_id)
        return leads, comp_ids

    def add_comparisons(self, eid: int, cand_ids: Sequence[int], *, why: str) -> list[int]:
        """Compare stored exhibit ``eid`` with the stored ``cand_ids`` (pairs not compared
        yet) and store the comparisons as an ingest does, with their LRs and an audit
        record ``compare`` (``why`` says what for). Returns the comparison ids."""
        self._sql.require_writable("store comparisons")
        cand_ids, cands = self._exhibits.loadable(list(cand_ids))
        if not cand_ids:
            return []
        query = self._exhibits.scan(eid)
        comparisons = self._searcher.compare_many(query, cands)
        feats = [features_of(c, query, s) for c, s in zip(comparisons, cands)]
        return self.store_comparisons(eid, cand_ids, comparisons, feats, why=why).ids

    def store_comparisons(
        self, eid: int, cand_ids: Sequence[int], comparisons, feats, *, why: str
    ) -> StoredComparisons:
        """Store comparisons made elsewhere (query ``eid`` with ``cand_ids``; ``feats``
        from `features_of`) as an ingest stores its own, with their LRs and an audit
        record ``compare``: one transaction. Pairs already stored must be left out."""
        self._sql.require_writable("store comparisons")
        case_id = self._exhibits.get(eid).case_id
        with self._sql.tx(f"store the comparisons of exhibit {eid}") as con:
            leads, comp_ids = self._comparisons(
                con, eid, case_id, list(cand_ids), comparisons, feats, now()
            )
            self._audit.append(
                "compare", covers=[("comparisons", comp_ids)], exhibit=eid,
                compared=len(comp_ids), new_leads=leads, why=why,
            )  # fmt: skip
        return StoredComparisons(comp_ids, leads)

    def _leads_among(self, con, model, comp_ids, with_lr, other_case) -> list[int]:
        """Store the LRs of the new comparisons; the ones that are leads by the database's
        rule (`LeadBook`): LR at the threshold, else (no LR) score at the threshold."""
        if not comp_ids:
            return []
        q = ",".join("?" * len(comp_ids))
        rows = {
            r["id"]: r
            for r in con.execute(f"SELECT * FROM comparisons WHERE id IN ({q})", comp_ids)
        }
        if with_lr:
            self._lr.pin(con)  # the model these LRs are computed with stays in the database
        llr = self._lr.insert(con, model, [rows[i] for i in with_lr])
        by_lr = dict(zip(with_lr, llr.tolist()))
        lead_t = self._lr.lead_log10() - 1e-12 if by_lr else math.inf
        leads = []
        for i in comp_ids:
            r = rows[i]
            if not other_case(r["a"] if r["a"] != r["query"] else r["b"]):
                continue
            if i in by_lr:
                short = (r["reason"] or "").startswith("too little evidence")
                if by_lr[i] >= lead_t and not short:
                    leads.append(i)
            elif r["score"] >= self._settings.threshold:
                leads.append(i)
        return leads
