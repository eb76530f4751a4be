"""``balllink link`` (real stack, 4 simulated casings): in-process, the JSON summary, a
rerun on a local Dask cluster that has nothing left to compare, and bad option pairs."""

from __future__ import annotations

import json

import pytest

import balllink as bl
from balllink.cli import main
from balllink.database import LeadDatabase


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def bulk_db(tmp_path):
    """2 guns x 2 firings stored without correlation (a bulk load awaiting `link`)."""
    sims = bl.simulate.casings(2, 2, seed=21, difficulty="fadul-like")
    items = [(s, {"agency": f"A{i}", "case_id": f"c{i}"}) for i, s in enumerate(sims.scans)]
    with LeadDatabase(tmp_path / "leads.db") as db:
        db.ingest_many(items, correlate=False)
    return tmp_path / "leads.db"


def test_link_in_process_then_on_a_local_cluster(bulk_db, capsys):
    code, out, err = run(capsys, "--json", "link", "--db", bulk_db, "-k", "3")
    assert code == 0, err
    s = json.loads(out)
    assert (s["n_exhibits"], s["rescored"], s["leads"], s["scheduler"]) == (4, 6, 2, None)
    assert set(s) >= {"pairs_considered", "already_compared", "seconds", "per_worker"}
    code, out, _ = run(capsys, "leads", "--db", bulk_db)
    assert code == 0 and len(out.splitlines()) >= 4
    pytest.importorskip("distributed")
    code, out, err = run(capsys, "link", "--db", bulk_db, "--workers", "1", "--agency", "A0")
    assert code == 0, err
    assert "linked 1 exhibit(s) on tcp://" in out and "0 compared now" in out


def test_link_refuses_both_cluster_options(bulk_db, capsys):
    code, _, err = run(
        capsys, "link", "--db", bulk_db, "--workers", "2", "--scheduler", "tcp://x:8786"
    )
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "link", "--db", bulk_db, "--workers", "0")
    assert code == 2 and "--workers must be >= 1" in err


def test_the_local_cluster_workers_run_without_the_sampling_profiler():
    """`--workers N`'s cluster: N one-thread workers whose Dask profiler is off (it cost
    a tenth of their time); the setting does not leak into this process."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    from balllink.cli._link_cmd import local_cluster

    before = dask.config.get("distributed.worker.profile.enabled")
    with local_cluster(1) as cluster, distributed.Client(cluster) as client:
        seen = client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
        threads = client.nthreads()
    assert list(seen.values()) == [False] and list(threads.values()) == [1]
    assert dask.config.get("distributed.worker.profile.enabled") == before
