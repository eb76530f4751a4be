"""Compare two casings and plot the aligned overlay.

Usage::

    python examples/compare_two_casings.py [A.x3p B.x3p] [--out overlay.png]

Without files, two firings of one simulated firearm are used.
"""

from __future__ import annotations

import argparse

import balllink as bl
from balllink.report import overlay_figure


def shape(size: int):
    """Simulated grid: (size, size), or the Fadul-like 545 x 545 default when 0."""
    return (size, size) if size else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="*", help="two scan files (default: simulated)")
    parser.add_argument("--out", default="overlay.png")
    parser.add_argument("--size", type=int, default=0, help="simulated side, px (0: 545)")
    args = parser.parse_args(argv)

    if args.files:
        a, b = (bl.preprocess(bl.read_scan(f)) for f in args.files)
    else:
        sims = bl.simulate.casings(1, 2, seed=3, shape=shape(args.size), difficulty="fadul-like")
        a, b = sims.scans
        truth = bl.simulate.relative_pose(sims.truth[0], sims.truth[1])
        print(f"planted pose of b on a: rotation {truth[0]:.1f}°, shift {truth[1:]} µm")

    cmp = bl.compare(a, b)
    dy, dx = cmp.translation_um
    lo, hi = cmp.lr_interval
    print(
        f"LR {cmp.lr:.3g} (90 % interval {lo:.3g}-{hi:.3g}), CMC count {cmp.cmc_count}, "
        f"lead: {cmp.lead}, legacy score {cmp.score:.3f}"
    )
    print(f"b relative to a: rotation {cmp.rotation_deg:.1f}°, shift ({dy:.0f}, {dx:.0f}) µm")
    fig = overlay_figure(a, b, cmp, title=f"{a.name} vs {b.name}")
    fig.savefig(args.out, dpi=90, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
