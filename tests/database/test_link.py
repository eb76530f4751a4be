"""`LeadDatabase.link`: batch linking of a scope, in-process and on a Dask LocalCluster;
idempotent, and finished without duplicates after the client or a worker was killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time

import numpy as np
import pytest
from tests.conftest import fake_compare_many, fake_scans, open_stand_in_db

import balllink as bl
from balllink.database import LeadDatabase


class Stop(Exception):
    """The client 'killed' from inside the run."""


def _items(scans):
    return [(s, {"agency": f"A{i % 3}", "case_id": f"c{i}"}) for i, s in enumerate(scans)]


def _pairs(db) -> list[tuple[int, int]]:
    con = sqlite3.connect(db.sqlite_path)
    try:
        return [tuple(r) for r in con.execute("SELECT a, b FROM comparisons ORDER BY a, b")]
    finally:
        con.close()


def _same_gun(ids, guns) -> set[tuple[int, int]]:
    return {
        (ids[i], ids[j])
        for i in range(len(ids))
        for j in range(i + 1, len(ids))
        if guns[i] == guns[j]
    }


@pytest.fixture(scope="module")
def sims():
    s = bl.simulate.casings(3, 2, seed=21, difficulty="fadul-like")
    return s.scans, [int(t["firearm_id"]) for t in s.truth]


def _loaded(path, scans, **kw):
    db = LeadDatabase(path, **kw)
    ids = db.ingest_many(_items(scans), correlate=False).ingested
    return db, ids


def test_link_in_process_finds_the_same_gun_pairs_and_is_idempotent(tmp_path, sims, monkeypatch):
    """Real stack, through the index (k=2 of 5 others): the same-gun pairs, no other,
    are leads; a second run compares nothing; everything is audited and checks clean.
    The stored scans are prepared: none is prepared again when read back to compare."""
    from balllink.preprocessing import _chain

    scans, guns = sims
    db, ids = _loaded(tmp_path / "l.db", scans)
    real, again_prepared = _chain.preprocess, []
    monkeypatch.setattr(
        _chain, "preprocess", lambda *a, **k: again_prepared.append(a) or real(*a, **k)
    )
    with db:
        calls = []
        s = db.link(k=2, progress=lambda d, t: calls.append((d, t)))
        assert again_prepared == []
        assert s.n_exhibits == 6 and s.scheduler is None
        assert s.rescored == len(_pairs(db)) == s.pairs_considered - s.already_compared
        assert {(x.a, x.b) for x in db.leads()} == _same_gun(ids, guns)
        assert s.leads == len(db.leads())
        assert calls[-1] == (6, 6)
        (worker,) = s.per_worker.values()
        assert worker["pairs"] == s.rescored and worker["groups"] == s.groups
        again = db.link(k=2)
        assert again.rescored == 0 and again.groups == 0
        assert again.already_compared == again.pairs_considered == s.pairs_considered
        assert len(_pairs(db)) == s.rescored
        assert {r["action"] for r in db.audit()} >= {"compare", "link"}
        rep = db.check()
        assert rep.ok, rep.problems
        assert s.as_dict()["rescored"] == s.rescored


def test_in_process_groups_run_side_by_side_and_match_one_at_a_time(tmp_path, sims, monkeypatch):
    """In-process, after the first group (in the calling thread), the groups run on one
    thread per core, each under a one-thread limit; pairs, scores and leads are those of
    the run that compares one group at a time."""
    import threading

    from balllink import _threads
    from balllink.database import _link

    if not _threads.numba_threadsafe():
        bl.compare(*sims[0][:2])  # a parallel kernel starts Numba's threading layer
    if not _threads.numba_threadsafe():
        pytest.skip("Numba's threading layer here is not thread-safe: groups run in turn")
    scans, guns = sims
    real, ran = _link.compare_group, []

    def spy(task, comparer):
        ran.append((threading.current_thread().name, _threads.threads_allowed()))
        return real(task, comparer)

    monkeypatch.setattr(_link, "compare_group", spy)
    monkeypatch.setattr(_link, "threads_allowed", lambda: 2)  # two cores, whatever this has
    side, ids = _loaded(tmp_path / "side.db", scans)
    turn, ids2 = _loaded(tmp_path / "turn.db", scans)
    with side, turn:
        s = side.link(k=3)
        assert s.groups >= 3 and len(ran) == s.groups
        assert ran[0][0] == threading.current_thread().name  # the first warms, here
        assert {name for name, _ in ran[1:]} <= {"balllink-link_0", "balllink-link_1"}
        assert {limit for _, limit in ran[1:]} == {1}
        monkeypatch.setattr(_link, "threads_allowed", lambda: 1)
        ran.clear()
        t = turn.link(k=3)
        assert {name for name, _ in ran} == {threading.current_thread().name}
        assert ids == ids2 and _pairs(side) == _pairs(turn) and s.rescored == t.rescored
        for pa in _pairs(turn):
            assert side.comparison(*pa)["score"] == pytest.approx(turn.comparison(*pa)["score"])
        assert {(x.a, x.b) for x in side.leads()} == _same_gun(ids, guns)
        assert {(x.a, x.b) for x in side.leads()} == {(x.a, x.b) for x in turn.leads()}
        assert side.check().ok


def test_link_skips_pairs_an_ingest_compared_and_keeps_to_its_scope(tmp_path):
    scans, _ = fake_scans(3, 2, seed=4)
    with open_stand_in_db(tmp_path / "s.db") as db:
        first = db.ingest_many(_items(scans[:3])).ingested  # correlated: 3 pairs stored
        db.ingest_many(_items(scans[3:]), correlate=False)
        assert len(_pairs(db)) == 3
        s = db.link(scope={"agencies": ["A0"]}, k=5)  # exhibits 1 and 4
        assert (s.n_exhibits, s.pairs_considered, s.rescored) == (2, 1, 1)
        s = db.link(k=5)
        assert s.pairs_considered == 15 and s.already_compared == 4 and s.rescored == 11
        assert len(_pairs(db)) == 15 and first == [1, 2, 3]
        assert db.check().ok


def test_a_killed_client_is_finished_by_a_rerun_without_duplicates(tmp_path):
    scans, guns = fake_scans(4, 2, seed=5)
    with open_stand_in_db(tmp_path / "whole.db") as db:
        db.ingest_many(_items(scans), correlate=False)
        whole = db.link(k=3, batch=2)
        expected = _pairs(db)

    with open_stand_in_db(tmp_path / "k.db") as db:
        ids = db.ingest_many(_items(scans), correlate=False).ingested

        def die(done, total):
            if _pairs(db):  # the first group is stored: the client dies here
                raise Stop

        with pytest.raises(Stop):
            db.link(k=3, batch=2, progress=die)
        partial = len(_pairs(db))
        assert 0 < partial < len(expected)
    with open_stand_in_db(tmp_path / "k.db") as db:  # a new process, as after a kill
        rest = db.link(k=3, batch=2)
        assert rest.already_compared == partial
        assert _pairs(db) == expected  # UNIQUE(a, b): a second row would have raised
        assert rest.rescored + partial == whole.rescored
        assert {(x.a, x.b) for x in db.leads()} == _same_gun(ids, guns)
        rep = db.check()
        assert rep.ok, rep.problems


def test_a_damaged_stored_scan_is_left_out_and_quarantined(tmp_path):
    scans, _ = fake_scans(2, 2, seed=6)
    with open_stand_in_db(tmp_path / "d.db") as db:
        ids = db.ingest_many(_items(scans), correlate=False).ingested
        db.index  # the index is built from the intact scans  # noqa: B018
        path = db.exhibit(ids[-1]).scan_path
        db.close()
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 64)
    with open_stand_in_db(tmp_path / "d.db") as db:
        s = db.link(k=3)
        assert s.damaged == [ids[-1]] and s.rescored == 3
        assert db.exhibit(ids[-1]).flagged


# --------------------------------------------------------------------------- on Dask
@pytest.fixture(scope="module")
def cluster():
    """Two one-thread worker processes (they inherit PYTHONPATH, so see this source)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        yield client


