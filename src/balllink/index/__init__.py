"""The candidate index: FAISS over local keypoint descriptors, ranked by a pose vote.

`CasingIndex` is the public class (`balllink.CasingIndex`). Inside, one job a module:
``_casing_index`` (the class), ``_faiss`` (the only module that touches FAISS: factory,
search parameters, training, serialisation), ``_vote`` (the pose vote, a pure function of
arrays), ``_casings`` (per-casing bookkeeping), ``_params`` (parameter checks) and
``_file`` (the saved file or folder, written and read as a pair), ``_query`` (queries
prepared and candidates ranked), ``_sharded`` (`ShardedIndex`: shards searched as one) and
``_kinds`` (the kinds a database keeps by name: ``"exact"``, ``"compressed:N"``).

>>> import balllink as bl
>>> bl.index.CasingIndex is bl.CasingIndex
True
"""

from ._casing_index import CasingIndex
from ._kinds import CompressedIndex, index_kind, kind_name
from ._sharded import ShardedIndex

__all__ = ["CasingIndex", "CompressedIndex", "ShardedIndex", "index_kind", "kind_name"]
