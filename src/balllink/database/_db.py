"""`LeadDatabase`: the facade over the database's rooms (storage, audit, index, ingest,
search, leads, check); every method delegates to one of them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .._files import private_dir
from .._scan import Scan
from ..comparison import compare_many
from ..errors import DatabaseError
from ..index import index_kind, kind_name
from ..io import read_scan
from ..leads import Lead, Scope, SearchResult, Series
from ..preprocessing import prepare_if_needed
from ._audit import AuditReport, AuditTrail, identity
from ._calibrate import EvidenceMethods
from ._check import CheckReport, check, orphaned
from ._exhibits import Exhibit, Exhibits
from ._index_cache import IndexCache
from ._ingest import Ingester, IngestReport
from ._leads import LeadBook
from ._link import LinkMethods
from ._lr import LRBook
from ._review import ReviewMethods
from ._schema import Sql
from ._search import Retrieval, Searcher, scope_where
from ._settings import Settings, read_setting, write_setting
from ._store import ScanStore, WriteLock

__all__ = ["SQLITE_NAME", "LeadDatabase"]

SQLITE_NAME = "leads.sqlite"

log = logging.getLogger(__name__)

#: The settings key of the database's index kind (`balllink.index._kinds`).
INDEX_KIND = "index_kind"


class LeadDatabase(EvidenceMethods, LinkMethods, ReviewMethods):
    """The embedded lead database (a folder; created if missing).

    One folder holds everything: ``leads.sqlite`` (exhibits, comparisons, lead status,
    audit trail; SQLite, WAL), ``scans/ab/<sha256>.npz`` (prepared scans, named by content
    hash), ``index.faiss``, ``index.ids.npy``, ``index.json`` (the candidate index and its
    manifest), ``models/<id>.json`` (the likelihood-ratio models it used; see `lr_model`,
    `use_model`, `calibrate`) and ``write.lock`` (held by the one process that writes).
    Leads follow the LR of the model in force (threshold from a target false-lead rate,
    `set_lead_rate`); pairs stored without LR features keep the score threshold.
    Folders it creates
    are private (``0700``) and the files it writes take the read/write bits of their folder
    (``0600``; ``chmod -R g+rwX`` the folder to share it with a group). Killing a process
    at any moment leaves a database that opens, passes `check`, and completes the same
    ingest when it is run again, without duplicates.

    Parameters
    ----------
    path : str or Path
        The database folder (``leads.db`` in the examples). Created when missing.
    threshold : float, optional
        Lead threshold on the comparison score; when given it is stored in the database
        (see `set_threshold`). Default: the stored one, else the shipped threshold of the
        compare stage (`balllink.leads.default_threshold`), the one measured on real data.
    rescore_k : int
        On ingest, the new exhibit is compared in full with at most this many candidates
        found by the index among the exhibits in scope (all of them when there are fewer).
    user : str, optional
        Who is recorded in the audit trail (default: ``BALLLINK_USER``, else the login
        name); each record also notes which of the three the name came from.
    readonly : bool
        Open for reading only (``leads``, ``search``, ``check``, reports): SQLite is
        opened with ``mode=ro`` (``immutable`` when the folder cannot be written), nothing
        is written (no audit record for a search, no index save, no lock file), and
        `ingest`, `set_status` and `set_threshold` raise `DatabaseError`. Chosen
        automatically (logged at info level) when the folder cannot be written.
    reader, preparer : callable, optional
        ``reader(path) -> Scan`` and ``preparer(scan) -> Scan``; default `read_scan` and
        `balllink.preprocess.prepare_if_needed` (`preprocess`, skipped for scans already
        prepared). Problems the preparer notes in ``meta["prepared"]["flags"]`` are kept
        with the exhibit (`Exhibit.flags`) and shown with its candidates and leads.
    strict : bool
        False (default): a flagged scan is stored, flagged and compared; only files that
        cannot be read or hold nothing usable are skipped. True: flagged scans are
        skipped too, with their flags as the reason (`ingest_many` takes it per batch).
    comparer : callable, optional
        ``comparer(query, candidates) -> list`` of `Comparison` (``score``, ``cmc_count``,
        ``rotation_deg``, ``translation_um``, ``reason``, ``mirrored`` are kept); default
        `compare_many`.
    index_class : class or str, optional
        The candidate index: ``index_class()`` makes an empty one, ``index_class.load(path)``
        reads one; instances provide ``add(ids, scans)``, ``search(scans, k)``,
        ``remove(ids)``, ``save(path)`` and ``len()``. Or a kind by name:
        ``"exact"`` (`CasingIndex`) or ``"compressed:N"`` (`balllink.index.CompressedIndex`,
        for about N casings: 3.3 KB a casing, searched in milliseconds at network size).
        A known kind (by name, `CasingIndex` or a `balllink.index.CompressedIndex`) is
        stored with the database (audited) and used when it is opened again without one;
        a saved index of another kind is rebuilt. Default: the stored
        kind, else `CasingIndex`.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with LeadDatabase(tmp + "/leads.db") as db:
    ...         print(len(db.exhibits()), db.check().ok, db.verify_audit().ok)
    0 True True
    """

    def __init__(
        self,
        path,
        *,
        threshold: float | None = None,
        rescore_k: int = 50,
        user: str | None = None,
        reader: Callable | None = None,
        preparer: Callable | None = None,
        comparer: Callable | None = None,
        index_class=None,
        cache_scans: int = 256,
        strict: bool = False,
        readonly: bool = False,
    ):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise DatabaseError(
                f"{self.path}: a lead database is a folder, but this is a file; "
                "give a folder path (it is created when missing)"
            )
        immutable = self.path.is_dir() and not os.access(self.path, os.W_OK)
        if immutable and not readonly:
            log.info("%s: the folder cannot be written; opened read-only", self.path)
        self.readonly = bool(readonly) or immutable
        if not self.readonly:
            private_dir(self.path)
            private_dir(self.path / "scans", like=self.path)
        elif not self.path.is_dir():
            raise DatabaseError(f"{self.path}: no lead database here (opened read-only)")
        store = ScanStore(self.path / "scans", cache_scans)
        if int(rescore_k) < 1:
            raise ValueError(f"rescore_k must be >= 1, got {rescore_k}")
        self.rescore_k = int(rescore_k)
        self.strict = bool(strict)
        self._lock = WriteLock(self.path / "write.lock")
        problem = orphaned(self.path, self.path / SQLITE_NAME, store)
        if problem:
            raise DatabaseError(problem)
        self._sql = Sql(
            self.path / SQLITE_NAME, str(self.path), readonly=self.readonly, immutable=immutable
        )
        self._audit = AuditTrail(self._sql, *identity(user))
        self._exhibits = Exhibits(self._sql, store, self._audit)
        index_class, enforce = self._index_kind(index_class)
        self._index = IndexCache(
            self.path, self._exhibits, self._lock, index_class, enforce_kind=enforce
        )
        self._index.readonly = self.readonly
        self._settings = Settings(self._sql, self._audit)
        self._lr = LRBook(self._sql, self._audit, self.path)
        self._searcher = Searcher(
            self._sql, self._exhibits, self._index, self._settings, self._audit, self._lr,
            read=reader or read_scan,
            prepare=preparer or prepare_if_needed,
            compare_many=comparer or compare_many,
        )  # fmt: skip
        self._ingester = Ingester(
            self._sql, self._exhibits, self._index, self._searcher, self._settings,
            self._audit, self._lock, self._lr,
        )  # fmt: skip
        self._leads = LeadBook(self._sql, self._exhibits, self._audit, self._lr)
        if threshold is not None and self.readonly:
            self.threshold = threshold  # this session only: a read-only database keeps its own
        elif threshold is not None:
            self.set_threshold(threshold)

    # ------------------------------------------------------------------ settings
    @property
    def threshold(self) -> float:
        """The lead threshold in force (assigning it changes this session only)."""
        return self._settings.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._settings.threshold = float(value)

    def set_threshold(self, threshold: float) -> None:
        """Set this database's lead threshold (kept in the database, audited).

        Without it the shipped default applies (`balllink.leads.default_threshold`);
        `leads` and `series` also take a threshold per call.
        """
        self._settings.set_threshold(threshold)

    @property
    def user(self) -> str:
        """Who is recorded in the audit trail."""
        return self._audit.user

    @user.setter
    def user(self, value: str) -> None:
        self._audit.user, self._audit.user_source = identity(value)

    # ------------------------------------------------------------------ basics
    @property
    def sqlite_path(self) -> Path:
        return self.path / SQLITE_NAME

    @property
    def scan_dir(self) -> Path:
        return self._exhibits.store.folder

    def _index_kind(self, index_class) -> tuple[Any, bool]:
        """The index class in force and whether a saved index must be of its kind: a kind
        given by name is stored (audited) and enforced; none given, the stored kind."""
        stored = read_setting(self._sql(), INDEX_KIND)
        if index_class is None:
            return (None, False) if stored is None else (index_kind(stored), True)
        cls = index_kind(index_class) if isinstance(index_class, str) else index_class
        name = kind_name(cls)  # ValueError above for an unknown name
        if name is None:  # a class of the caller's own: used, not stored, nor enforced
            return cls, False
        if name != (stored or "exact") and not self.readonly:
            with self._sql.tx() as con:
                write_setting(con, INDEX_KIND, name)
                self._audit.append("index_kind", covers=[("settings", [INDEX_KIND])], kind=name)
        return cls, True

    def __enter__(self) -> LeadDatabase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LeadDatabase({str(self.path)!r}, exhibits={self.count()})"

    def close(self) -> None:
        """Save the index when it changed (unless another process is writing: then the
        writer saves it), then close the SQLite connection."""
        if self._sql.closed:
            return
        try:
            if self._index.needs_save:
                self._index.save(blocking=self._lock.held)
        finally:
            self._sql.close()

    def count(self) -> int:
        """Number of exhibits."""
        return self._exhibits.count()

    # ------------------------------------------------------------------ audit
    def log_event(self, action: str, **detail: Any) -> None:
        """Record an event (an export, a report) in the audit trail.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/l.db") as db:
        ...     db.log_event("export", what="leads", format="csv")
        ...     db.audit()[-1]["action"]
        'export'
        """
        self._audit.log_event(action, **detail)

    def audit(self, *, since: str | None = None) -> list[dict]:
        """The audit trail, oldest first: seq, time, who, action, detail (dict)."""
        return self._audit.records(since=since)

    def verify_audit(self, *, head: str | None = None) -> AuditReport:
        """Walk the hash chain of the audit trail; report the first broken record, and
        every evidence row changed since the trail committed to it.

        An edited record no longer matches its hash; a deleted record breaks the sequence
        and the chain; a deleted tail no longer matches the head kept in ``settings``. An
        exhibit, comparison, status or threshold edited with the sqlite3 shell no longer
        matches the row hash its audit record holds. ``head``: a hash kept elsewhere (see
        `audit_head`); the check fails when it is no longer in the chain (a rewritten or
        deleted trail).
        """
        return self._audit.verify(head=head)

    def audit_head(self) -> tuple[str, int]:
        """The hash of the last audit record and the number of records: keep it elsewhere
        (printed by ``balllink audit head``) and give it to `verify_audit` / `check` later.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/l.db") as db:
        ...     db.log_event("export", what="leads")
        ...     head, n = db.audit_head()
        ...     print(n, db.verify_audit(head=head).ok, db.verify_audit(head="ab" * 32).ok)
        1 True False
        """
        return self._audit.head()

    # ------------------------------------------------------------------ exhibits
    def exhibit(self, exhibit_id: int) -> Exhibit:
        """One exhibit by id; `DatabaseError` when there is none."""
        return self._exhibits.get(exhibit_id)

    def exhibits(
        self, scope=None, *, case_id: str | None = None, flagged: bool | None = None
    ) -> list[Exhibit]:
        """Exhibits in a scope (see `Scope`; ``max_rescore`` is ignored), oldest first.

        ``flagged=True`` keeps only exhibits with preparation flags, False only those
        without.
        """
        where, params = scope_where(Scope.coerce(scope))
        if case_id is not None:
            where += " AND case_id = ?"
            params.append(case_id)
        if flagged is not None:
            where += " AND flags != '[]'" if flagged else " AND flags = '[]'"
        return self._exhibits.select(where, params)

    def scan(self, exhibit_id: int) -> Scan:
        """The stored prepared scan of an exhibit (cached)."""
        return self._exhibits.scan(exhibit_id)

    # ------------------------------------------------------------------ index
    @property
    def index(self):
        """The candidate index, opened (and brought up to date) on first use."""
        return self._index.get()

    def rebuild_index(self, *, progress: Callable | None = None) -> None:
        """Rebuild the candidate index from the stored scans and save it (when writable)."""
        self._index.rebuild(progress=progress)

    # ------------------------------------------------------------------ ingest
    def ingest(
        self, scan_or_path, *, correlate=True, scope=None, strict: bool | None = None, **fields
    ) -> int:
        """Add one casing, correlate it against the exhibits in scope, store any leads.

        Parameters
        ----------
        scan_or_path : Scan or path
            A scan (raw or prepared) or a scan file.
        correlate : bool
            Compare the new exhibit with its candidates (default). False only stores it
            (bulk loading of an archive).
        scope : Scope or dict, optional
            Which existing exhibits it is correlated against (default: all; at most
            ``rescore_k`` of them, the best the index finds, get the full comparison).
        strict : bool, optional
            Refuse a scan whose preparation was flagged (default: the database's
            ``strict``, False: such a scan is stored with its flags, see `Exhibit.flags`).
        **fields
            ``case_id``, ``agency``, ``kind`` (``crime_scene`` | ``test_fire``), ``make``,
            ``model``, ``serial``, ``occurred`` (ISO date), ``lat``, ``lon``, ``caliber``,
            ``notes``.

        Returns
        -------
        int
            The exhibit id; the existing one when this scan is already stored (same
            content hash), in which case nothing is added.

        Raises
        ------
        DatabaseError
            When the scan cannot be used (unreadable, nothing measured, or flagged while
            ``strict``), with the reason.
        """
        report = self.ingest_many(
            [(scan_or_path, fields)], correlate=correlate, scope=scope, strict=strict
        )
        if report.skipped:
            raise DatabaseError(f"{report.skipped[0][0]}: {report.skipped[0][1]}")
        return (report.ingested or [report.duplicates[0][1]])[0]

    def ingest_many(
        self,
        items: Iterable,
        *,
        correlate: bool = True,
        scope=None,
        progress: Callable | None = None,
        save_every: int = 1000,
        strict: bool | None = None,
        jobs: int = 1,
        **fields,
    ) -> IngestReport:
        """Ingest a batch: store every usable scan, flag the doubtful ones, go on past the
        unusable ones.

        A scan whose preparation noted problems (``meta["prepared"]["flags"]``: e.g. a
        poor ring fit on a scan already cut to its breech face) is stored, compared and
        listed in `IngestReport.flagged` with its flags. Files that cannot be read, and
        scans with nothing usable left, are listed in `IngestReport.skipped` with the
        reason; the batch goes on.

        Parameters
        ----------
        items : iterable
            Paths or scans, or ``(path_or_scan, fields_dict)`` pairs whose fields override
            the common ``**fields``.
        strict : bool, optional
            Skip flagged scans too, with their flags as the reason (default: the
            database's ``strict``, False).
        progress : callable, optional
            ``progress(done, total)`` after each item (total is None for an iterator).
        save_every : int
            Save the index after this many new exhibits, or a tenth of the index size if
            larger (it is saved at the end anyway; after a crash the exhibits it lacks are
            added back from the stored scans).
        jobs : int
            Processes that read, prepare and embed the scans (spawned; the reader and
            preparer must then be picklable module-level functions). Only this process
            writes the database; the exhibits stored are the same as with ``jobs=1``.

        Returns
        -------
        IngestReport

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> z = np.random.default_rng(0).normal(size=(240, 240))  # 2.25 mm²: not small
        >>> ok = {"prepared": {"ok": True}}
        >>> doubtful = {"prepared": {"ok": True, "flags": [
        ...     {"code": "ring_irregular", "message": "ring fit quality 0.31"}]}}
        >>> scans = [Scan(z, spacing_um=6.25, meta=ok, source="a.x3p"),
        ...          Scan(z[::-1], spacing_um=6.25, meta=doubtful, source="b.x3p"),
        ...          "missing.x3p"]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with LeadDatabase(tmp + "/leads.db") as db:
        ...         rep = db.ingest_many(scans, agency="PD1", correlate=False)
        ...         print(len(rep.ingested), [(f.name, f.flags[0].code) for f in rep.flagged])
        ...         print(rep.skipped[0][0], db.exhibit(rep.flagged[0].exhibit_id).flagged)
        2 [('b.x3p', 'ring_irregular')]
        missing.x3p True
        """
        return self._ingester.ingest_many(
            items,
            fields,
            correlate=correlate,
            scope=Scope.coerce(scope) if scope is not None else Scope(max_rescore=self.rescore_k),
            strict=self.strict if strict is None else bool(strict),
            progress=progress,
            save_every=save_every,
            jobs=int(jobs),
        )

    # ------------------------------------------------------------------ search
    def _scope(self, scope, k: int) -> Scope:
        if scope is None:
            return Scope(max_rescore=max(int(k), self.rescore_k))
        return Scope.coerce(scope)

    def search(self, exhibit_or_scan, k: int = 10, *, scope=None) -> SearchResult:
        """Ranked, rescored candidates for an exhibit id, a scan or a scan file (audited).

        Parameters
        ----------
        exhibit_or_scan : int, Scan or path
            A stored exhibit (excluded from its own list), or a new scan (prepared here).
        k : int
            Length of the returned list.
        scope : Scope or dict, optional
            Agencies, date range, caliber, kind, bounding box and ``max_rescore`` (the
            number of candidates compared in full; default ``max(k, rescore_k)``).

        Returns
        -------
        SearchResult
            Candidates best first with score, CMC count, pose, ``p_chance`` (share of
            the database's non-match scores at least as high), ``mirrored`` and the
            candidate's preparation ``flags``, plus ``n_in_scope``, ``n_rescored`` and
            the query's own ``query_flags``.
        """
        return self._searcher.search(exhibit_or_scan, k, self._scope(scope, k))

    def candidates(self, exhibit_or_scan, k: int = 10, *, scope=None) -> SearchResult:
        """The same ranked list as `search`, read only: nothing is written to the audit
        trail (for reports and displays of a search already made)."""
        return self._searcher.candidates(exhibit_or_scan, k, self._scope(scope, k))

    def retrieve(self, scan: Scan, *, scope=None) -> Retrieval:
        """The exhibits in scope that a search of the prepared ``scan`` compares in full:
        at most ``scope.max_rescore`` (default ``rescore_k``), the best the index finds."""
        return self._searcher.retrieve(scan, self._scope(scope, 1))

    # ------------------------------------------------------------------ leads
    def leads(
        self,
        threshold: float | None = None,
        *,
        since: str | None = None,
        status: str | Sequence[str] | None = None,
        cross_only: bool = False,
        agencies: Sequence[str] | None = None,
    ) -> list[Lead]:
        """Lead pairs: compared exhibits of different cases whose LR reaches the lead
        threshold of the model in force (`lr_model`), or, for pairs without an LR, whose
        score reaches ``threshold`` (default: the database's), plus pairs an examiner
        confirmed; by LR, then score (best first).

        Each `Lead` carries the preparation flags of both exhibits (``flags_a``,
        ``flags_b``; ``flagged`` when either has some) and whether ``b`` was compared as
        its mirror image (``mirrored``), and its LR (``log10_lr``, ``lr_interval``,
        ``lr_in_range``, ``lr_reason``; NaN / None without one).

        Parameters
        ----------
        since : str, optional
            Only leads created at or after this ISO date/time.
        status : str or list, optional
            Only leads in these statuses (``new``, ``confirmed``, ``rejected``).
        cross_only : bool
            Only cross-jurisdiction leads (the two agencies differ).
        agencies : list of str, optional
            Only leads involving one of these agencies.
        """
        thr = self.threshold if threshold is None else float(threshold)
        return self._leads.leads(
            thr, since=since, status=status, cross_only=cross_only, agencies=agencies
        )

    def lead(self, lead_id: int) -> Lead:
        """One lead (any compared pair of different cases) by id."""
        return self._leads.lead(lead_id)

    def comparison(self, a: int, b: int) -> dict | None:
        """The stored comparison of two exhibits (either order), or None.

        A dict of the ``comparisons`` row: ``score``, ``cmc_count``, the pose of the
        ``query`` exhibit's comparison, ``reason``, ``mirrored`` (1 when compared with
        opposite handedness, None when compared before it was recorded), ``created``.
        """
        return self._leads.comparison(a, b)

    def set_status(
        self, lead_id: int, status: str, *, examiner: str, note: str | None = None
    ) -> None:
        """Move a lead through the workflow: ``new``, ``confirmed`` or ``rejected``.

        The examiner and the time are kept (and audited); the latest status counts.
        """
        self._leads.set_status(lead_id, status, examiner=examiner, note=note)

    def series(self, threshold: float | None = None) -> list[Series]:
        """Connected groups of exhibits joined by leads (the rule of `leads`) or
        confirmations (rejected leads do not join): one gun, several shootings. Largest
        first."""
        return self._leads.series(self.threshold if threshold is None else float(threshold))

    # ------------------------------------------------------------------ check
    def check(self, *, deep: bool = False, head: str | None = None) -> CheckReport:
        """Check that SQLite, the stored scans and the index agree, and the audit chain
        (with the evidence rows it covers).

        Parameters
        ----------
        deep : bool
            Also reload every stored scan and check its content hash (without it: each
            file's size and byte hash against the ones recorded at ingest).
        head : str, optional
            An audit head kept elsewhere (`audit_head`): a problem when not in the chain.
        """
        rep = check(self._sql, self._exhibits, self._index, self._audit, deep=deep, head=head)
        if not any(p.startswith("database file is damaged") for p in rep.problems):
            self._lr.check(rep.problems, rep.warnings, rep.counts)
        return rep
