"""The index at network scale: the folder form memory-mapped (`CasingIndex.save(...,
directory=True)`, `load(..., mmap=True)`) and `ShardedIndex` (shards searched as one: the
planted answer is the one-index search over the same casings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import balllink as bl
from balllink.features import embed
from balllink.index import ShardedIndex


@pytest.fixture(scope="module")
def sims():
    s = bl.simulate.casings(8, 3, seed=3, difficulty="easy", shape=(160, 160), spacing_um=12.5)
    rows = [embed(x) for x in s.scans]
    ids = np.asarray(s.truth["casing_id"], np.int64) + 100
    return ids, rows, np.asarray(s.truth["firearm_id"])


def _ranking(ids, scores):
    """Per query: casing id -> votes (non-zero), the full ranking as a dict."""
    return [{int(i): float(v) for i, v in zip(r, s) if i >= 0} for r, s in zip(ids, scores)]


def test_sharded_flat_search_equals_one_index(sims):
    ids, rows, guns = sims
    one = bl.CasingIndex()
    one.add(ids, rows)
    keys = [f"region{g % 3}" for g in guns]  # scope keys: 3 shards of unequal size
    sharded = ShardedIndex.split(ids, rows, keys)
    assert len(sharded.shards) == 3 and len(sharded) == len(one) == len(ids)
    queries = rows[::4]
    full = len(ids)
    a_ids, a_scores = one.search(queries, k=full)
    b_ids, b_scores = sharded.search(queries, k=full)
    assert _ranking(a_ids, a_scores) == _ranking(b_ids, b_scores)  # every casing's votes
    np.testing.assert_array_equal(a_scores, b_scores)
    a5, _ = one.search(queries, k=5)
    b5, _ = sharded.search(queries, k=5)
    np.testing.assert_array_equal(a5, b5)  # the same top 5 (no ties among these casings)


def test_search_restricted_to_shard_keys(sims):
    ids, rows, guns = sims
    keys = ["a" if g < 4 else "b" for g in guns]
    sharded = ShardedIndex.split(ids, rows, keys)
    only_a = bl.CasingIndex()
    sel = [i for i, key in enumerate(keys) if key == "a"]
    only_a.add(ids[sel], [rows[i] for i in sel])
    got, scores = sharded.search(rows[:3], k=6, keys=["a"])
    want, want_scores = only_a.search(rows[:3], k=6)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(scores, want_scores)
    with pytest.raises(KeyError, match="no shard 'c'"):
        sharded.search(rows[:1], keys=["c"])


def test_sharded_ivf_recall_against_exact(sims):
    """IVF shards (4 lists, 2 visited) against exact search: recall@5 of the exact top 5
    casings, measured here; tolerance 0.8 (each shard visits half its lists)."""
    ids, rows, guns = sims
    exact = bl.CasingIndex()
    exact.add(ids, rows)
    keys = [g % 2 for g in guns]
    sharded = ShardedIndex.split(
        ids, rows, keys, make=lambda: bl.CasingIndex("IVF4,Flat", nprobe=2)
    )
    queries = rows[::2]
    want, _ = exact.search(queries, k=5)
    got, _ = sharded.search(queries, k=5)
    hits = [len(set(w[w >= 0]) & set(g)) / max(1, (w >= 0).sum()) for w, g in zip(want, got)]
    recall = float(np.mean(hits))
    assert recall >= 0.8, recall


def test_shards_must_share_search_parameters(sims):
    ids, rows, _ = sims
    a, b = bl.CasingIndex(), bl.CasingIndex(neighbors=4)
    a.add(ids[:2], rows[:2])
    b.add(ids[2:4], rows[2:4])
    with pytest.raises(ValueError, match="shard 'b': neighbors=4"):
        ShardedIndex({"a": a, "b": b})
    with pytest.raises(ValueError, match="give one of each per casing"):
        ShardedIndex.split(ids[:2], rows[:2], ["x"])


def test_folder_form_memory_mapped_searches_identically(sims, tmp_path):
    ids, rows, _ = sims
    idx = bl.CasingIndex("IVF4,Flat", nprobe=4)
    idx.add(ids, rows)
    idx.save(tmp_path / "shard", directory=True)
    idx.save(tmp_path / "shard", directory=True)  # replaces the folder whole
    mapped = bl.CasingIndex.load(tmp_path / "shard", mmap=True)
    assert isinstance(mapped.pose_, np.memmap) and isinstance(mapped.casing_ids_, np.memmap)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: FAISS mapped its file instead of reading it
        assert str(tmp_path / "shard" / "faiss.index") in maps.read_text()
    read = bl.CasingIndex.load(tmp_path / "shard")
    want = idx.search(rows[:4], k=5)
    for other in (mapped, read):
        got = other.search(rows[:4], k=5)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert int(ids[0]) in mapped and len(mapped) == len(ids)
    with pytest.raises(ValueError, match=r"memory-mapped read-only from .*shard"):
        mapped.add([1], rows[:1])
    with pytest.raises(ValueError, match="memory-mapped read-only"):
        mapped.remove([int(ids[0])])
    read.add([1], rows[:1])  # read without mmap: an ordinary index


def test_mmap_refuses_single_file_and_names_damaged_members(sims, tmp_path):
    ids, rows, _ = sims
    idx = bl.CasingIndex()
    idx.add(ids[:3], rows[:3])
    idx.save(tmp_path / "one.blx")
    with pytest.raises(ValueError, match=r"one\.blx: a single-file .*directory=True"):
        bl.CasingIndex.load(tmp_path / "one.blx", mmap=True)
    idx.save(tmp_path / "dir", directory=True)
    (tmp_path / "dir" / "pose.npy").write_bytes(b"not numpy")
    with pytest.raises(bl.IndexFormatError, match=r"pose\.npy: missing or damaged"):
        bl.CasingIndex.load(tmp_path / "dir", mmap=True)
    idx.save(tmp_path / "dir2", directory=True)
    np.save(tmp_path / "dir2" / "starts.npy", np.arange(2, dtype=np.int64))
    with pytest.raises(bl.IndexFormatError, match="array sizes disagree"):
        bl.CasingIndex.load(tmp_path / "dir2")
    (tmp_path / "dir3").mkdir()
    with pytest.raises(bl.IndexFormatError, match=r"dir3: not a balllink casing index folder"):
        bl.CasingIndex.load(tmp_path / "dir3")


def test_sharded_search_on_dask_equals_sequential(sims, tmp_path):
    distributed = pytest.importorskip("distributed")
    ids, rows, guns = sims
    keys = [g % 2 for g in guns]
    built = ShardedIndex.split(ids, rows, keys)
    paths = {}
    for key, shard in built.shards.items():
        paths[key] = tmp_path / f"shard{key}"
        shard.save(paths[key], directory=True)
    on_disk = ShardedIndex(paths, mmap=True)
    want = built.search(rows[:4], k=5)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        got = on_disk.search(rows[:4], k=5, client=client)
        with pytest.raises(ValueError, match="held in memory only"):
            built.search(rows[:1], client=client)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
