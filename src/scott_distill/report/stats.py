"""Comparisons across seeds and questions: mean ± sd per cell, two-stage bootstrap intervals, paired differences.

A result of the method is a *cell*: one condition (e.g. "contrastive rationales, alpha 0.5"), one metric (accuracy,
counterfactual consistency, LAS), measured on several training seeds, each on a set of questions. Two sources of
noise move it: the seed (teacher/student initialisation, data order) and the questions the metric happens to be
measured on. A one-seed interval over questions ignores the first; a spread over seeds ignores the second.

The interval here is a **two-stage (hierarchical) percentile bootstrap**: each resample draws the seeds with
replacement, then, within each drawn seed, that seed's questions with replacement; the resample's statistic is
the mean over the drawn seeds of the per-seed metric. For a **paired difference** A - B the same drawn questions
are used for A and B (they must have been measured on the same question ids in every seed), so question
difficulty cancels as it does in the point estimate.

Two kinds of per-question outcomes:

* ``"mean"``: one number per question (0/1 correctness, consistency, any per-row score); the per-seed metric is
  their mean.
* ``"las"``: one ``(leaked, xe_correct, x_correct)`` cell per question; the per-seed metric is LAS
  (`scott_distill.las.formula`), which is *not* a mean of per-row values.

Vectorised exactly as `scott_distill.las.formula.las_from_correctness`' bootstrap: resampling ``n`` questions
with replacement only changes how many land on each distinct outcome (for a pair: each distinct (A, B) outcome),
and those counts are multinomial. Per seed, all the draws that picked it get their counts in one
``rng.multinomial`` call; the statistic is computed on the counts.

**Finding rule.** A direction counts as a finding only when its interval excludes zero and it rests on at least 5 seeds (`Estimate.is_finding`, `describe_direction`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..las.formula import EMPTY_BIN_RULES, las_cell_index, las_from_cell_counts

__all__ = [
    "FINDING_RULE",
    "METRIC_KINDS",
    "Estimate",
    "describe_direction",
    "outcome_kind",
    "outcome_metric",
    "paired_difference",
    "seed_level_difference",
    "seed_level_estimate",
    "two_stage_estimate",
]

MetricKind = Literal["mean", "las"]
METRIC_KINDS: tuple[str, ...] = ("mean", "las")
# The coverage measurement in docs/report.md: with seeds that differ, the two-stage 95 % interval covers 0.86 with
# 3 seeds and 0.91 with 5; and one seed says nothing about a rerun. Below 5 seeds no direction is a finding.
MIN_SEEDS_FOR_A_FINDING = 5
FINDING_RULE = ("A direction is a finding only when its interval excludes zero and it rests on at least "
                f"{MIN_SEEDS_FOR_A_FINDING} seeds; otherwise it is not shown.")

# seed -> question id -> outcome (a number for "mean", a (leaked, xe_correct, x_correct) triple for "las")
# (keys typed Any: a Mapping is invariant in its key type, and seeds are ints in practice)
Outcomes = Mapping[Any, Mapping[str, Any]]


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its spread and interval.

    Attributes:
        mean: mean over seeds of the per-seed value (each seed weighs the same, whatever its question count).
        sd: sample standard deviation (``ddof=1``) of the per-seed values; NaN with one seed.
        per_seed: the per-seed values (for a paired difference: the per-seed differences).
        ci_low / ci_high: percentile bootstrap interval of ``mean`` (NaN when none could be computed).
        confidence_level: the interval's coverage.
        n_resamples: bootstrap resamples behind the interval (0: none).
        resampling: what the interval resamples: ``"seeds and questions"``, ``"seeds"`` or ``"none"``.
        n_questions: per seed, the number of questions behind its value (empty for aggregate-only values).
        note: why there is no interval, or what it leaves out; empty otherwise.
    """

    mean: float
    sd: float
    per_seed: dict[Hashable, float]
    ci_low: float
    ci_high: float
    confidence_level: float
    n_resamples: int
    resampling: str
    n_questions: dict[Hashable, int] = field(default_factory=dict)
    note: str = ""

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.ci_low) or math.isnan(self.ci_high))

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or entirely below zero (False without an interval)."""
        return self.has_interval and (self.ci_low > 0 or self.ci_high < 0)

    @property
    def is_finding(self) -> bool:
        """The finding rule: an interval that excludes zero, over at least `MIN_SEEDS_FOR_A_FINDING` seeds. With one
        seed the interval resamples questions only and says nothing about a rerun (issue #18: one-seed directions did
        not replicate); with few seeds the interval under-covers (docs/report.md)."""
        return self.excludes_zero and self.n_seeds >= MIN_SEEDS_FOR_A_FINDING


def describe_direction(estimate: Estimate, a: str = "A", b: str = "B") -> str:
    """The finding rule applied to a paired difference ``a - b``: ``"a > b"`` or ``"a < b"`` when the interval
    excludes zero, otherwise why no direction is shown."""
    if not estimate.has_interval:
        return "not assessed (no interval)"
    if not estimate.excludes_zero:
        return "not shown (interval includes 0)"
    if not estimate.is_finding:
        seeds = f"{estimate.n_seeds} seed" + ("s" if estimate.n_seeds > 1 else "")
        return f"not a finding ({seeds} < {MIN_SEEDS_FOR_A_FINDING})"
    return f"{a} > {b}" if estimate.ci_low > 0 else f"{a} < {b}"


# -- input checks -------------------------------------------------------------------------------------------------

def _check_bootstrap_args(n_resamples: int, confidence_level: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"`n_resamples` must be an int >= 1, got {n_resamples!r}.")
    if not 0 < confidence_level < 1:
        raise ValueError(f"`confidence_level` must be in (0, 1), got {confidence_level!r}.")


def _check_kind(kind: str, empty_bin: str) -> None:
    if kind not in METRIC_KINDS:
        raise ValueError(f"`kind` must be one of {METRIC_KINDS}, got {kind!r}.")
    if empty_bin not in EMPTY_BIN_RULES:
        raise ValueError(f"`empty_bin` must be one of {EMPTY_BIN_RULES}, got {empty_bin!r}.")


def _sorted_seeds(seeds: Sequence[Hashable]) -> list[Hashable]:
    # a fixed order makes the bootstrap reproducible whatever order the caller's mapping has
    return sorted(seeds, key=lambda s: (isinstance(s, str), s))


def _outcome_value(value: Any, kind: str, where: str) -> float | tuple[int, int, int]:
    if kind == "mean":
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Real) and not isinstance(value, str)):
            number = float(value)
            if math.isfinite(number):
                return number
        raise ValueError(f"{where} must be a finite number (a per-question value of a 'mean' metric), got {value!r}.")
    if (isinstance(value, (list, tuple, np.ndarray)) and len(value) == 3
            and all(isinstance(v, (bool, np.bool_, numbers.Integral)) and int(v) in (0, 1) for v in value)):
        return int(value[0]), int(value[1]), int(value[2])
    raise ValueError(f"{where} must be a LAS cell [leaked, xe_correct, x_correct] of three 0/1 or booleans, "
                     f"got {value!r}.")


def _missing_message(name_have: str, name_lack: str, missing: Sequence[Any], what: str) -> str:
    shown = ", ".join(repr(m) for m in list(missing)[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return f"{len(missing)} {what} of `{name_have}` missing from `{name_lack}`: {shown}{more}"


def _aligned(outcomes: Sequence[Outcomes], names: Sequence[str], kind: str) -> tuple[
        list[Hashable], list[np.ndarray], list[tuple[str, ...]]]:
    """Per seed, one row per question: the outcome of each condition (paired on question id).

    Returns the seeds (sorted), per seed an array ``(n_questions, n_conditions)`` (for "las": cell indices
    ``0..7``), and per seed the question ids in the rows' order.
    """
    for name, o in zip(names, outcomes):
        if not isinstance(o, Mapping) or not o:
            raise ValueError(f"`{name}` must map each seed to {{question_id: outcome}} and hold at least one seed, "
                             f"got {o!r}.")
    seeds = _sorted_seeds(list(outcomes[0]))
    problems = []
    for name, o in zip(names[1:], outcomes[1:]):
        for have, lack, x, y in ((names[0], name, outcomes[0], o), (name, names[0], o, outcomes[0])):
            missing = _sorted_seeds([s for s in x if s not in y])
            if missing:
                problems.append(_missing_message(have, lack, missing, "seed(s)"))
    if problems:
        raise ValueError("Paired outcomes need the same seeds on both sides: " + "; ".join(problems) + ".")
    rows, qids_per_seed = [], []
    for seed in seeds:
        per_condition = [o[seed] for o in outcomes]
        for name, q in zip(names, per_condition):
            if not isinstance(q, Mapping) or not q:
                raise ValueError(f"`{name}`[{seed!r}] must map question ids to outcomes and hold at least one "
                                 f"question, got {q!r}.")
        qids = tuple(sorted(per_condition[0], key=str))
        for name, q in zip(names[1:], per_condition[1:]):
            problems = []
            for have, lack, x, y in ((names[0], name, per_condition[0], q), (name, names[0], q, per_condition[0])):
                missing = sorted((k for k in x if k not in y), key=str)
                if missing:
                    problems.append(_missing_message(have, lack, missing, "question id(s)"))
            if problems:
                raise ValueError(f"Paired outcomes need the same question ids in every seed; in seed {seed!r}: "
                                 + "; ".join(problems) + ".")
        table = []
        for qid in qids:
            values = [_outcome_value(q[qid], kind, f"`{name}`[{seed!r}][{qid!r}]")
                      for name, q in zip(names, per_condition)]
            table.append([float(las_cell_index(*map(np.asarray, v))) if isinstance(v, tuple) else v for v in values])
        rows.append(np.asarray(table, dtype=np.float64))
        qids_per_seed.append(qids)
    return seeds, rows, qids_per_seed


# -- the statistic on counts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Seed:
    """One seed's questions reduced to their distinct outcomes (rows of ``categories``) and how often each occurs."""

    n: int
    categories: np.ndarray  # (C, n_conditions): for "las" cell indices 0..7
    observed: np.ndarray  # (C,) counts in the data

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> _Seed:
        categories, counts = np.unique(rows, axis=0, return_counts=True)
        return cls(n=rows.shape[0], categories=categories, observed=counts)


