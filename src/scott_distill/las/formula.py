"""Leakage-adjusted simulatability (Hase et al., 2020), vectorised with an exact multinomial bootstrap.

Reference behaviour: ``compute_sim.py`` and ``causal_estimation.Rmd`` of github.com/peterbhase/LAS-NL-Explanations.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)

__all__ = [
    "EMPTY_BIN_RULES",
    "calibrate_leakage_probabilities",
    "equal_width_bins",
    "las_cell_index",
    "las_from_cell_counts",
    "las_from_correctness",
    "leakage_adjusted_simulatability",
    "simulator_correctness",
    "validate_labels",
]

# "other": an empty bin is left out and LAS is the other bin's difference (with a warning).
# "nan": Hase et al.'s compute_sim.py: the mean over the two bins is NaN when a bin is empty, and so is the
#        bootstrap interval as soon as one resample has an empty bin.
EMPTY_BIN_RULES = ("other", "nan")


def _label_kind(value: Any, name: str, index: int) -> str | None:
    """'number', 'string' or None for a missing label; anything else (or NaN) is refused."""
    if value is None:
        return None
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bool, np.bool_, numbers.Integral)):
        return "number"
    if isinstance(value, numbers.Real):
        if math.isnan(float(value)):
            raise ValueError(f"`{name}`[{index}] is NaN; a label must be a number, a string or None.")
        return "number"
    raise ValueError(
        f"`{name}`[{index}] is a {type(value).__name__} ({value!r}); labels must be numbers, strings or None."
    )


def validate_labels(columns: dict[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """The one label rule of LAS, shared by the pure function and the ``evaluate`` module.

    Labels are compared **by value**: ``1``, ``1.0``, ``True``, ``np.int64(1)`` and ``np.float32(1.0)`` are the
    same label, strings are compared as text, ``None`` (no answer) only equals ``None``. A number never equals a
    string, so numbers and strings mixed across (or within) the columns are refused rather than guessed at
    (``"1"`` vs ``1``: convert one side). Returns each column as a 1-D array ready for ``==``.
    """
    out: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}  # kind -> first column holding it
    for name, values in columns.items():
        arr = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=object)
        if arr.ndim != 1:
            raise ValueError(f"`{name}` must be a flat sequence of labels, got shape {arr.shape}.")
        if arr.dtype.kind in "biuf":  # numeric numpy array: compare as float64 (exact for ints below 2**53)
            arr = arr.astype(np.float64)
            if np.isnan(arr).any():
                raise ValueError(f"`{name}`[{int(np.flatnonzero(np.isnan(arr))[0])}] is NaN; a label must be a "
                                 "number, a string or None.")
            column_kinds = {"number"} if arr.size else set()
        elif arr.dtype.kind in "US":
            arr = arr.astype(str).astype(object)
            column_kinds = {"string"} if arr.size else set()
        else:
            arr = arr.astype(object)
            column_kinds = {k for k in (_label_kind(v, name, i) for i, v in enumerate(arr)) if k is not None}
        for kind in column_kinds:
            kinds.setdefault(kind, name)
        out[name] = arr
    if len(kinds) > 1:
        raise ValueError(
            f"LAS labels mix numbers (first in `{kinds['number']}`) and strings (first in `{kinds['string']}`). "
            "Labels are compared by value and a number never equals a string (1 != '1'): convert one of them."
        )
    return out


def _bin_diff(xe: np.ndarray, x: np.ndarray) -> float:
    return float(xe.mean() - x.mean()) if xe.size else float("nan")


def las_cell_index(leaked: np.ndarray, xe_correct: np.ndarray, x_correct: np.ndarray) -> np.ndarray:
    """Each row's (leaked, xe correct, x correct) cell as one index in ``0..7``: the flat index of the
    ``[leaked, xe_correct, x_correct]`` axes of `las_from_cell_counts`' ``counts``."""
    bits = [np.asarray(v, dtype=bool).astype(np.int64) for v in (leaked, xe_correct, x_correct)]
    return bits[0] * 4 + bits[1] * 2 + bits[2]


