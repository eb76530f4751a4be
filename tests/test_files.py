"""balllink._files: the one atomic write, file hash and JSON form of metadata."""

import fnmatch
import hashlib
import json
import math
import os
import stat
from datetime import date, datetime

import numpy as np
import pytest

import balllink as bl
from balllink import _files
from balllink._files import atomic_path, atomic_write, file_sha256, jsonable
from balllink.database import _store as _db_store

posix_only = pytest.mark.skipif(os.name != "posix", reason="folder fsync is POSIX only")


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- atomic write
def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, b"old")
    atomic_write(str(target), b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_temporary_lies_beside_the_target_under_the_swept_names(tmp_path):
    target = tmp_path / "index.faiss"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.exists()
        # LeadDatabase._clean_temp sweeps "*/.*.tmp" (scans) and ".*.tmp*" (its folder)
        assert fnmatch.fnmatch(temporary.name, ".index.faiss.*.tmp")
        assert not target.exists()  # nothing visible under the final name yet
        temporary.write_bytes(b"x")
    assert target.read_bytes() == b"x"


@posix_only
def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.x3p", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.x3p").stat().st_mode) == 0o644


def test_failed_fsync_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_writer_failing_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.npz"
    atomic_write(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(b"half of the ")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_failed_rename_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_files.os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def _recording_fsync(monkeypatch, *, refuse_folders=False):
    calls = []
    real = os.fsync

    def fsync(fd):
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        calls.append(is_dir)
        if is_dir and refuse_folders:
            raise OSError(22, "Invalid argument")
        real(fd)

    monkeypatch.setattr(_files.os, "fsync", fsync)
    return calls


@posix_only
def test_the_file_then_its_folder_are_fsynced(tmp_path, monkeypatch):
    calls = _recording_fsync(monkeypatch)
    atomic_write(tmp_path / "a.bin", b"data")
    assert calls == [False, True]  # the file's data first, the rename in the folder last


@posix_only
def test_a_folder_that_refuses_fsync_does_not_fail_the_write(tmp_path, monkeypatch):
    calls = _recording_fsync(monkeypatch, refuse_folders=True)
    atomic_write(tmp_path / "a.bin", b"data")
    assert calls == [False, True]
    assert (tmp_path / "a.bin").read_bytes() == b"data"


def test_write_scan_goes_through_the_atomic_write(tmp_path, monkeypatch):
    scan = bl.Scan(np.ones((3, 4), np.float32), spacing_um=6.25)
    bl.write_scan(scan, tmp_path / "s.npz")
    before = (tmp_path / "s.npz").read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        bl.write_scan(scan.replace(heights=np.zeros((3, 4))), tmp_path / "s.npz")
    assert (tmp_path / "s.npz").read_bytes() == before
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- hash
@pytest.mark.parametrize("size", [0, 1, 3 * (1 << 20) + 17])  # empty, tiny, several chunks
def test_file_sha256_matches_hashlib(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "planted.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_file_sha256_of_a_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing.x3p")


# --------------------------------------------------------------------------- JSON form
def test_jsonable_gives_the_documented_form_of_nested_metadata():
    meta = {
        "score": np.float32(0.5),
        "count": np.int64(7),
        "ok": np.bool_(True),
        "name": np.str_("Fadul 1-1"),
        "shift": (1, np.int16(-2)),
        "surface": np.zeros((2, 2)),
        "blob": b"\x00",
        "missing": None,
        "nan": np.float64("nan"),
        "limits": [-math.inf, np.float32("inf")],
        "when": datetime(2021, 8, 25, 14, 54, 4),
        "day": date(2011, 1, 24),
        3: "int key",
        "case": {"id": "2024-0031", "kernel": np.ones(3), "deep": {"rms": np.float32(1.25)}},
        "history": [{"step": "level", "coefficients": np.ones(3)}, np.ones(2), "cut"],
    }
    got = jsonable(meta)
    assert set(got) == {
        "score", "count", "ok", "name", "shift", "missing", "nan", "limits", "when", "day",
        "3", "case", "history",
    }  # fmt: skip
    assert got["score"] == 0.5 and type(got["score"]) is float
    assert got["count"] == 7 and type(got["count"]) is int
    assert got["ok"] is True and type(got["name"]) is str
    assert got["shift"] == [1, -2] and got["missing"] is None
    assert math.isnan(got["nan"]) and type(got["nan"]) is float
    assert got["limits"] == [-math.inf, math.inf]
    assert got["when"] == "2021-08-25T14:54:04" and got["day"] == "2011-01-24"
    assert got["3"] == "int key"
    assert got["case"] == {"id": "2024-0031", "deep": {"rms": 1.25}}
    assert got["history"] == [{"step": "level"}, None, "cut"]


def test_jsonable_does_not_change_its_input():
    meta = {"shift": (1, 2), "surface": np.zeros(2)}
    jsonable(meta)
    assert meta["shift"] == (1, 2) and isinstance(meta["surface"], np.ndarray)


def test_a_container_holding_itself_is_left_out_not_recursed():
    meta = {"a": 1}
    meta["self"] = meta
    loop = [1]
    loop.append(loop)
    assert jsonable({"meta": meta, "loop": loop}) == {"meta": {"a": 1}, "loop": [1, None]}


def test_a_top_level_value_without_json_form_raises_with_the_fix():
    with pytest.raises(TypeError, match="put it in a dict"):
        jsonable(np.zeros(3))


def test_round_trip_through_json_as_the_callers_write_it():
    meta = {"depth": float("nan"), "range": (-np.inf, np.float32(np.inf)), "n": np.int32(3)}
    text = json.dumps(jsonable(meta), allow_nan=True)  # io, _x3p and _db_store all write so
    assert "NaN" in text and "-Infinity" in text
    back = json.loads(text)
    assert math.isnan(back["depth"]) and back["range"] == [-math.inf, math.inf]
    assert back["n"] == 3
    with pytest.raises(ValueError, match="Out of range float"):
        json.dumps(jsonable(meta), allow_nan=False)  # strict JSON has no NaN: not our format


@pytest.mark.parametrize("suffix", [".npz", ".x3p"])
def test_scan_files_keep_nan_metadata(tmp_path, suffix):
    meta = {"fit": {"rms": float("nan"), "range": (0.0, np.inf)}, "surface": np.ones(2)}
    scan = bl.Scan(np.ones((3, 4), np.float32), spacing_um=6.25, meta=meta)
    bl.write_scan(scan, tmp_path / f"s{suffix}")
    back = bl.read_scan(tmp_path / f"s{suffix}").meta
    assert math.isnan(back["fit"]["rms"]) and back["fit"]["range"] == [0.0, math.inf]
    assert "surface" not in back


def test_stored_database_scans_keep_nan_metadata(tmp_path):
    # the lead database used to drop NaN entries: the same policy as the scan files now
    meta = {"prepared": {"rms": float("nan"), "flags": []}, "when": datetime(2024, 5, 1)}
    scan = bl.Scan(np.ones((3, 4), np.float32), spacing_um=6.25, meta=meta)
    digest = _db_store.scan_sha256(scan)  # the store checks a file against its name
    rel = _db_store.save_scan(scan, tmp_path, digest)
    assert _leftovers(tmp_path / digest[:2]) == []
    back = _db_store.load_scan(tmp_path / rel).meta
    assert math.isnan(back["prepared"]["rms"]) and back["prepared"]["flags"] == []
    assert back["when"] == "2024-05-01T00:00:00"
