"""CasingIndex: planted retrieval, Fadul recall, save/load, bad files, remove, padding."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import balllink as bl
from balllink.features import embed
from helpers import rotate_scan


@pytest.fixture(scope="module")
def sims():
    s = bl.simulate.casings(12, 3, seed=5, difficulty="easy", shape=(200, 200), spacing_um=12.5)
    return s, [embed(x) for x in s.scans]


@pytest.fixture(scope="module")
def fadul(fadul_dir, fadul_truth):
    files = sorted(fadul_dir.glob("*.x3p"))
    scans = [bl.read_scan(p) for p in files]
    labels = np.array([fadul_truth[p.name] for p in files])
    rng = np.random.default_rng(11)
    queries = [rotate_scan(s, rng.uniform(0, 360), rng.uniform(-20, 20, 2)) for s in scans]
    return scans, labels, [embed(s) for s in scans], [embed(q) for q in queries]


def _flat_index(sims, factory=None, **kw):
    s, rows = sims
    idx = bl.CasingIndex(factory, **kw)
    idx.add(s.truth["casing_id"] + 1000, rows)
    return idx


def test_fadul_recall_with_arbitrary_rotation(fadul):
    scans, labels, db, queries = fadul
    n = len(scans)
    ids = np.random.default_rng(0).permutation(n).astype(np.int64) + 500  # no file-order hint
    index = bl.CasingIndex()
    index.add(ids, db)
    assert len(index) == n
    got, scores = index.search(queries, k=11)
    assert got.shape == scores.shape == (n, 11)
    pos = {int(c): j for j, c in enumerate(ids)}
    recall, first = [], []
    for i in range(n):
        ranked = [pos[int(c)] for c in got[i] if c >= 0 and pos[int(c)] != i][:10]
        mates = labels == labels[i]
        mates[i] = False
        recall.append(mates[ranked].sum() / mates.sum())
        first.append(mates[ranked[0]])
        assert np.all(np.diff(scores[i]) <= 0)  # best first
    assert np.mean(recall) >= 0.95
    assert np.mean(first) >= 0.90
    # the rotated copy of the query itself ranks first when it is in the index
    assert np.mean([pos[int(got[i, 0])] == i for i in range(n)]) >= 0.95


def test_planted_simulated_casing_retrieves_its_firearm(sims):
    s, rows = sims
    truth = s.truth
    index = bl.CasingIndex()
    keep = truth["casing_id"] % 3 != 0  # firing 0 of each firearm is the query, not stored
    index.add(truth["casing_id"][keep], [r for r, k in zip(rows, keep, strict=True) if k])
    queries = [r for r, k in zip(rows, keep, strict=True) if not k]
    got, _ = index.search(queries, k=2)
    want = truth["firearm_id"][~keep]
    firearm_of = dict(zip(truth["casing_id"].tolist(), truth["firearm_id"].tolist(), strict=True))
    assert [firearm_of[int(c)] for c in got[:, 0]] == want.tolist()
    assert [firearm_of[int(c)] for c in got[:, 1]] == want.tolist()
    # the simulator rotated them by arbitrary angles: check the truth really did
    assert np.ptp(truth["rotation_deg"]) > 180


def test_planted_rotation_and_shift_of_a_stored_scan(sims):
    s, _rows = sims
    index = _flat_index(sims)
    target = 7
    q = rotate_scan(s.scans[target], 211.0, (6.0, -4.0))
    got, scores = index.search([q], k=3)
    assert got[0, 0] == s.truth["casing_id"][target] + 1000
    assert scores[0, 0] > 2 * scores[0, 2]


def test_padding_with_minus_one_when_k_exceeds_size(sims):
    _s, rows = sims
    index = bl.CasingIndex()
    index.add([1, 2], rows[:2])
    got, scores = index.search(rows[:1], k=5)
    assert got.dtype == np.int64 and scores.dtype == np.float32
    assert got.shape == (1, 5)
    assert got[0, 0] == 1
    assert np.all(got[0, 2:] == -1) and np.all(scores[0, 2:] == 0)
    empty = bl.CasingIndex()
    assert np.all(empty.search(rows[:2], k=3)[0] == -1)


def test_search_accepts_scans_and_descriptor_tables_alike(sims):
    s, rows = sims
    index = _flat_index(sims)
    a = index.search(s.scans[:3], k=4)
    b = index.search(rows[:3], k=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("factory", [None, "HNSW16", "IVF8,Flat", "IVF8_HNSW32,PQ52x4fs"])
def test_remove(sims, factory):
    s, rows = sims
    index = _flat_index(sims, factory)
    cid = int(s.truth["casing_id"][4]) + 1000
    assert cid in index
    before, _ = index.search(rows[4:5], k=3)
    assert before[0, 0] == cid
    assert index.remove([cid, 123456]) == 1
    assert len(index) == len(rows) - 1 and cid not in index
    after, _ = index.search(rows[4:5], k=len(rows))
    assert cid not in after
    # the other firings of that firearm are still found first
    firearm_of = dict(zip((s.truth["casing_id"] + 1000).tolist(), s.truth["firearm_id"].tolist()))
    assert firearm_of[int(after[0, 0])] == s.truth["firearm_id"][4]
    index.add([cid], rows[4:5])  # can be re-added
    assert index.search(rows[4:5], k=1)[0][0, 0] == cid


@pytest.mark.parametrize("factory", [None, "HNSW16", "IVF8,PQ8x4", "IVF8_HNSW32,PQ52x4fs"])
def test_save_load_round_trip_searches_identically(sims, tmp_path, factory):
    s, rows = sims
    index = _flat_index(sims, factory, nprobe=4, query_keypoints=100)
    index.remove([1000 + int(s.truth["casing_id"][0])])
    path = tmp_path / "casings.blx"
    index.save(path)
    back = bl.CasingIndex.load(path)
    assert len(back) == len(index) and back.factory_ == index.factory_
    assert back.nprobe == 4 and back._params() == index._params()
    a = index.search(rows, k=6)
    b = back.search(rows, k=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_files_raise_index_format_error_naming_the_file(sims, tmp_path):
    index = _flat_index(sims)
    good = tmp_path / "good.blx"
    index.save(good)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.blx"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.blx"
    foreign.write_text("this is not an index\n")
    other_npz = tmp_path / "other.npz"
    np.savez(other_npz, a=np.arange(3))
    missing = tmp_path / "missing.blx"
    for bad in (truncated, foreign, other_npz, missing):
        with pytest.raises(bl.IndexFormatError) as info:
            bl.CasingIndex.load(bad)
        assert str(bad) in str(info.value)

    # a file written by another descriptor version
    with zipfile.ZipFile(good) as zf:
        parts = {name: zf.read(name) for name in zf.namelist()}
    with np.load(good) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
    meta["descriptor_version"] = "kp-polar-fourier-0"
    older = tmp_path / "older.blx"
    arrays = {}
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(older, "wb") as fh:
        np.savez(fh, **arrays)
    assert parts  # the good file really is a zip of arrays
    with pytest.raises(bl.IndexFormatError, match="descriptor version") as info:
        bl.CasingIndex.load(older)
    assert str(older) in str(info.value)

    # parameters: a file from before query_keypoints loads with its default; an unknown
    # or invalid parameter is refused with the file named, not a TypeError
    for change, ok in (("drop", True), ("unknown", False), ("invalid", False)):
        params = json.loads(arrays["meta"].tobytes().decode())["params"]
        meta2 = dict(meta, descriptor_version=bl.features.DESCRIPTOR_VERSION)
        if change == "drop":
            params.pop("query_keypoints")
        elif change == "unknown":
            params["from_the_future"] = 1
        else:
            params["neighbors"] = 0
        meta2["params"] = params
        path = tmp_path / f"params-{change}.blx"
        with open(path, "wb") as fh:
            np.savez(fh, **(arrays | {"meta": np.frombuffer(json.dumps(meta2).encode(), np.uint8)}))
        if ok:
            assert bl.CasingIndex.load(path).query_keypoints is None
        else:
            with pytest.raises(bl.IndexFormatError, match="parameters") as info:
                bl.CasingIndex.load(path)
            assert str(path) in str(info.value)


def test_add_validates_its_input(sims):
    _s, rows = sims
    index = bl.CasingIndex()
    with pytest.raises(ValueError, match="2 ids for 1"):
        index.add([1, 2], rows[:1])
    with pytest.raises(ValueError, match="duplicates"):
        index.add([1, 1], rows[:2])
    with pytest.raises(ValueError, match="shape"):
        index.add([1], [np.zeros((3, 5), np.float32)])
    index.add([1], rows[:1])
    with pytest.raises(ValueError, match="already in the index"):
        index.add([1], rows[:1])
    with pytest.raises(ValueError, match="factory"):
        bl.CasingIndex("NotAFactory").add([2], rows[:1])
    with pytest.raises(ValueError, match="k must be"):
        index.search(rows[:1], k=0)


def test_progress_is_reported_for_adds(sims):
    _s, rows = sims
    seen = []
    index = bl.CasingIndex()
    index.add(np.arange(len(rows)), rows, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(rows), len(rows))
    assert all(d <= t for d, t in seen)


def test_compressed_configuration_scales_its_lists_and_finds_firearms(sims):
    small, large = bl.CasingIndex.compressed(10_000), bl.CasingIndex.compressed(10**6)
    assert small.factory == "IVF512_HNSW32,PQ52x4fs" and small.max_stored == 80
    assert large.factory == "IVF65536_HNSW32,PQ52x4fs" and large.query_keypoints == 128
    assert bl.CasingIndex.compressed(1000, nprobe=8).nprobe == 8
    with pytest.raises(ValueError, match="n_casings"):
        bl.CasingIndex.compressed(0)
    s, rows = sims
    index = bl.CasingIndex.compressed(len(rows), nprobe=64)  # 64 lists: all visited
    index.add(s.truth["casing_id"], rows)
    got, scores = index.search(rows, k=3)
    firearm = s.truth["firearm_id"]
    # every casing finds itself first and a same-firearm casing second
    assert np.array_equal(got[:, 0], s.truth["casing_id"])
    assert (got[:, 1] >= 0).all()
    assert np.mean(firearm[got[:, 1]] == firearm) >= 0.9
    assert np.all(scores[:, 0] >= scores[:, 1])


def test_query_keypoints_caps_the_votes(sims):
    _, rows = sims
    index = _flat_index(sims, query_keypoints=5)
    _, scores = index.search(rows[:4], k=2)
    assert 2 <= scores[:, 0].min() and scores.max() <= 5
    with pytest.raises(ValueError, match="query_keypoints"):
        _flat_index(sims, query_keypoints=0)


def test_many_lists_are_trained_by_two_level_kmeans(sims, monkeypatch):
    import balllink.index as index_mod

    calls = []

    def counting(x, nc1, nc2, **kw):
        calls.append((len(x), nc1, nc2))
        return index_mod.two_level_clustering.__wrapped__(x, nc1, nc2, **kw)

    counting.__wrapped__ = index_mod.two_level_clustering
    monkeypatch.setattr(index_mod, "_TWO_LEVEL_NLIST", 16)
    monkeypatch.setattr(index_mod, "two_level_clustering", counting)
    _, rows = sims
    index = _flat_index(sims, "IVF64,Flat", nprobe=64)
    assert len(calls) == 1 and calls[0][1:] == (8, 64)  # sqrt(64) coarse clusters, 64 lists
    ivf = index.index_
    assert ivf.quantizer.ntotal == 64 and index.index_.is_trained
    sizes = np.array([ivf.invlists.list_size(i) for i in range(64)])
    assert sizes.sum() == index.ntotal and (sizes > 0).sum() >= 48  # lists really used
    # with every list visited the search equals exact search
    exact = _flat_index(sims)
    np.testing.assert_array_equal(index.search(rows, k=4)[0], exact.search(rows, k=4)[0])
