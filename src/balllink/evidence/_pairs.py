"""`Pairs`: labelled comparisons (what an LR model is fitted on and validated with), read
from and written to CSV, built from `Comparison` objects and a truth table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import atomic_write, csv_row
from .._scan import Scan

__all__ = ["PAIR_COLUMNS", "Pairs", "source_spacing_um"]

#: Columns of a pairs CSV (``Pairs.to_csv`` / ``Pairs.from_csv``).
PAIR_COLUMNS = (
    "a", "b", "firearm_a", "firearm_b", "same_source", "cmc_count", "n_cells", "raw_score",
    "spacing_um", "set",
)  # fmt: skip


def source_spacing_um(scan: Scan) -> float:
    """The lateral spacing the scan was measured at, before any resampling (µm).

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> s = bl.Scan(np.zeros((40, 40)), spacing_um=3.125)
    >>> source_spacing_um(s), source_spacing_um(bl.resample(s, spacing_um=6.25))
    (3.125, 3.125)
    """
    for step in scan.meta.get("history", ()):
        if isinstance(step, dict) and step.get("step") == "resample":
            old = step.get("from_spacing_um")
            try:
                return float(max(old)) if isinstance(old, (list, tuple)) else float(old)
            except (TypeError, ValueError):
                break
    return float(max(scan.spacing_um))


def _arr(values, dtype) -> np.ndarray:
    return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype)


@dataclass(frozen=True)
class Pairs:
    """Labelled comparisons: the CMC count ``k`` of ``n`` compared cells (both directions),
    the raw score, whether both casings came from one firearm, and which firearms.

    ``firearm_a`` / ``firearm_b`` drive the resampling of the interval (firearms are the
    independent units) and leave-one-firearm-out validation; ``spacing_um`` is the coarser
    source spacing of the pair (`source_spacing_um`); ``set`` names where a pair came from
    (e.g. ``"fadul"``, ``"sim:medium:12"``).

    Examples
    --------
    >>> p = Pairs.build(k=[30, 1], n=[120, 118], raw=[0.3, 0.004], same=[True, False],
    ...                 firearm_a=["g1", "g1"], firearm_b=["g1", "g2"])
    >>> len(p), p.n_same, p.n_different, p.firearms
    (2, 1, 1, ('g1', 'g2'))
    """

    k: np.ndarray
    n: np.ndarray
    raw: np.ndarray
    same: np.ndarray
    firearm_a: np.ndarray
    firearm_b: np.ndarray
    spacing_um: np.ndarray
    a: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    b: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    set: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.k)
        fill = {"a": "", "b": "", "set": ""}
        for name in ("k", "n", "raw", "same", "firearm_a", "firearm_b", "spacing_um", *fill):
            v = getattr(self, name)
            if v is None:
                v = np.full(n, fill[name], dtype=object)
                object.__setattr__(self, name, v)
            if len(v) != n:
                raise ValueError(f"Pairs: {name} has {len(v)} values, k has {n}")
        k, cells = self.k, self.n
        if n and (np.any(k < 0) or np.any(k > cells)):
            i = int(np.flatnonzero((k < 0) | (k > cells))[0])
            raise ValueError(
                f"Pairs: row {i}: cmc_count {k[i]} is not within 0..n_cells {cells[i]}"
            )

    @classmethod
    def build(
        cls,
        *,
        k,
        n,
        same,
        firearm_a,
        firearm_b,
        raw=None,
        spacing_um=None,
        a=None,
        b=None,
        set=None,
    ) -> Pairs:
        """Pairs from plain sequences (``raw`` defaults to NaN, ``spacing_um`` to 6.25)."""
        k = _arr(k, np.int64)
        size = len(k)
        return cls(
            k=k,
            n=_arr(n, np.int64),
            raw=np.full(size, math.nan) if raw is None else _arr(raw, float),
            same=_arr(same, bool),
            firearm_a=_arr(map(str, firearm_a), object),
            firearm_b=_arr(map(str, firearm_b), object),
            spacing_um=np.full(size, 6.25) if spacing_um is None else _arr(spacing_um, float),
            a=None if a is None else _arr(map(str, a), object),
            b=None if b is None else _arr(map(str, b), object),
            set=None if set is None else _arr(map(str, set), object),
        )

    @classmethod
    def from_comparisons(
        cls,
        comparisons: Sequence,
        firearms: Sequence[tuple[str, str]],
        *,
        spacing_um: Sequence[float] | None = None,
        names: Sequence[tuple[str, str]] | None = None,
        set: str = "",
    ) -> Pairs:
        """Pairs from `Comparison` results and the firearm of each side.

        ``firearms[i] = (firearm of a, firearm of b)`` for ``comparisons[i]``; the pair is
        same-source when they are equal.
        """
        if len(firearms) != len(comparisons):
            raise ValueError("from_comparisons: one (firearm_a, firearm_b) per comparison")
        fa = [str(f[0]) for f in firearms]
        fb = [str(f[1]) for f in firearms]
        n_cells = [sum(d.n_cells for d in c.directions) for c in comparisons]
        return cls.build(
            k=[c.cmc_count for c in comparisons],
            n=n_cells,
            raw=[c.raw_score for c in comparisons],
            same=[x == y for x, y in zip(fa, fb)],
            firearm_a=fa,
            firearm_b=fb,
            spacing_um=spacing_um,
            a=None if names is None else [x for x, _ in names],
            b=None if names is None else [y for _, y in names],
            set=[set] * len(comparisons),
        )

    def __len__(self) -> int:
        return len(self.k)

    @property
    def n_same(self) -> int:
        return int(np.sum(self.same))

    @property
    def n_different(self) -> int:
        return int(len(self) - np.sum(self.same))

    @property
    def firearms(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.firearm_a) | set(self.firearm_b)))

    def take(self, rows) -> Pairs:
        """The pairs at ``rows`` (indices or a boolean mask)."""
        rows = np.asarray(rows)
        return Pairs(**{f: getattr(self, f)[rows] for f in self.__dataclass_fields__})

    def __add__(self, other: Pairs) -> Pairs:
        return Pairs(
            **{
                f: np.concatenate([getattr(self, f), getattr(other, f)])
                for f in self.__dataclass_fields__
            }
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write the pairs (`PAIR_COLUMNS`), atomically."""
        path = Path(path)
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(PAIR_COLUMNS)
        for i in range(len(self)):
            out.writerow(
                csv_row(
                    [
                        self.a[i], self.b[i], self.firearm_a[i], self.firearm_b[i],
                        int(self.same[i]), int(self.k[i]), int(self.n[i]),
                        repr(float(self.raw[i])), repr(float(self.spacing_um[i])), self.set[i],
                    ]
                )
            )  # fmt: skip
        atomic_write(path, buf.getvalue().encode())
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> Pairs:
        """Read a pairs CSV; a missing column or a bad value names the file and the row."""
        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the pairs file ({exc})") from exc
        need = {"firearm_a", "firearm_b", "cmc_count", "n_cells"}
        if not rows or not need <= set(rows[0]):
            raise ValueError(
                f"{path}: a pairs file needs the columns {sorted(need)} (and optionally "
                f"raw_score, spacing_um, same_source, a, b, set); found "
                f"{sorted(rows[0]) if rows else 'no rows'}"
            )
        cols: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
        for i, r in enumerate(rows, start=2):
            try:
                fa, fb = r["firearm_a"].strip(), r["firearm_b"].strip()
                cols["firearm_a"].append(fa)
                cols["firearm_b"].append(fb)
                same = r.get("same_source")
                cols["same_source"].append(fa == fb if same in (None, "") else bool(int(same)))
                cols["cmc_count"].append(int(r["cmc_count"]))
                cols["n_cells"].append(int(r["n_cells"]))
                cols["raw_score"].append(float(r.get("raw_score") or "nan"))
                cols["spacing_um"].append(float(r.get("spacing_um") or "6.25"))
                for c in ("a", "b", "set"):
                    cols[c].append(r.get(c) or "")
            except (KeyError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: row {i}: {exc}") from exc
        try:
            return cls.build(
                k=cols["cmc_count"], n=cols["n_cells"], raw=cols["raw_score"],
                same=cols["same_source"], firearm_a=cols["firearm_a"],
                firearm_b=cols["firearm_b"], spacing_um=cols["spacing_um"], a=cols["a"],
                b=cols["b"], set=cols["set"],
            )  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
