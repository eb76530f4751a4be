"""The kinds of candidate index a lead database can keep, by name: ``"exact"`` (the
default `CasingIndex`: every stored keypoint, exact search) and ``"compressed:N"``
(`CasingIndex.compressed` for about N casings: 3.3 KB a casing, a search in
milliseconds at 1e4 casings where the exact one takes seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from ._casing_index import CasingIndex

__all__ = ["CompressedIndex", "index_kind", "kind_name"]


@dataclass(frozen=True)
class CompressedIndex:
    """``index_class`` of a `balllink.database.LeadDatabase` whose candidate index is
    `CasingIndex.compressed` for about ``n_casings`` casings.

    Calling it makes the empty index; `load` reads a saved one; `matches` tells whether a
    saved index is of this kind (a database opened with another kind rebuilds its index).
    It pickles by value, so Dask workers can read the index too.

    Examples
    --------
    >>> from balllink.index import CompressedIndex
    >>> kind = CompressedIndex(10_000)
    >>> kind.name, kind().factory
    ('compressed:10000', 'IVF512_HNSW32,PQ52x4fs')
    >>> kind.matches(kind()), kind.matches(CasingIndex())
    (True, False)
    """

    n_casings: int

    def __post_init__(self) -> None:
        if int(self.n_casings) < 1:
            raise ValueError(f"a compressed index needs n_casings >= 1, got {self.n_casings}")

    @property
    def name(self) -> str:
        return f"compressed:{int(self.n_casings)}"

    def __call__(self) -> CasingIndex:
        return CasingIndex.compressed(int(self.n_casings))

    @staticmethod
    def load(path) -> CasingIndex:
        return CasingIndex.load(path)

    def matches(self, index) -> bool:
        return getattr(index, "factory_", None) == self().factory_


def index_kind(name: str):
    """The ``index_class`` of an index kind's name: ``"exact"`` (`CasingIndex`) or
    ``"compressed:N"`` (`CompressedIndex`).

    Raises
    ------
    ValueError
        For any other name; the message lists the kinds.

    Examples
    --------
    >>> index_kind("exact").__name__, index_kind("compressed:1000000")
    ('CasingIndex', CompressedIndex(n_casings=1000000))
    """
    text = str(name).strip().lower()
    if text == "exact":
        return CasingIndex
    kind, _, n = text.partition(":")
    if kind == "compressed" and n.strip().isdigit() and int(n) >= 1:
        return CompressedIndex(int(n))
    raise ValueError(
        f"unknown index kind {name!r}: give 'exact' (every keypoint, exact search) or "
        "'compressed:N' (about N casings expected, e.g. compressed:1000000)"
    )


def kind_name(index_class) -> str | None:
    """The name of a known index kind (None for another class).

    Examples
    --------
    >>> kind_name(CasingIndex), kind_name(CompressedIndex(500)), kind_name(dict)
    ('exact', 'compressed:500', None)
    """
    if index_class is None or index_class is CasingIndex:
        return "exact"
    return index_class.name if isinstance(index_class, CompressedIndex) else None
