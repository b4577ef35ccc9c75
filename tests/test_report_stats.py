"""The report's estimators against plain-Python loops: point estimates exactly, the two-stage bootstrap exactly on the
same draws and in distribution against a loop that resamples seeds and question ids itself."""

from __future__ import annotations

import contextlib
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from scott_distill.las import las_from_correctness
from scott_distill.report.stats import (
    FINDING_RULE,
    Estimate,
    _aligned,
    _draw,
    _samples_from_draws,
    _Seed,
    describe_direction,
    outcome_kind,
    outcome_metric,
    paired_difference,
    seed_level_difference,
    seed_level_estimate,
    two_stage_estimate,
)

# unequal question counts, and a seed with a single question
SEED_SIZES = {0: 25, 1: 40, 2: 1, 3: 12}


def _mean_outcomes(rng: random.Random, p: float, partner: dict | None = None, agree: float = 0.6,
                   seed_effect: float = 0.15) -> dict:
    """0/1 outcomes per seed and question; with ``partner``, the same outcome as the partner's on a share ``agree``
    of the questions (what pairing exploits)."""
    out = {}
    for seed, n in SEED_SIZES.items():
        p_seed = min(max(p + rng.uniform(-seed_effect, seed_effect), 0.0), 1.0)
        out[seed] = {}
        for i in range(n):
            qid = f"s{seed}q{i}"
            if partner is not None and rng.random() < agree:
                out[seed][qid] = partner[seed][qid]
            else:
                out[seed][qid] = int(rng.random() < p_seed)
    return out


def _las_outcomes(rng: random.Random, p_xe: float, partner: dict | None = None, agree: float = 0.0) -> dict:
    """LAS cells; with ``partner``, the same leaked bit, and the same cell on a share ``agree`` of the questions."""
    out = {}
    for seed, n in SEED_SIZES.items():
        out[seed] = {}
        for i in range(n):
            qid = f"s{seed}q{i}"
            if partner is not None and rng.random() < agree:
                out[seed][qid] = list(partner[seed][qid])
                continue
            leaked = partner[seed][qid][0] if partner is not None else int(rng.random() < 0.4)
            out[seed][qid] = [leaked, int(rng.random() < p_xe), int(rng.random() < 0.5)]
    return out


# -- independent references ----------------------------------------------------------------------------------------

def plain_metric(values: list, kind: str) -> float:
    """The per-seed metric in plain Python: a mean, or Hase et al.'s LAS (mean over non-empty bins of
    acc(x,e) - acc(x))."""
    if kind == "mean":
        return sum(values) / len(values)
    diffs = []
    for leak in (0, 1):
        rows = [v for v in values if v[0] == leak]
        if rows:
            diffs.append(sum(v[1] for v in rows) / len(rows) - sum(v[2] for v in rows) / len(rows))
    return sum(diffs) / len(diffs)


def plain_point(conditions: list[dict], kind: str) -> tuple[float, float, dict]:
    """Mean and sd (n-1) over seeds of the per-seed metric (or A - B)."""
    per_seed = {}
    for seed in sorted(conditions[0]):
        qids = sorted(conditions[0][seed])
        values = [plain_metric([c[seed][q] for q in qids], kind) for c in conditions]
        per_seed[seed] = values[0] - values[1] if len(values) == 2 else values[0]
    v = list(per_seed.values())
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return mean, sd, per_seed


def plain_two_stage(conditions: list[dict], kind: str, n_resamples: int, rng: random.Random) -> np.ndarray:
    """The two-stage bootstrap as one would write it: draw seeds with replacement, then in each drawn seed draw its
    question ids with replacement (the same ids for A and B), statistic = mean over drawn seeds of the metric
    (difference)."""
    seeds = sorted(conditions[0])
    samples = []
    for _ in range(n_resamples):
        per_draw = []
        for _ in seeds:
            seed = seeds[rng.randrange(len(seeds))]
            qids = sorted(conditions[0][seed])
            picked = [qids[rng.randrange(len(qids))] for _ in qids]
            values = [plain_metric([c[seed][q] for q in picked], kind) for c in conditions]
            per_draw.append(values[0] - values[1] if len(values) == 2 else values[0])
        samples.append(sum(per_draw) / len(per_draw))
    return np.array(samples)


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    grid = np.union1d(x, y)
    fx = np.searchsorted(np.sort(x), grid, side="right") / x.size
    fy = np.searchsorted(np.sort(y), grid, side="right") / y.size
    return float(np.abs(fx - fy).max())


