"""Where the benchmarks read real data: ``$SCOTT_SHARED_DATA`` (the variable the tests read too) or ``../shared/data``
beside the checkout. A GPU machine that has the checkout but not its neighbour sets the variable."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("SCOTT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
COSE = SHARED_DATA / "cose_v1"
