"""The ``balllink`` command line (entry point ``balllink.cli:main``; ``python -m balllink``).

One module per job: ``_parser`` (arguments and `main`), ``_commands`` (the database
commands), ``_batch`` (``score`` and ``evaluate``), ``_link_cmd`` (``link``, local or on
Dask), ``_demo``, ``_bench``, and ``_common`` (what they share). The command line prints; library code logs.
"""

from ._batch import Evaluation, evaluate_folder
from ._bench import run_bench
from ._common import format_table
from ._parser import build_parser, main

__all__ = ["Evaluation", "build_parser", "evaluate_folder", "format_table", "main", "run_bench"]