def vectorised_samples(conditions: list[dict], kind: str, n_resamples: int, seed: int) -> np.ndarray:
    names = [f"c{i}" for i in range(len(conditions))]
    _, rows, _ = _aligned(conditions, names, kind)
    seeds = [_Seed.from_rows(r) for r in rows]
    draws, counts = _draw(seeds, n_resamples, np.random.default_rng(seed))
    return _samples_from_draws(seeds, draws, counts, kind, "other")


@pytest.fixture(params=["mean", "las", "mean-question-driven", "las-question-driven"])
def paired_data(request):
    """A/B outcomes. "question-driven": small seed effects and A, B agreeing on most questions, so that pairing
    (the same drawn questions for A and B) matters for the interval's width."""
    rng = random.Random(11)
    kind, _, driven = request.param.partition("-")
    agree = 0.9 if driven else 0.6
    if kind == "mean":
        effect = 0.02 if driven else 0.15
        b = _mean_outcomes(rng, 0.45, seed_effect=effect)
        a = _mean_outcomes(rng, 0.65, partner=b, agree=agree, seed_effect=effect)
    else:
        b = _las_outcomes(rng, 0.5)
        a = _las_outcomes(rng, 0.7, partner=b, agree=agree if driven else 0.0)
    return kind, a, b


# -- point estimates -------------------------------------------------------------------------------------------------

def test_point_estimates_match_plain_python(paired_data):
    kind, a, b = paired_data
    for conditions, est in (([a], two_stage_estimate(a, kind, n_resamples=10)),
                            ([a, b], paired_difference(a, b, kind, n_resamples=10))):
        mean, sd, per_seed = plain_point(conditions, kind)
        assert est.mean == pytest.approx(mean, rel=1e-12, abs=1e-12)
        assert est.sd == pytest.approx(sd, rel=1e-12)
        assert est.per_seed == pytest.approx(per_seed, rel=1e-12, abs=1e-12)
        assert est.n_seeds == 4 and est.n_questions == SEED_SIZES
        assert est.resampling == "seeds and questions" and est.n_resamples == 10


def test_las_per_seed_is_the_las_formula():
    rng = random.Random(3)
    a = _las_outcomes(rng, 0.6)
    est = two_stage_estimate(a, "las", n_resamples=10)
    for seed, qs in a.items():
        cells = np.array(list(qs.values()), dtype=bool)
        with pytest.warns(UserWarning) if len(qs) == 1 else contextlib.nullcontext():
            ref = las_from_correctness(cells[:, 1], cells[:, 2], cells[:, 0])["las"]
        assert est.per_seed[seed] == pytest.approx(ref, abs=1e-12)


# -- the bootstrap: same draws, exactly ------------------------------------------------------------------------------

