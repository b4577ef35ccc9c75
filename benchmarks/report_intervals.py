"""The report's two-stage bootstrap (scott_distill.report.stats): speed against a per-resample loop, and the
coverage of its intervals on simulated seeds x questions.

    python benchmarks/report_intervals.py speed       # paired LAS and accuracy differences, 5 seeds x 150 questions
    python benchmarks/report_intervals.py coverage    # 95% intervals vs a known truth, several seed counts

speed: the baseline is what one writes without the multinomial trick: per resample, draw seeds, then per drawn seed
numpy-index its questions (the same rows for A and B) and apply the metric (a mean, or LAS through
`las_from_correctness`). Both run in this process; the ratio is what to read.

coverage: outcomes P(correct) = sigmoid(difficulty_q + effect_c + u_{seed,c}) with u ~ N(0, sigma_seed), fresh
questions per seed (as the demo's seeded worlds); the truth is the population mean of the per-seed accuracy
difference. Prints how often the two-stage interval and a seeds-only bootstrap of the per-seed differences cover it.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from scott_distill.las import las_from_correctness
from scott_distill.report.stats import paired_difference, seed_level_estimate


def _data(rng: np.random.Generator, n_seeds: int, n: int, kind: str) -> tuple[dict, dict]:
    a, b = {}, {}
    for s in range(n_seeds):
        if kind == "mean":
            base = rng.random(n) < 0.5
            a[s] = {f"q{i}": int(x) for i, x in enumerate(np.where(rng.random(n) < 0.8, base, rng.random(n) < 0.6))}
            b[s] = {f"q{i}": int(x) for i, x in enumerate(base)}
        else:
            leaked = rng.random(n) < 0.4
            a[s] = {f"q{i}": [int(leaked[i]), int(rng.random() < 0.7), int(rng.random() < 0.5)] for i in range(n)}
            b[s] = {f"q{i}": [int(leaked[i]), int(rng.random() < 0.55), int(rng.random() < 0.5)] for i in range(n)}
    return a, b


def loop_difference(a: dict, b: dict, kind: str, n_resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    seeds = sorted(a)
    arrays = {}
    for s in seeds:
        qids = sorted(a[s])
        arrays[s] = (np.array([a[s][q] for q in qids]), np.array([b[s][q] for q in qids]))

    def metric(x: np.ndarray) -> float:
        if kind == "mean":
            return float(x.mean())
        return las_from_correctness(x[:, 1], x[:, 2], x[:, 0])["las"]

    samples = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-bin warnings of tiny resamples
        for _ in range(n_resamples):
            diffs = []
            for s in rng.choice(seeds, size=len(seeds)):
                xa, xb = arrays[s]
                idx = rng.integers(0, len(xa), len(xa))
                diffs.append(metric(xa[idx]) - metric(xb[idx]))
            samples.append(np.mean(diffs))
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def speed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    print(f"{args.seeds} seeds x {args.questions} questions, {args.resamples} resamples "
          f"(loop: {args.loop_resamples}, time scaled)")
    for kind in ("mean", "las"):
        a, b = _data(rng, args.seeds, args.questions, kind)
        t0 = time.perf_counter()
        ours = paired_difference(a, b, kind, n_resamples=args.resamples)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        low, high = loop_difference(a, b, kind, args.loop_resamples, seed=1)
        t_loop = (time.perf_counter() - t0) * args.resamples / args.loop_resamples
        print(f"  {kind:>4}: two-stage {t_ours:7.3f} s  loop {t_loop:8.2f} s (scaled)  ratio loop/ours "
              f"{t_loop / t_ours:7.1f}x  | interval ours [{ours.ci_low:+.3f}, {ours.ci_high:+.3f}]  "
              f"loop [{low:+.3f}, {high:+.3f}] ({args.loop_resamples} resamples)")


def coverage(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)

    def sig(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    effect_a, effect_b = 0.2, 0.0
    for sigma in args.sigma_seed:
        d = rng.normal(size=2_000_000)
        truth = float(np.mean(sig(d + effect_a + rng.normal(0, sigma, d.size))
                              - sig(d + effect_b + rng.normal(0, sigma, d.size))))
        for n_seeds in args.n_seeds:
            two_stage = seeds_only = 0
            widths = []
            for r in range(args.reps):
                a, b = {}, {}
                for s in range(n_seeds):
                    dq = rng.normal(size=args.questions)
                    ua, ub = rng.normal(0, sigma, 2)
                    a[s] = dict(enumerate((rng.random(args.questions) < sig(dq + effect_a + ua)).astype(int).tolist()))
                    b[s] = dict(enumerate((rng.random(args.questions) < sig(dq + effect_b + ub)).astype(int).tolist()))
                e = paired_difference(a, b, n_resamples=args.resamples, seed=r)
                two_stage += e.ci_low <= truth <= e.ci_high
                widths.append(e.ci_high - e.ci_low)
                if n_seeds > 1:
                    so = seed_level_estimate(e.per_seed, n_resamples=args.resamples, seed=r)
                    seeds_only += so.ci_low <= truth <= so.ci_high
            se = np.sqrt(0.95 * 0.05 / args.reps)
            print(f"sigma_seed={sigma:<4} seeds={n_seeds:<3} questions={args.questions}  truth {truth:+.4f}  "
                  f"two-stage coverage {two_stage / args.reps:.3f} (mean width {np.mean(widths):.3f})  "
                  f"seeds-only coverage {seeds_only / args.reps:.3f}   [Monte-Carlo s.e. {se:.3f}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--seeds", type=int, default=5)
    s.add_argument("--questions", type=int, default=150)
    s.add_argument("--resamples", type=int, default=10_000)
    s.add_argument("--loop-resamples", type=int, default=1_000)
    c = sub.add_parser("coverage")
    c.add_argument("--n-seeds", type=int, nargs="+", default=[3, 5, 10])
    c.add_argument("--sigma-seed", type=float, nargs="+", default=[0.0, 0.3])
    c.add_argument("--questions", type=int, default=150)
    c.add_argument("--reps", type=int, default=400)
    c.add_argument("--resamples", type=int, default=2000)
    c.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    speed(args) if args.what == "speed" else coverage(args)


if __name__ == "__main__":
    main()
