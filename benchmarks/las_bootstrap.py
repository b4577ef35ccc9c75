"""LAS with a bootstrap interval: the vectorised metric vs a per-resample pandas loop like compute_sim.py.

    python benchmarks/las_bootstrap.py                 # 100k rows, 10k resamples (loop timed on fewer, scaled)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from scott_distill.las import leakage_adjusted_simulatability


def pandas_loop_las(df: pd.DataFrame, boots: int, seed: int) -> tuple[float, float, float]:
    """Shape of the original script: resample rows, recompute the two bins with pandas, each time."""

    def las(d: pd.DataFrame) -> float:
        leaked = d["e"] == d["y"]
        diffs = []
        for sub in (d[leaked], d[~leaked]):
            if len(sub):
                diffs.append((sub["xe"] == sub["y"]).mean() - (sub["x"] == sub["y"]).mean())
        return float(np.mean(diffs))

    rng = np.random.default_rng(seed)
    samples = [las(df.iloc[rng.integers(0, len(df), len(df))]) for _ in range(boots)]
    low, high = np.percentile(samples, [2.5, 97.5])
    return las(df), float(low), float(high)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--boots", type=int, default=10_000)
    p.add_argument("--loop-boots", type=int, default=100, help="resamples actually run by the slow loop")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    y = rng.integers(0, 3, n)
    xe = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
    x = np.where(rng.random(n) < 0.6, y, (y + 1) % 3)
    e = np.where(rng.random(n) < 0.4, y, (y + 2) % 3)

    t0 = time.perf_counter()
    ours = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=args.boots, seed=0)
    t_ours = time.perf_counter() - t0

    df = pd.DataFrame({"xe": xe, "x": x, "e": e, "y": y})
    t0 = time.perf_counter()
    loop = pandas_loop_las(df, args.loop_boots, 0)
    t_loop = (time.perf_counter() - t0) * args.boots / args.loop_boots  # linear in resamples
    print(f"rows={n} resamples={args.boots}")
    print(f"vectorised   {t_ours:8.3f} s   LAS={ours['las']:.4f} CI=[{ours['las_ci_low']:.4f}, {ours['las_ci_high']:.4f}]")
    print(f"pandas loop  {t_loop:8.1f} s   (timed on {args.loop_boots} resamples, scaled)  LAS={loop[0]:.4f}")
    print(f"speed-up     {t_loop / t_ours:8.0f} x")


if __name__ == "__main__":
    main()
