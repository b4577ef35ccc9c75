"""``python -m scott_distill``: the ``scott-distill`` command."""

import sys

from .commands import main

sys.exit(main())
