"""`LeadDatabase.link` on N simulated casings: in-process vs a Dask LocalCluster of 1 and 2
workers, in one run.

Usage::

    .venv/bin/python benchmarks/bench_link.py [--n 1000] [--shape 560] [--spacing 6.25] [-k 10]
    .venv/bin/python benchmarks/bench_link.py --n 10000 --shape 272 --spacing 12.5 -k 5 \
        --index compressed:10000
    .venv/bin/python benchmarks/bench_link.py --n 200 --modes local1,local2 --repeat 3

N simulated casings (default full size: 560 x 560 px at 6.25 µm, fadul-like, 4 firings
per gun; ``--shuffle``: in random order, else each gun's firings in a row) are
bulk-loaded once without correlation, which stores and embeds them (timed:
``ingest_and_embed_s``); each configuration then links a copy of that database with top-``k``
candidates per exhibit. Reported per configuration: pairs rescored per second (wall
clock), the 1 -> 2 worker scaling efficiency (rate(2) / (2 * rate(1)); target >= 0.9),
the same ratio of the workers' own rates (each worker's pairs over its time in
`compare_group`, the waits for the client left out), the CPU
seconds of this process (planning, writing and, with a LocalCluster, the scheduler: on a
2-core machine it shares the cores with the 2 workers, while 1 worker leaves it a core),
lead recall = the share of the simulator's same-gun pairs among the rescored pairs
(target >= 0.98), and peak memory (max RSS) of each worker process (or of this process
in-process). ``--repeat R`` runs the modes R times, interleaved, and reports the median
run of each (and each repeat's own efficiency): on a shared machine one run's rate moves
by 10-20 %. Prints a table; writes ``benchmarks/results/bench_link[-N].json``. Smoke
runs at tiny N say nothing about the targets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import balllink as bl
from balllink.cli import format_table
from balllink.database import LeadDatabase

PER_GUN = 4


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: not inherited through fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load(folder: Path, args) -> tuple[dict[int, int], dict]:
    """N simulated casings bulk-loaded and embedded; exhibit id -> firearm id, timings."""
    n = args.n
    stream = bl.simulate.iter_casings(
        -(-n // PER_GUN),
        PER_GUN,
        seed=args.seed,
        difficulty="fadul-like",
        shape=(args.shape, args.shape),
        spacing_um=args.spacing,
    )
    truth_of_case: dict[str, int] = {}
    items = []
    for i, (scan, truth) in enumerate(itertools.islice(stream, n)):
        truth_of_case[f"c{i}"] = int(truth["firearm_id"])
        items.append((scan, {"agency": "SIM", "case_id": f"c{i}"}))
    if args.shuffle:  # a gun's casings at random places in the collection, not in a row
        random.Random(args.seed).shuffle(items)
    with LeadDatabase(folder, index_class=args.index) as db:  # the kind stays with it
        t0 = time.perf_counter()
        db.ingest_many(items, correlate=False, jobs=args.jobs)  # stores and embeds
        t1 = time.perf_counter()
        gun_of = {e.id: truth_of_case[e.case_id] for e in db.exhibits()}
    return gun_of, {
        "ingest_and_embed_s": round(t1 - t0, 1),
        "casings_per_s": round(n / (t1 - t0), 1),
        "jobs": args.jobs,
    }


def _recall(folder: Path, gun_of: dict[int, int]) -> float:
    con = sqlite3.connect(folder / "leads.sqlite")
    pairs = {tuple(sorted(p)) for p in con.execute("SELECT a, b FROM comparisons")}
    con.close()
    same = [p for p in itertools.combinations(sorted(gun_of), 2) if gun_of[p[0]] == gun_of[p[1]]]
    return sum(p in pairs for p in same) / max(1, len(same))


def _run(mode: str, workers: int, args, workdir: Path, gun_of: dict[int, int]) -> dict:
    folder = workdir / f"{mode}{workers}"
    shutil.copytree(workdir / "loaded", folder)
    client = cluster = None
    if workers:
        import distributed

        from balllink.cli._link_cmd import local_cluster  # `balllink link --workers N`'s

        cluster = local_cluster(workers)
        client = distributed.Client(cluster)
    try:
        with LeadDatabase(folder) as db:
            t0, cpu0 = time.perf_counter(), _cpu_s()
            s = db.link(k=args.k, client=client)
            seconds, client_cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        if client is not None:
            rss = list(client.run(_peak_rss_mb).values())
        else:
            rss = [_peak_rss_mb()]
        recall = round(_recall(folder, gun_of), 4)
    finally:
        if client is not None:
            client.close()
            cluster.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "mode": mode,
        "workers": workers,
        "n": args.n,
        "rescored": s.rescored,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(s.rescored / seconds, 2) if seconds else None,
        "lead_recall": recall,
        "leads": s.leads,
        "peak_rss_mb_per_worker": [round(r, 1) for r in rss],
        # CPU of this process (planning, writing; with Dask also the scheduler's thread)
        "client_cpu_s": round(client_cpu, 1),
        # the sum of each worker's own rate (its pairs over its time in compare_group)
        "worker_pairs_per_s": round(sum(w["pairs_per_second"] for w in s.per_worker.values()), 2),
        "per_worker": s.per_worker,  # groups, pairs and pairs/s of each worker's own time
    }


def _median_row(runs: list[dict]) -> dict:
    """The run of median pairs/s (the lower middle one of an even count), with the
    median of the workers' own rates."""
    by_rate = sorted(runs, key=lambda r: r["pairs_per_s"] or 0.0)
    row = dict(by_rate[(len(by_rate) - 1) // 2])
    own = sorted(r["worker_pairs_per_s"] for r in runs)
    row["worker_pairs_per_s"] = own[(len(own) - 1) // 2]
    row["runs"] = len(runs)
    row.pop("repeat", None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="simulated casings (e.g. 10000)")
    parser.add_argument("--shape", type=int, default=560, help="simulated grid side, px")
    parser.add_argument("--spacing", type=float, default=6.25, help="grid spacing, µm")
    parser.add_argument(
        "--modes",
        default="inproc,local1,local2",
        help="comma-separated among inproc, local1, local2 (default: all three)",
    )
    parser.add_argument("-k", type=int, default=10, help="candidates per exhibit")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the modes this many times, interleaved (a noisy machine: the medians)",
    )
    parser.add_argument(
        "--index",
        default="exact",
        help="the database's index kind: exact (default) or compressed:N (network size: "
        "the exact search takes about a second per query at 10 000 casings)",
    )
    parser.add_argument(
        "--shuffle",
        action="store_true",
        help="ingest the casings in random order (default: each gun's firings in a row, "
        "as a shooting's casings are entered together)",
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="processes of the bulk ingest")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    known = {"inproc": ("in-process", 0), "local1": ("local", 1), "local2": ("local", 2)}
    modes = [known[m.strip()] for m in args.modes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        gun_of, load = _load(Path(tmp) / "loaded", args)
        print(f"{args.n} casings: {load}", flush=True)
        runs = []
        for rep in range(args.repeat):  # interleaved: a slow spell hits every mode alike
            for mode, w in modes:
                runs.append({"repeat": rep, **_run(mode, w, args, Path(tmp), gun_of)})
                print(format_table([{k: v for k, v in runs[-1].items() if k != "per_worker"}]))
    rows = [_median_row([r for r in runs if (r["mode"], r["workers"]) == m]) for m in modes]

    def efficiency(key):
        rate = {r["workers"]: r[key] for r in rows if r["mode"] == "local"}
        r1, r2 = rate.get(1), rate.get(2)
        return round(r2 / (2 * r1), 3) if r1 and r2 else None

    wall, workers = efficiency("pairs_per_s"), efficiency("worker_pairs_per_s")
    each = [  # each repeat's own ratio: how far the noise moves it
        round(b["pairs_per_s"] / (2 * a["pairs_per_s"]), 3)
        for a, b in zip(
            [r for r in runs if r["workers"] == 1], [r for r in runs if r["workers"] == 2]
        )
    ]
    print(format_table([{k: v for k, v in r.items() if k != "per_worker"} for r in rows]))
    print(f"1 -> 2 worker scaling efficiency: {wall} (target >= 0.9; "
          f"{'median of ' + str(args.repeat) + ' runs' if args.repeat > 1 else 'one run'}, "
          f"each repeat: {each}); of the workers' own rates: {workers}")  # fmt: skip
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "bench_link.json" if args.n == 1000 else f"bench_link-{args.n}.json"
    if args.shuffle:
        name = name.replace(".json", "-shuffled.json")
    (out / name).write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "scan": f"{args.shape}x{args.shape} px at {args.spacing} um, fadul-like, "
                f"{PER_GUN}/gun",
                "load": load,
                "k": args.k,
                "index": args.index,
                "order": "shuffled" if args.shuffle else "each gun's firings in a row",
                "targets": {"scaling_efficiency": 0.9, "lead_recall": 0.98},
                "repeat": args.repeat,
                "scaling_efficiency_1_to_2": wall,
                "scaling_efficiency_each_repeat": each,
                "worker_rate_efficiency_1_to_2": workers,
                "results": rows,  # the median run of each mode (by pairs/s)
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