def _test_code_by_value() -> None:
    """Send the stand-in comparers of the tests by value: the workers cannot import them."""
    import cloudpickle

    for mod in {fake_compare_many.__module__, __name__}:
        cloudpickle.register_pickle_by_value(sys.modules[mod])


def _plain_pairs(tmp_path, scans, k: int) -> list[tuple[int, int]]:
    """The pairs an in-process link of ``scans`` with the stand-in comparer stores."""
    with open_stand_in_db(tmp_path / "plain.db") as db:
        db.ingest_many(_items(scans), correlate=False)
        db.link(k=k)
        return _pairs(db)


@pytest.mark.slow
def test_the_same_leads_in_process_and_on_a_local_cluster(tmp_path, sims, cluster):
    scans, guns = sims
    here, ids = _loaded(tmp_path / "here.db", scans[:4])
    there, ids2 = _loaded(tmp_path / "there.db", scans[:4])
    with here, there:
        a = here.link(k=3)
        b = there.link(k=3, client=cluster, batch=1)
        assert ids == ids2 and a.rescored == b.rescored == 6
        assert b.scheduler == cluster.scheduler.address
        assert set(b.per_worker) <= set(cluster.scheduler_info()["workers"])
        assert sum(w["pairs"] for w in b.per_worker.values()) == 6
        assert {(x.a, x.b) for x in here.leads()} == {(x.a, x.b) for x in there.leads()}
        assert {(x.a, x.b) for x in there.leads()} == _same_gun(ids, guns[:4])
        for pa, pb in zip(_pairs(here), _pairs(there)):
            assert here.comparison(*pa)["score"] == pytest.approx(there.comparison(*pb)["score"])
        assert there.check().ok