def _metric_from_counts(seed: _Seed, counts: np.ndarray, kind: str, empty_bin: str) -> np.ndarray:
    """Per-seed metric of each condition for many draws at once: ``counts`` ``(K, C)`` -> ``(K, n_conditions)``."""
    counts = np.asarray(counts, dtype=np.float64)
    if kind == "mean":
        return counts @ seed.categories / seed.n
    out = np.empty((counts.shape[0], seed.categories.shape[1]))
    for j in range(seed.categories.shape[1]):
        one_hot = np.eye(8)[seed.categories[:, j].astype(np.int64)]  # (C, 8)
        cells = (counts @ one_hot).reshape(-1, 2, 2, 2)
        out[:, j] = las_from_cell_counts(cells, empty_bin)[0]
    return out


def _contrast(metric: np.ndarray) -> np.ndarray:
    """The per-draw statistic: the metric itself (one condition) or A - B (a pair)."""
    return metric[:, 0] if metric.shape[1] == 1 else metric[:, 0] - metric[:, 1]


def _draw(seeds: Sequence[_Seed], n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stage 1: ``(n_resamples, S)`` drawn seed indices. Stage 2: per seed, the outcome counts of every draw that
    picked it, in row-major order of ``seed_draws == s`` (exactly multinomial, as resampling its questions)."""
    n_seeds = len(seeds)
    seed_draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    counts = [rng.multinomial(s.n, s.observed / s.n, size=int((seed_draws == i).sum())) for i, s in enumerate(seeds)]
    return seed_draws, counts


def _samples_from_draws(seeds: Sequence[_Seed], seed_draws: np.ndarray, counts: Sequence[np.ndarray], kind: str,
                        empty_bin: str) -> np.ndarray:
    per_draw = np.empty(seed_draws.shape)
    for i, s in enumerate(seeds):
        if counts[i].shape[0]:
            per_draw[seed_draws == i] = _contrast(_metric_from_counts(s, counts[i], kind, empty_bin))
    return per_draw.mean(axis=1)  # NaN propagates (empty_bin="nan"), as in las_from_correctness


# Float rounding leaves ~1e-17 where a mean of differences is exactly 0 (0.3 - 0.1 != 0.2), and the finding rule
# compares interval ends with 0: values within this fraction of the outcomes' magnitude are zero.
_ZERO_TOLERANCE = 1e-10


def _snap_zero(values: np.ndarray, scale: float) -> np.ndarray:
    return np.where(np.abs(values) <= _ZERO_TOLERANCE * scale, 0.0, values)


def _scale(seeds: Sequence[_Seed], kind: str) -> float:
    """The outcomes' magnitude: a bound on any per-seed metric (LAS lies in [-1, 1])."""
    if kind == "las":
        return 1.0
    return max(1.0, *(float(np.abs(s.categories).max()) for s in seeds))


def _percentile_interval(samples: np.ndarray, confidence_level: float) -> tuple[float, float]:
    tail = (1.0 - confidence_level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size > 1 else math.nan


def _two_stage(outcomes: Sequence[Outcomes], names: Sequence[str], kind: str, n_resamples: int,
               confidence_level: float, seed: int, empty_bin: str) -> Estimate:
    _check_kind(kind, empty_bin)
    _check_bootstrap_args(n_resamples, confidence_level)
    seed_ids, rows, qids = _aligned(outcomes, names, kind)
    seeds = [_Seed.from_rows(r) for r in rows]
    scale = _scale(seeds, kind)
    per_seed = _snap_zero(np.array([_contrast(_metric_from_counts(s, s.observed[None, :], kind, empty_bin))[0]
                                    for s in seeds]), scale)
    seed_draws, counts = _draw(seeds, n_resamples, np.random.default_rng(seed))
    samples = _snap_zero(_samples_from_draws(seeds, seed_draws, counts, kind, empty_bin), scale)
    low, high = _percentile_interval(samples, confidence_level)
    note = "" if len(seeds) > 1 else "one seed: the interval covers question sampling only"
    return Estimate(mean=float(_snap_zero(per_seed.mean(), scale)), sd=_sd(per_seed),
                    per_seed={s: float(v) for s, v in zip(seed_ids, per_seed)}, ci_low=low, ci_high=high,
                    confidence_level=confidence_level, n_resamples=int(n_resamples),
                    resampling="seeds and questions", n_questions={s: len(q) for s, q in zip(seed_ids, qids)},
                    note=note)


# -- one seed -------------------------------------------------------------------------------------------------------

def outcome_kind(outcomes: Mapping[str, Any]) -> MetricKind:
    """``"mean"`` when every per-question outcome is a number, ``"las"`` when every one is a
    ``(leaked, xe_correct, x_correct)`` cell of 0/1; anything else (or no outcome) raises ``ValueError``."""
    if not isinstance(outcomes, Mapping) or not outcomes:
        raise ValueError(f"per-question outcomes must map question ids to outcomes and hold at least one, "
                         f"got {outcomes!r:.200}")
    for kind in METRIC_KINDS:
        try:
            for qid, value in outcomes.items():
                _outcome_value(value, kind, repr(qid))
        except ValueError:
            continue
        return kind  # type: ignore[return-value]
    raise ValueError("per-question outcomes must be all finite numbers (a metric averaged over questions) or all "
                     "[leaked, xe_correct, x_correct] LAS cells of 0/1")


def outcome_metric(outcomes: Mapping[str, Any], kind: MetricKind = "mean", empty_bin: str = "other") -> float:
    """The per-seed metric of one seed's per-question outcomes: their mean, or LAS of the cells (the value every
    estimator here averages over seeds)."""
    _check_kind(kind, empty_bin)
    _, rows, _ = _aligned([{0: outcomes}], ["outcomes"], kind)
    seed = _Seed.from_rows(rows[0])
    return float(_contrast(_metric_from_counts(seed, seed.observed[None, :], kind, empty_bin))[0])


# -- public estimators ----------------------------------------------------------------------------------------------

def two_stage_estimate(
    outcomes: Outcomes,
    kind: MetricKind = "mean",
    n_resamples: int = 10000,
    confidence_level: float = 0.95,
    seed: int = 0,
    empty_bin: str = "other",
) -> Estimate:
    """One cell: mean ± sd over seeds of the per-seed metric, with a two-stage bootstrap interval.

    Args:
        outcomes: ``{seed: {question_id: outcome}}``; an outcome is a number for ``kind="mean"`` and a
            ``(leaked, xe_correct, x_correct)`` triple of 0/1 for ``kind="las"``. Seeds may hold different numbers
            of questions (one is enough).
        kind: ``"mean"`` (the per-seed metric is the mean of the outcomes) or ``"las"`` (LAS of the cells).
        n_resamples: bootstrap resamples.
        confidence_level: coverage of the percentile interval.
        seed: seed of the bootstrap's generator.
        empty_bin: LAS rule for a resample with an empty leaked or non-leaked bin (see
            `scott_distill.las.leakage_adjusted_simulatability`).

    Examples:

        >>> from scott_distill.report.stats import two_stage_estimate
        >>> e = two_stage_estimate({0: {"q1": 1, "q2": 0, "q3": 1}, 1: {"q1": 1, "q2": 1}}, n_resamples=2000)
        >>> round(e.mean, 4), e.n_seeds, e.n_questions
        (0.8333, 2, {0: 3, 1: 2})
        >>> e.ci_low <= e.mean <= e.ci_high
        True
    """
    return _two_stage([outcomes], ["outcomes"], kind, n_resamples, confidence_level, seed, empty_bin)


def paired_difference(
    a: Outcomes,
    b: Outcomes,
    kind: MetricKind = "mean",
    n_resamples: int = 10000,
    confidence_level: float = 0.95,
    seed: int = 0,
    empty_bin: str = "other",
) -> Estimate:
    """Paired difference ``metric(A) - metric(B)``: the mean over seeds of the per-seed difference, its sd over
    seeds, and a two-stage bootstrap interval that draws seeds, then questions within each drawn seed, the same
    questions for A and B.

    ``a`` and ``b`` are `two_stage_estimate`'s ``outcomes`` and must hold the same seeds and, in each seed, the same
    question ids (a ``ValueError`` names what is missing on which side). Apply `describe_direction` for the finding
    rule.

    Examples:

        >>> from scott_distill.report.stats import describe_direction, paired_difference
        >>> a = {0: {f"q{i}": int(i % 4 != 0) for i in range(40)}, 1: {f"q{i}": int(i % 5 != 0) for i in range(30)}}
        >>> b = {0: {f"q{i}": int(i % 2 == 0) for i in range(40)}, 1: {f"q{i}": int(i % 3 == 0) for i in range(30)}}
        >>> d = paired_difference(a, b, n_resamples=2000)
        >>> round(d.mean, 3), describe_direction(d, "A", "B")
        (0.358, 'A > B')
    """
    return _two_stage([a, b], ["a", "b"], kind, n_resamples, confidence_level, seed, empty_bin)


def seed_level_estimate(
    values: Mapping[Any, float],
    n_resamples: int = 10000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """One cell known only as one aggregate value per seed (no per-question outcomes): mean ± sd over seeds and a
    percentile bootstrap interval of the mean that resamples **seeds only**.

    Question sampling is not in this interval, and with few seeds a seed-only bootstrap is too narrow (with two
    seeds it can take three values); with one seed there is no interval at all (NaN, with a ``note``).
    """
    _check_bootstrap_args(n_resamples, confidence_level)
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"`values` must map each seed to a number and hold at least one seed, got {values!r}.")
    seeds = _sorted_seeds(list(values))
    arr = np.array([_outcome_value(values[s], "mean", f"`values`[{s!r}]") for s in seeds])
    per_seed = {s: float(v) for s, v in zip(seeds, arr)}
    note = "aggregates only: the interval resamples seeds, not questions"
    if arr.size == 1:
        return Estimate(mean=float(arr[0]), sd=math.nan, per_seed=per_seed, ci_low=math.nan, ci_high=math.nan,
                        confidence_level=confidence_level, n_resamples=0, resampling="none",
                        note="aggregates only, one seed: no interval")
    draws = np.random.default_rng(seed).integers(0, arr.size, size=(n_resamples, arr.size))
    low, high = _percentile_interval(arr[draws].mean(axis=1), confidence_level)
    return Estimate(mean=float(arr.mean()), sd=_sd(arr), per_seed=per_seed, ci_low=low, ci_high=high,
                    confidence_level=confidence_level, n_resamples=int(n_resamples), resampling="seeds", note=note)


def seed_level_difference(a: Mapping[Any, float], b: Mapping[Any, float]) -> Estimate:
    """A paired difference known only from per-seed aggregates: mean ± sd over seeds of ``a[s] - b[s]`` and **no
    interval** (question sampling is unknown, and a seed-only bootstrap over a handful of seeds is not an interval
    to draw findings from)."""
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, Mapping) or not v:
            raise ValueError(f"`{name}` must map each seed to a number and hold at least one seed, got {v!r}.")
    missing = [_missing_message(x, y, _sorted_seeds([s for s in p if s not in q]), "seed(s)")
               for x, y, p, q in (("a", "b", a, b), ("b", "a", b, a)) if any(s not in q for s in p)]
    if missing:
        raise ValueError("Paired values need the same seeds on both sides: " + "; ".join(missing) + ".")
    seeds = _sorted_seeds(list(a))
    pairs = np.array([(_outcome_value(a[s], "mean", f"`a`[{s!r}]"), _outcome_value(b[s], "mean", f"`b`[{s!r}]"))
                      for s in seeds])
    scale = max(1.0, float(np.abs(pairs).max()))
    diffs = _snap_zero(pairs[:, 0] - pairs[:, 1], scale)
    return Estimate(mean=float(_snap_zero(diffs.mean(), scale)), sd=_sd(diffs), per_seed={s: float(v) for s, v in zip(seeds, diffs)},
                    ci_low=math.nan, ci_high=math.nan, confidence_level=math.nan, n_resamples=0, resampling="none",
                    note="aggregates only: no per-question outcomes, no interval")

