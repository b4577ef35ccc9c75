"""benchmarks/gpu.sh: the GPU benchmark script parses, and refuses clearly where no GPU is visible.

Its full run needs a GPU (none is lent to this project's CI); `DEVICE=cpu QUICK=1 benchmarks/gpu.sh` runs the
same pipeline at tiny shapes on CPU by hand (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_gpu_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_script_without_a_gpu_says_how_to_run_it(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("DEVICE", None)
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "sees no GPU" in done.stderr and "DEVICE=cpu" in done.stderr
    assert not list((tmp_path / "out").glob("*.log"))  # nothing ran