def slow_compare(query, candidates):
    """The stand-in comparer, slowed (sleeping, not computing) so that a worker can be
    killed while it holds tasks."""
    time.sleep(0.3)
    return fake_compare_many(query, candidates)


@pytest.mark.slow
def test_runs_of_consecutive_groups_go_to_the_workers_as_one_task_each(
    tmp_path, cluster, monkeypatch
):
    """With 2 workers and a batch of about 20 groups, runs of 2 consecutive groups are
    submitted (each one Dask task); every group is stored as in the in-process run."""
    from balllink.database import _link

    _test_code_by_value()
    scans, guns = fake_scans(11, 2, seed=12)
    with open_stand_in_db(tmp_path / "plain.db") as db:
        ids = db.ingest_many(_items(scans), correlate=False).ingested
        db.link(k=3)
        expected = _pairs(db)
    real, cut = _link.runs_of_groups, []
    monkeypatch.setattr(
        _link, "runs_of_groups", lambda t, n: cut.append([len(r) for r in real(t, n)]) or real(t, n)
    )
    with open_stand_in_db(tmp_path / "runs.db") as db:
        db.ingest_many(_items(scans), correlate=False)
        s = db.link(k=3, client=cluster)
        assert cut and max(max(c) for c in cut) == 2  # 16..23 groups, 2 slots: runs of 2
        assert sum(map(sum, cut)) == s.groups == sum(w["groups"] for w in s.per_worker.values())
        assert _pairs(db) == expected and s.rescored == len(expected)
        assert {(x.a, x.b) for x in db.leads()} == _same_gun(ids, guns)
        assert db.check().ok


@pytest.mark.slow
def test_a_worker_killed_mid_run_ends_without_duplicates(tmp_path, cluster):
    _test_code_by_value()
    scans, guns = fake_scans(5, 2, seed=8)
    expected = _plain_pairs(tmp_path, scans, k=4)
    killed = []

    def kill_one(done, total):
        """After the first stored group, SIGKILL the worker holding the most tasks."""
        if done and not killed:
            held = cluster.processing()
            addr = max(held, key=lambda w: len(held[w]))
            pid = cluster.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, len(held[addr])))

    with open_stand_in_db(tmp_path / "w.db", comparer=slow_compare) as db:
        ids = db.ingest_many(_items(scans), correlate=False).ingested
        s = db.link(k=4, client=cluster, batch=2, progress=kill_one)
        assert killed and killed[0][1] > 0 and s.failed == []  # it held tasks
        assert _pairs(db) == expected and s.rescored == len(expected)
        assert {(x.a, x.b) for x in db.leads()} == _same_gun(ids, guns)
        again = db.link(k=4, client=cluster)
        assert again.rescored == 0
        rep = db.check()
        assert rep.ok, rep.problems
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one
    assert killed[0][0] not in cluster.run(os.getpid).values()
    assert np.isfinite(s.seconds)