def test_two_stage_statistic_on_the_same_draws_equals_a_plain_loop(paired_data):
    """Given the implementation's own draws (seed indices, then outcome counts per draw), a plain loop that expands
    each draw's counts back into resampled questions and applies the plain metric gives every resample's value."""
    kind, a, b = paired_data
    for conditions in ([a], [a, b]):
        _, rows, _ = _aligned(conditions, ["a", "b"][: len(conditions)], kind)
        seeds = [_Seed.from_rows(r) for r in rows]
        draws, counts = _draw(seeds, 300, np.random.default_rng(5))
        ours = _samples_from_draws(seeds, draws, counts, kind, "other")
        next_row = [0] * len(seeds)
        expected = []
        for b_row in draws:
            per_draw = []
            for s in b_row:
                row = counts[s][next_row[s]]
                next_row[s] += 1
                assert row.sum() == seeds[s].n  # a draw resamples as many questions as the seed has
                resampled = [seeds[s].categories[c] for c, k in enumerate(row) for _ in range(int(k))]
                if kind == "las":  # decode the cell index back to (leaked, xe, x) by hand
                    resampled = [[[int(v) // 4, int(v) // 2 % 2, int(v) % 2] for v in r] for r in resampled]
                values = [plain_metric([r[j] for r in resampled], kind) for j in range(len(conditions))]
                per_draw.append(values[0] - values[1] if len(values) == 2 else values[0])
            expected.append(sum(per_draw) / len(per_draw))
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)


def test_public_interval_is_the_percentile_of_the_samples(paired_data):
    kind, a, b = paired_data
    est = paired_difference(a, b, kind, n_resamples=4000, seed=9, confidence_level=0.9)
    samples = vectorised_samples([a, b], kind, 4000, seed=9)
    assert (est.ci_low, est.ci_high) == pytest.approx(tuple(np.percentile(samples, [5, 95])), abs=1e-12)
    assert est.confidence_level == 0.9


# -- the bootstrap: in distribution against resampling seeds and question ids -----------------------------------------

@pytest.mark.parametrize("paired", [False, True])
def test_two_stage_bootstrap_has_the_distribution_of_resampling_seeds_and_questions(paired_data, paired):
    """Tolerances come from the resample counts: means within 5 Monte-Carlo standard errors, sds within 5 standard
    errors of a sample sd, and the two-sample Kolmogorov-Smirnov distance below its critical value at
    alpha = 1e-6 (discrete samples make KS conservative)."""
    kind, a, b = paired_data
    conditions = [a, b] if paired else [a]
    n_ref, n_vec = 3000, 20000
    ref = plain_two_stage(conditions, kind, n_ref, random.Random(123))
    ours = vectorised_samples(conditions, kind, n_vec, seed=321)
    var = ref.var()
    assert abs(ours.mean() - ref.mean()) < 5 * math.sqrt(var / n_ref + var / n_vec)
    kurtosis = np.mean((ref - ref.mean()) ** 4) / var**2
    se_sd = math.sqrt(var * (kurtosis - 1) / 4 * (1 / n_ref + 1 / n_vec))
    assert abs(ours.std() - ref.std()) < 5 * se_sd
    critical = math.sqrt(-math.log(1e-6 / 2) / 2 * (n_ref + n_vec) / (n_ref * n_vec))
    assert ks_statistic(ours, ref) < critical


def test_bootstrap_is_seeded_and_order_independent(paired_data):
    kind, a, b = paired_data
    first = paired_difference(a, b, kind, n_resamples=500, seed=4)
    reordered = {s: dict(reversed(list(a[s].items()))) for s in reversed(list(a))}
    again = paired_difference(reordered, b, kind, n_resamples=500, seed=4)
    assert (first.ci_low, first.ci_high, first.mean) == (again.ci_low, again.ci_high, again.mean)
    other = paired_difference(a, b, kind, n_resamples=500, seed=5)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_single_seed_single_question():
    est = two_stage_estimate({7: {"q": 1}}, n_resamples=100)
    assert (est.mean, est.ci_low, est.ci_high) == (1.0, 1.0, 1.0)
    assert math.isnan(est.sd) and est.n_questions == {7: 1} and "one seed" in est.note
    with pytest.warns(UserWarning):  # las_from_correctness warns on the empty bin; ours does not need to
        ref = las_from_correctness([1], [0], [0])["las"]
    las = two_stage_estimate({7: {"q": [0, 1, 0]}}, "las", n_resamples=100)
    assert las.mean == ref == 1.0 and (las.ci_low, las.ci_high) == (1.0, 1.0)


def test_identical_conditions_give_a_zero_difference():
    rng = random.Random(0)
    a = _mean_outcomes(rng, 0.5)
    d = paired_difference(a, a, n_resamples=500)
    assert (d.mean, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    assert describe_direction(d) == "not shown (interval includes 0)"


# -- the finding rule -----------------------------------------------------------------------------------------------

def _estimate(low: float, high: float, seeds: int = 5):
    return Estimate(
        mean=(low + high) / 2, sd=0.1, per_seed={s: 0.0 for s in range(seeds)}, ci_low=low, ci_high=high,
        confidence_level=0.95, n_resamples=100, resampling="seeds and questions")


@pytest.mark.parametrize("low, high, expected", [
    (0.01, 0.2, "contrastive > greedy"), (-0.3, -0.02, "contrastive < greedy"),
    (-0.1, 0.2, "not shown (interval includes 0)"), (0.0, 0.2, "not shown (interval includes 0)"),
    (math.nan, math.nan, "not assessed (no interval)")])
def test_describe_direction(low, high, expected):
    est = _estimate(low, high)
    assert describe_direction(est, "contrastive", "greedy") == expected
    assert est.excludes_zero == est.is_finding == ("<" in expected or ">" in expected)
    assert "excludes zero" in FINDING_RULE and "5 seeds" in FINDING_RULE


@pytest.mark.parametrize("seeds", [1, 2, 4])
@pytest.mark.parametrize("low, high", [(0.01, 0.2), (-0.3, -0.02)])
def test_few_seeds_are_never_a_finding_even_when_the_interval_excludes_zero(low, high, seeds):
    """One seed's interval resamples questions only; issue #18 showed such directions did not replicate on other
    seeds, so the table must not print "A > B" for them (it did: 15 rows of the one-seed demo, 14 of the two-seed
    one); with 3 seeds the interval covers 0.86 where seeds differ (docs/report.md)."""
    est = _estimate(low, high, seeds=seeds)
    assert est.excludes_zero and not est.is_finding
    expected = f"not a finding ({seeds} seed{'s' if seeds > 1 else ''} < 5)"
    assert describe_direction(est, "contrastive", "greedy") == expected


# -- aggregate-only (seed-level) estimators --------------------------------------------------------------------------

def test_seed_level_estimate_matches_a_plain_loop_on_the_same_draws():
    values = {0: 0.2, 3: 0.38, 1: 0.293, 2: 0.41, 4: 0.25}
    est = seed_level_estimate(values, n_resamples=2000, seed=8)
    ordered = [values[s] for s in sorted(values)]
    draws = np.random.default_rng(8).integers(0, 5, size=(2000, 5))
    samples = [sum(ordered[i] for i in row) / 5 for row in draws]
    assert (est.ci_low, est.ci_high) == pytest.approx(tuple(np.percentile(samples, [2.5, 97.5])), abs=1e-12)
    assert est.mean == pytest.approx(sum(ordered) / 5)
    mean = sum(ordered) / 5
    assert est.sd == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in ordered) / 4))
    assert est.resampling == "seeds" and "not questions" in est.note and est.n_questions == {}


