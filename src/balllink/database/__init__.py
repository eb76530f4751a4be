"""The embedded lead database: exhibits, automatic correlation, leads, series, audit trail.

One folder holds everything::

    leads.db/
        leads.sqlite       exhibits, comparisons, lead status, audit trail (SQLite, WAL)
        scans/ab/<sha256>.npz   prepared scans (balllink .npz scan files), by content hash
        index.faiss, index.ids.npy, index.json   the candidate index and its manifest
        write.lock         held by the one process that writes

`LeadDatabase` is a facade over one module per job: ``_schema`` (SQLite schema, migrations,
connection), ``_store`` (stored scans, their cache, the write lock), ``_exhibits`` (the
exhibits table), ``_settings`` (the lead threshold), ``_audit`` (the hash-chained trail),
``_index_cache`` (the candidate index on disk), ``_ingest`` (ingest and exhibit fields),
``_search`` (scope, retrieval, rescoring, chance probability), ``_leads`` (leads, status,
series), ``_link`` (batch linking of a scope, in-process or on Dask) and ``_check``
(integrity).

Crash safety: a stored scan is written (temporary file, fsync, rename) before the SQLite
row that references it; each exhibit with its comparisons and audit record is one SQLite
transaction; the index is a cache of the stored scans, saved atomically at the end of a
batch and brought up to date (or rebuilt, with a warning) when the database is opened.
Killing a process at any moment therefore leaves a database that opens, passes `check`,
and completes the same ingest when it is run again, without duplicates.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp, LeadDatabase(tmp + "/leads.db") as db:
...     db.count()
0
"""

from ._audit import AuditReport
from ._check import CheckReport
from ._db import LeadDatabase
from ._exhibits import Exhibit
from ._ingest import FlaggedExhibit, IngestReport, exhibit_fields
from ._link import LinkSummary
from ._search import Retrieval
from ._users import MIN_PASSWORD, ROLES, User, check_user_name

__all__ = [
    "MIN_PASSWORD",
    "ROLES",
    "AuditReport",
    "CheckReport",
    "Exhibit",
    "FlaggedExhibit",
    "IngestReport",
    "LeadDatabase",
    "LinkSummary",
    "Retrieval",
    "User",
    "check_user_name",
    "exhibit_fields",
]