@pytest.mark.slow
def test_the_scope_survives_the_death_of_every_worker_holding_it(tmp_path, cluster):
    """The scope's ids (which every retrieval task reads) are a task's result on the
    cluster: when each worker holding them is killed mid-run, the scheduler computes
    them again and the run finishes, without duplicates (scattered data would be lost,
    and the run with it)."""
    _test_code_by_value()
    scans, guns = fake_scans(6, 2, seed=9)
    expected = _plain_pairs(tmp_path, scans, k=4)
    killed = []

    def kill_holders(done, total):
        if done and not killed:
            holders = {
                w
                for key, ws in cluster.who_has().items()
                if key.startswith(("asarray", "ndarray"))
                for w in ws
            }
            for addr in holders:
                os.kill(cluster.run(os.getpid, workers=[addr])[addr], signal.SIGKILL)
            killed.append(sorted(holders))

    with open_stand_in_db(tmp_path / "w.db", comparer=slow_compare) as db:
        ids = db.ingest_many(_items(scans), correlate=False).ingested
        s = db.link(k=4, client=cluster, batch=1, progress=kill_holders)
        assert killed and killed[0], "no worker held the scope when the first group was stored"
        assert _pairs(db) == expected and s.rescored == len(expected) and s.failed == []
        assert {(x.a, x.b) for x in db.leads()} == _same_gun(ids, guns)
        assert db.check().ok
    cluster.wait_for_workers(2, timeout=60)


@pytest.mark.slow
def test_the_workers_search_the_saved_index_and_plan_as_the_client_would(
    tmp_path, sims, cluster, monkeypatch
):
    """Through the index (k=2 of 5 others): the workers retrieve (`retrieve_group` on the
    saved index file); the client never searches, and the candidate graph, the pairs and
    the leads are those of the in-process run."""
    scans, guns = sims
    here, ids = _loaded(tmp_path / "here.db", scans)
    there, _ = _loaded(tmp_path / "there.db", scans)
    with here, there:
        a = here.link(k=2)
        searched = []
        real = there._searcher.retrieve_many
        monkeypatch.setattr(
            there._searcher, "retrieve_many", lambda *x, **k: searched.append(x) or real(*x, **k)
        )
        b = there.link(k=2, client=cluster, batch=2)
        assert searched == []  # the index was searched on the workers only
        assert (b.pairs_considered, b.already_compared) == (a.pairs_considered, a.already_compared)
        assert _pairs(here) == _pairs(there) and b.rescored == a.rescored
        assert {(x.a, x.b) for x in there.leads()} == _same_gun(ids, guns)
        assert there.check().ok


@pytest.mark.slow
def test_a_query_a_worker_cannot_read_is_quarantined_by_the_client(tmp_path, cluster):
    _test_code_by_value()
    scans, _ = fake_scans(3, 2, seed=6)
    with open_stand_in_db(tmp_path / "d.db") as db:
        ids = db.ingest_many(_items(scans), correlate=False).ingested
        db.index  # the index is built (and saved) from the intact scans  # noqa: B018
        path = db.exhibit(ids[0]).scan_path
        db.close()
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 64)
    with open_stand_in_db(tmp_path / "d.db") as db:
        s = db.link(k=3, client=cluster, batch=2)
        assert s.damaged == [ids[0]] and db.exhibit(ids[0]).flagged
        assert all(ids[0] not in p for p in _pairs(db)) and s.rescored > 0
        rep = db.check()  # the damage is reported, and nothing else
        assert rep.problems and all(p.startswith(f"exhibit {ids[0]}:") for p in rep.problems)