def test_seed_level_with_one_seed_has_no_interval():
    est = seed_level_estimate({0: 0.4})
    assert est.mean == 0.4 and math.isnan(est.ci_low) and math.isnan(est.sd) and not est.has_interval
    assert "one seed" in est.note and describe_direction(est) == "not assessed (no interval)"


def test_seed_level_difference_is_per_seed_and_has_no_interval():
    d = seed_level_difference({0: 0.413, 1: 0.287, 2: 0.293}, {0: 0.2, 1: 0.38, 2: 0.293})
    assert d.per_seed == pytest.approx({0: 0.213, 1: -0.093, 2: 0.0})
    assert d.mean == pytest.approx(0.04) and not d.has_interval and "aggregates only" in d.note
    with pytest.raises(ValueError, match=r"seed\(s\) of `a` missing from `b`: 2"):
        seed_level_difference({0: 0.1, 2: 0.3}, {0: 0.2})


# -- bad input -----------------------------------------------------------------------------------------------------

def test_paired_refuses_different_question_sets_naming_the_ids():
    a = {0: {"q1": 1, "q2": 0, "q3": 1}, 1: {"q1": 1}}
    b = {0: {"q1": 1, "q2": 1, "q4": 0}, 1: {"q1": 0}}
    with pytest.raises(ValueError, match=r"in seed 0: 1 question id\(s\) of `a` missing from `b`: 'q3'; "
                                         r"1 question id\(s\) of `b` missing from `a`: 'q4'"):
        paired_difference(a, b)


def test_paired_refuses_different_seeds_naming_them():
    with pytest.raises(ValueError, match=r"1 seed\(s\) of `b` missing from `a`: 5"):
        paired_difference({0: {"q": 1}}, {0: {"q": 1}, 5: {"q": 0}})


def test_many_missing_ids_are_summarised():
    a = {0: {f"q{i}": 1 for i in range(30)}}
    b = {0: {"q0": 1}}
    with pytest.raises(ValueError, match=r"29 question id\(s\) of `a` missing from `b`: .* and 19 more"):
        paired_difference(a, b)