def las_from_cell_counts(counts: np.ndarray, empty_bin: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LAS for many resamples at once from counts of the 8 (leaked, xe correct, x correct) cells.

    ``counts`` has shape ``(B, 2, 2, 2)`` indexed by ``[leaked, xe_correct, x_correct]`` (a row's flat index is
    `las_cell_index`). The bootstrap of `las_from_correctness` and the two-stage bootstrap of
    ``scott_distill.report.stats`` both apply it.
    Returns (las, leaked_diff, nonleaked_diff) with NaN for an empty bin's diff; LAS of a resample with an empty
    bin follows ``empty_bin``.
    """
    counts = counts.astype(np.float64)
    n_bin = counts.sum(axis=(2, 3))  # (B, 2)
    xe_correct = counts[:, :, 1, :].sum(axis=2)
    x_correct = counts[:, :, :, 1].sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (xe_correct - x_correct) / n_bin  # NaN where a bin is empty
    if empty_bin == "nan":
        las = diff.mean(axis=1)  # NaN as soon as one bin is empty, as np.mean over the two bins in compute_sim.py
    else:
        las = np.nanmean(diff, axis=1)  # a resample holds at least one row, so one bin is never empty
    return las, diff[:, 1], diff[:, 0]


def _check_empty_bin(empty_bin: str) -> None:
    if empty_bin not in EMPTY_BIN_RULES:
        raise ValueError(f"`empty_bin` must be one of {EMPTY_BIN_RULES}, got {empty_bin!r}.")


def las_from_correctness(
    xe_correct: np.ndarray,
    x_correct: np.ndarray,
    leaked: np.ndarray,
    bootstrap: int = 0,
    seed: int = 0,
    confidence_level: float = 0.95,
    empty_bin: str = "other",
) -> dict[str, float]:
    """LAS from boolean per-row vectors (see `leakage_adjusted_simulatability`)."""
    _check_empty_bin(empty_bin)
    xe_correct = np.asarray(xe_correct, dtype=bool)
    x_correct = np.asarray(x_correct, dtype=bool)
    leaked = np.asarray(leaked, dtype=bool)
    n = xe_correct.size
    leaked_diff = _bin_diff(xe_correct[leaked], x_correct[leaked])
    nonleaked_diff = _bin_diff(xe_correct[~leaked], x_correct[~leaked])
    present = [d for d in (leaked_diff, nonleaked_diff) if not np.isnan(d)]
    # compute_sim.py: np.mean over the two bins' differences (NaN when a bin is empty)
    las = float(np.mean([leaked_diff, nonleaked_diff] if empty_bin == "nan" else present))
    if len(present) == 1:
        empty = "leaked" if np.isnan(leaked_diff) else "non-leaked"
        consequence = "LAS is NaN (empty_bin='nan')" if empty_bin == "nan" else "LAS is the other bin's difference"
        warnings.warn(f"LAS: the {empty} bin is empty; {consequence}.", UserWarning, stacklevel=3)
    result: dict[str, float] = {
        "las": las,
        "leaked_diff": leaked_diff,
        "nonleaked_diff": nonleaked_diff,
        "n_leaked": int(leaked.sum()),
        "n_nonleaked": int(n - leaked.sum()),
    }
    if bootstrap:
        # Resampling rows with replacement only changes how many rows land in each of the 8
        # (leaked, xe correct, x correct) cells, and those counts are exactly multinomial: drawing them gives the
        # resampled data of the original per-resample loop, in O(B) instead of O(B * n). The statistic applied
        # to a resample with an empty bin is `empty_bin`'s.
        cell = las_cell_index(leaked, xe_correct, x_correct)
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, np.bincount(cell, minlength=8) / n, size=bootstrap).reshape(bootstrap, 2, 2, 2)
        samples, _, _ = las_from_cell_counts(counts, empty_bin)
        tail = (1.0 - confidence_level) / 2.0 * 100.0
        # np.percentile / np.mean propagate NaN, as compute_sim.py's np.quantile (empty_bin="nan"); with "other"
        # no sample is NaN
        low, high = np.percentile(samples, [tail, 100.0 - tail])
        n_empty = int((counts.reshape(bootstrap, 2, 4).sum(axis=2) == 0).any(axis=1).sum())
        result.update(
            las_ci_low=float(low),
            las_ci_high=float(high),
            las_ci_half_width=float((high - low) / 2),
            las_bootstrap_mean=float(np.mean(samples)),
            las_std=float(np.std(samples)),
            bootstrap_resamples_with_empty_bin=n_empty,
        )
    return result


def calibrate_leakage_probabilities(e_probabilities: ArrayLike, e_correct: ArrayLike) -> np.ndarray:
    """Hase et al.'s calibration of the e-only simulator's probabilities (``causal_estimation.Rmd``).

    Fits the logistic regression ``e_correct ~ 1 + e_probability`` by maximum likelihood (iteratively
    reweighted least squares, as R's ``glm(family = binomial)``: at most 25 iterations, relative deviance
    change below 1e-8) and returns its fitted probabilities: the calibrated probability that a row leaks.
    If ``e_correct`` is constant the fit has no finite optimum; the calibrated value is then that constant
    for every row (one bin).
    """
    p = np.asarray(e_probabilities, dtype=np.float64)
    y = np.asarray(e_correct, dtype=np.float64)
    if y.min() == y.max():
        return np.full_like(p, y[0])
    design = np.stack([np.ones_like(p), p], axis=1)
    eps = np.finfo(np.float64).eps

    def deviance(mu: np.ndarray) -> float:
        mu = np.clip(mu, eps, 1 - eps)
        return float(-2 * np.sum(y * np.log(mu) + (1 - y) * np.log(1 - mu)))

    mu = (y + 0.5) / 2  # glm's binomial start
    eta = np.log(mu / (1 - mu))
    dev = deviance(mu)
    for _ in range(25):
        dmu = np.maximum(mu * (1 - mu), eps)
        z = eta + (y - mu) / dmu
        w = np.sqrt(dmu)
        beta, *_ = np.linalg.lstsq(design * w[:, None], z * w, rcond=None)
        eta = design @ beta
        mu = 1 / (1 + np.exp(-np.clip(eta, -30, 30)))  # R's logit linkinv thresholds
        new_dev = deviance(mu)
        if abs(new_dev - dev) / (abs(new_dev) + 0.1) < 1e-8:
            break
        dev = new_dev
    else:
        # always so with two choices (e-only correct <=> p > 0.5), often with few rows: not worth a warning
        logger.info("LAS calibration: the logistic regression did not converge in 25 iterations: the e-only "
                       "probabilities separate leaked from non-leaked rows, the calibrated values are close to 0 and "
                       "1, and las_k_bins comes close to the two-bin LAS.")
    return mu


def equal_width_bins(values: np.ndarray, k: int) -> np.ndarray:
    """Bin index per value: ``k`` equal-width intervals over the observed range (the binning of R's
    ``OneR::bin(method="length")`` used in ``causal_estimation.Rmd``: ``cut(x, k)``, right-closed intervals with
    the outer ends widened by 0.1 % of the range; a vector with at most ``k`` distinct values gets one bin per
    value)."""
    values = np.asarray(values, dtype=np.float64)
    distinct = np.unique(values)
    if distinct.size <= k:
        return np.searchsorted(distinct, values)
    lo, hi = float(values.min()), float(values.max())
    breaks = np.linspace(lo, hi, k + 1)
    # interior breaks only: the widened outer ends hold every value; (b[i-1], b[i]] -> i - 1
    return np.searchsorted(breaks[1:-1], values, side="left")


def simulator_correctness(
    predictions: Sequence[Any],
    x_predictions: Sequence[Any],
    e_predictions: Sequence[Any],
    references: Sequence[Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, whether the simulator's (x, e), x-only and e-only predictions equal the reference (labels compared
    by value, `validate_labels`): ``xe_correct``, ``x_correct`` and ``e_correct`` (= leaked)."""
    labels = validate_labels({"references": references, "predictions": predictions,
                              "x_predictions": x_predictions, "e_predictions": e_predictions})
    refs = labels.pop("references")
    for name, arr in labels.items():
        if arr.shape != refs.shape:
            raise ValueError(f"`{name}` has {arr.shape[0]} rows but `references` has {refs.shape[0]}.")
    if refs.size == 0:
        raise ValueError("`references` is empty: LAS needs at least one row.")
    return tuple(np.asarray(labels[name] == refs, dtype=bool)  # type: ignore[return-value]
                 for name in ("predictions", "x_predictions", "e_predictions"))


def leakage_adjusted_simulatability(
    predictions: Sequence[Any],
    x_predictions: Sequence[Any],
    e_predictions: Sequence[Any],
    references: Sequence[Any],
    bootstrap: int = 0,
    seed: int = 0,
    confidence_level: float = 0.95,
    e_probabilities: Sequence[float] | None = None,
    k_bins: int = 4,
    empty_bin: str = "other",
) -> dict[str, float]:
    """Leakage-adjusted simulatability (LAS) of explanations, as defined by Hase et al. (2020).

    A simulator predicts the *model's* output (``references``) from the input and explanation
    (``predictions``), the input alone (``x_predictions``) and the explanation alone (``e_predictions``).
    Rows whose explanation alone gives the output away are *leaked*. LAS is the unweighted mean, over the
    leaked and the non-leaked bins, of ``acc(x, e) - acc(x)`` in that bin.

    Labels are compared by value (``1 == 1.0 == True``; strings as text; a number never equals a string and
    mixing them is refused): see `validate_labels`.

    Args:
        predictions: simulator predictions given (x, e).
        x_predictions: simulator predictions given x alone.
        e_predictions: simulator predictions given e alone.
        references: the outputs of the model being explained (not the gold labels).
        bootstrap: number of bootstrap resamples (rows with replacement) for a percentile interval (0: none).
        seed: seed of the bootstrap.
        confidence_level: coverage of the interval.
        e_probabilities: optional probability the e-only simulator gives to the reference label; enables
            ``las_k_bins``, the paper's calibrated variant: the probabilities are calibrated by a logistic
            regression of e-only correctness on them (`calibrate_leakage_probabilities`), the calibrated values
            cut into ``k_bins`` equal-width bins over their observed range (`equal_width_bins`), and
            ``acc(x, e) - acc(x)`` averaged over the non-empty bins.
        k_bins: number of bins for ``las_k_bins``.
        empty_bin: ``"other"`` (default): when one of the two bins is empty, LAS is the other bin's difference
            (with a ``UserWarning``), in the point estimate and in every bootstrap resample. ``"nan"``: Hase et
            al.'s ``compute_sim.py`` exactly: LAS is NaN when a bin is empty, and the interval, bootstrap mean
            and std are NaN as soon as one resample has an empty bin.

    Returns:
        ``las``, ``leaked_diff``, ``nonleaked_diff`` (NaN for an empty bin), ``n_leaked``, ``n_nonleaked``,
        ``acc_xe``, ``acc_x``, ``acc_e``; with ``bootstrap > 0``: ``las_ci_low``, ``las_ci_high``,
        ``las_ci_half_width`` (half the interval's width: the authors report ``las_bootstrap_mean`` ± it),
        ``las_bootstrap_mean``, ``las_std`` and ``bootstrap_resamples_with_empty_bin``; ``las_k_bins`` with
        ``e_probabilities``.

    Examples:

        >>> from scott_distill.las import leakage_adjusted_simulatability
        >>> r = leakage_adjusted_simulatability(
        ...     predictions=[1.0, 0.0, 1.0, 1.0], x_predictions=[0, 0, 0, 1],
        ...     e_predictions=[True, True, False, False], references=[1, 0, 1, 1])
        >>> round(r["las"], 4), r["n_leaked"], r["n_nonleaked"]
        (0.6667, 1, 3)
    """
    _check_empty_bin(empty_bin)
    xe_correct, x_correct, e_correct = simulator_correctness(predictions, x_predictions, e_predictions, references)
    if not isinstance(bootstrap, (int, np.integer)) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ValueError(f"`bootstrap` must be an int >= 0, got {bootstrap!r}.")
    if not 0 < confidence_level < 1:
        raise ValueError(f"`confidence_level` must be in (0, 1), got {confidence_level!r}.")
    result = las_from_correctness(xe_correct, x_correct, e_correct, int(bootstrap), seed, confidence_level, empty_bin)
    result.update(acc_xe=float(xe_correct.mean()), acc_x=float(x_correct.mean()), acc_e=float(e_correct.mean()))
    if e_probabilities is not None:
        probs = np.asarray(e_probabilities, dtype=np.float64)
        if probs.shape != xe_correct.shape or np.any((probs < 0) | (probs > 1)) or np.isnan(probs).any():
            raise ValueError("`e_probabilities` must hold one probability in [0, 1] per row.")
        if not isinstance(k_bins, int) or k_bins < 1:
            raise ValueError(f"`k_bins` must be an int >= 1, got {k_bins!r}.")
        bins = equal_width_bins(calibrate_leakage_probabilities(probs, e_correct), k_bins)
        diffs = [_bin_diff(xe_correct[bins == b], x_correct[bins == b]) for b in np.unique(bins)]
        result["las_k_bins"] = float(np.mean(diffs))
    return result
