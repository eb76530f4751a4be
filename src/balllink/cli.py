"""The ``balllink`` command line. Library code logs; this module prints."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]

DEFAULT_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "fadul"


def _scan_table(scans) -> str:
    rows = [("scan", "shape", "spacing µm", "valid", "min µm", "max µm", "instrument")]
    import numpy as np

    for scan in scans:
        z = scan.heights[scan.mask]
        inst = scan.meta.get("instrument") or scan.meta.get("generator") or ""
        rows.append(
            (
                scan.name,
                "x".join(str(n) for n in scan.shape),
                f"{scan.spacing_um[1]:g}",
                f"{scan.n_valid / scan.heights.size:.0%}",
                f"{np.min(z):.2f}" if z.size else "-",
                f"{np.max(z):.2f}" if z.size else "-",
                str(inst)[:30],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def _cmd_demo(args) -> int:
    import balllink as bl

    data = Path(args.data) if args.data else DEFAULT_DATA.resolve()
    if args.data or data.is_dir():
        paths = sorted(p for p in data.iterdir() if p.suffix.lower() in {".x3p", ".npz", ".npy"})
        if not paths:
            print(f"balllink demo: no scans (.x3p, .npz, .npy) in {data}", file=sys.stderr)
            return 2
        print(f"Reading {len(paths)} scans from {data}")
        scans = []
        for p in paths:
            try:
                scans.append(bl.read_scan(p))
            except bl.ScanFormatError as exc:
                print(f"  skipped: {exc}", file=sys.stderr)
    else:
        print("No real scans found; simulating 3 agencies' casings (4 firearms x 3 firings)")
        scans = bl.simulate.casings(4, 3, seed=0).scans
    print(_scan_table(scans))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balllink", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job end to end on bundled or given data")
    demo.add_argument("--data", help="a folder of real scans (default: simulated casings)")
    demo.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
