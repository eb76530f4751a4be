"""Run one benchmark on two revisions of balllink, alternating, in one sitting.

A change that should not move a figure (a refactor, a layout change) is checked by running
the same benchmark on the revision before it and on the working tree, interleaved
(base, new, base, new, ...) so that the shared machine's load falls on both alike. Each
tree runs its own copy of the script against its own ``src/`` (``PYTHONPATH``), and the
JSON the script writes is collected after each run. Prints a table of the chosen figures
(median over rounds, and new / base) and writes ``benchmarks/results/ab_<script>.json``.

    .venv/bin/python benchmarks/ab_revisions.py --base d86ba31 --script bench_compare.py \\
        --result bench_compare.json --keys default_many.mean_s,default_single.median_s \\
        --rounds 3 -- --many 40

``--base`` is any git revision (a temporary worktree is made and removed) or a folder that
already holds a checkout. Numba caches are per tree, so the first round of a fresh tree
compiles; use ``--warmup`` to run each tree once before the measured rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def _run(tree: Path, script: str, result: str, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    cmd = [sys.executable, str(tree / "benchmarks" / script), *extra]
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((tree / "benchmarks" / "results" / result).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision or checkout folder")
    p.add_argument("--script", required=True, help="file name under benchmarks/")
    p.add_argument("--result", required=True, help="JSON file the script writes in results/")
    p.add_argument("--keys", required=True, help="comma-separated dotted keys into the JSON")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", action="store_true", help="run each tree once, unmeasured")
    p.add_argument("--name", default="", help="output name (default: ab_<script>.json)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- arguments for the script")
    args = p.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    keys = [k for k in args.keys.split(",") if k]

    made = None
    base = Path(args.base)
    if not base.is_dir():
        made = Path(tempfile.mkdtemp(prefix="balllink-ab-")) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(made), args.base],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        base = made
    trees = {"base": base, "new": ROOT}
    values: dict[str, dict[str, list[float]]] = {t: {k: [] for k in keys} for t in trees}
    try:
        if args.warmup:
            for tree in trees.values():
                _run(tree, args.script, args.result, extra)
        for r in range(args.rounds):
            for name, tree in trees.items():
                out = _run(tree, args.script, args.result, extra)
                for k in keys:
                    values[name][k].append(float(_get(out, k)))
                print(f"round {r + 1}/{args.rounds} {name} done", file=sys.stderr)
    finally:
        if made is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(made)], check=False
            )
            shutil.rmtree(made.parent, ignore_errors=True)

    rows = {}
    print(f"{'figure':40s} {'base':>12s} {'new':>12s} {'new/base':>9s}")
    for k in keys:
        b = statistics.median(values["base"][k])
        n = statistics.median(values["new"][k])
        ratio = n / b if b else float("nan")
        rows[k] = {"base": values["base"][k], "new": values["new"][k], "ratio_median": ratio}
        print(f"{k:40s} {b:12.5g} {n:12.5g} {ratio:9.3f}")
    out = ROOT / "benchmarks" / "results" / (args.name or f"ab_{Path(args.script).stem}.json")
    out.write_text(
        json.dumps(
            {"base": args.base, "script": args.script, "extra": extra, "figures": rows}, indent=1
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
