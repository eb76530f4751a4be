"""``python -m balllink``: the same as the ``balllink`` command."""

import sys

from .cli import main

sys.exit(main())