@pytest.mark.parametrize("outcomes, kind, match", [
    ({}, "mean", "at least one seed"),
    ({0: {}}, "mean", "at least one question"),
    ({0: {"q": float("nan")}}, "mean", r"`outcomes`\[0\]\['q'\] must be a finite number"),
    ({0: {"q": "yes"}}, "mean", "must be a finite number"),
    ({0: {"q": [1, 0, 1]}}, "mean", "must be a finite number"),
    ({0: {"q": [1, 0]}}, "las", r"LAS cell \[leaked, xe_correct, x_correct\]"),
    ({0: {"q": [1, 2, 0]}}, "las", "three 0/1"),
    ({0: {"q": 1}}, "median", "`kind` must be one of"),
])
def test_bad_outcomes_are_refused(outcomes, kind, match):
    with pytest.raises(ValueError, match=match):
        two_stage_estimate(outcomes, kind)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_resamples": 0}, "`n_resamples` must be an int >= 1"),
    ({"n_resamples": 10.0}, "`n_resamples`"),
    ({"confidence_level": 1.0}, "`confidence_level` must be in"),
    ({"empty_bin": "drop"}, "`empty_bin` must be one of"),
])
def test_bad_bootstrap_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        two_stage_estimate({0: {"q": 1}}, **kwargs)


def test_outcome_metric_and_kind_match_plain_python(paired_data):
    kind, a, _ = paired_data
    for qs in a.values():
        assert outcome_kind(qs) == kind
        assert outcome_metric(qs, kind) == pytest.approx(plain_metric(list(qs.values()), kind), abs=1e-12)
    with pytest.raises(ValueError, match="all finite numbers .* or all \\[leaked, xe_correct, x_correct\\]"):
        outcome_kind({"q1": 1, "q2": [1, 0, 1]})
    with pytest.raises(ValueError, match="at least one"):
        outcome_kind({})


def test_a_difference_that_is_zero_is_not_a_float_rounding_finding():
    """Regression: per-seed differences computed as A/n - B/n and averaged over seeds left 1.6e-17 where the exact
    value is 0, so the lower interval end was 1.6e-17 > 0 and the finding rule printed "A > B"."""
    r = random.Random(212)  # the first of 40,000 random cases where this happened
    sizes = [r.randint(3, 15) for _ in range(r.randint(2, 5))]
    pa, pb = r.uniform(0.3, 0.7), r.uniform(0.2, 0.6)
    a = {s: {f"q{i}": int(r.random() < pa) for i in range(n)} for s, n in enumerate(sizes)}
    b = {s: {f"q{i}": int(r.random() < pb) for i in range(n)} for s, n in enumerate(sizes)}
    d = paired_difference(a, b, n_resamples=400, seed=0)
    # the exact resample values, in rational arithmetic on the same draws
    _, rows, _ = _aligned([a, b], ["a", "b"], "mean")
    seeds = [_Seed.from_rows(x) for x in rows]
    draws, counts = _draw(seeds, 400, np.random.default_rng(0))
    exact, used = [], [0] * len(seeds)
    for row in draws:
        total = Fraction(0)
        for s in row:
            c = counts[s][used[s]]
            used[s] += 1
            total += sum(Fraction(int(k)) * (Fraction(int(x)) - Fraction(int(y)))
                         for k, (x, y) in zip(c, seeds[s].categories)) / seeds[s].n
        exact.append(total / len(row))
    exact.sort()
    low_rank = 0.025 * (len(exact) - 1)  # numpy's linear percentile: between these two order statistics
    assert exact[math.floor(low_rank)] == exact[math.ceil(low_rank)] == 0
    assert d.ci_low == 0.0 and describe_direction(d) == "not shown (interval includes 0)"


def test_seed_level_difference_of_zero_is_zero():
    """Regression: (0.3 - 0.2 + 0.1 - 0.2) / 2 came out as -1.4e-17 and printed as such."""
    assert 0.3 - 0.2 + (0.1 - 0.2) != 0  # the float arithmetic this guards against
    d = seed_level_difference({0: 0.3, 1: 0.1}, {0: 0.2, 1: 0.2})
    assert d.mean == 0.0
