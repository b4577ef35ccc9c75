"""Leakage-adjusted simulatability (Hase et al., 2020), vectorised with an exact multinomial bootstrap."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["leakage_adjusted_simulatability", "las_from_correctness"]


def _as_labels(values: Sequence[Any], name: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a flat sequence of labels, got shape {arr.shape}.")
    # ints and strings may be mixed across arguments (e.g. 1 vs "1"): compare as strings
    return np.array([str(v) for v in arr], dtype=object)


def _bin_diff(xe: np.ndarray, x: np.ndarray) -> float:
    return float(xe.mean() - x.mean()) if xe.size else float("nan")


def _las_from_cell_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LAS for many resamples at once from counts of the 8 (leaked, xe correct, x correct) cells.

    ``counts`` has shape ``(B, 2, 2, 2)`` indexed by ``[leaked, xe_correct, x_correct]``.
    Returns (las, leaked_diff, nonleaked_diff) with NaN for an empty bin's diff.
    """
    counts = counts.astype(np.float64)
    n_bin = counts.sum(axis=(2, 3))  # (B, 2)
    xe_correct = counts[:, :, 1, :].sum(axis=2)
    x_correct = counts[:, :, :, 1].sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (xe_correct - x_correct) / n_bin  # NaN where a bin is empty
    las = np.nanmean(np.where(n_bin > 0, diff, np.nan), axis=1) if diff.size else diff
    return las, diff[:, 1], diff[:, 0]


def las_from_correctness(
    xe_correct: np.ndarray,
    x_correct: np.ndarray,
    leaked: np.ndarray,
    bootstrap: int = 0,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> dict[str, float]:
    """LAS from boolean per-row vectors (see `leakage_adjusted_simulatability`)."""
    xe_correct = np.asarray(xe_correct, dtype=bool)
    x_correct = np.asarray(x_correct, dtype=bool)
    leaked = np.asarray(leaked, dtype=bool)
    n = xe_correct.size
    leaked_diff = _bin_diff(xe_correct[leaked], x_correct[leaked])
    nonleaked_diff = _bin_diff(xe_correct[~leaked], x_correct[~leaked])
    present = [d for d in (leaked_diff, nonleaked_diff) if not np.isnan(d)]
    if len(present) == 1:
        empty = "leaked" if np.isnan(leaked_diff) else "non-leaked"
        warnings.warn(
            f"LAS: the {empty} bin is empty; LAS is the other bin's difference alone.", UserWarning, stacklevel=3
        )
    result: dict[str, float] = {
        "las": float(np.mean(present)),
        "leaked_diff": leaked_diff,
        "nonleaked_diff": nonleaked_diff,
        "n_leaked": int(leaked.sum()),
        "n_nonleaked": int(n - leaked.sum()),
    }
    if bootstrap:
        # Resampling rows with replacement only changes how many rows land in each of the 8
        # (leaked, xe correct, x correct) cells, and those counts are exactly multinomial: drawing them
        # is the same bootstrap as the original per-resample loop, in O(B) instead of O(B * n).
        cell = leaked.astype(int) * 4 + xe_correct.astype(int) * 2 + x_correct.astype(int)
        p = np.bincount(cell, minlength=8) / n
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, p, size=bootstrap).reshape(bootstrap, 2, 2, 2)
        samples, _, _ = _las_from_cell_counts(counts)
        tail = (1.0 - confidence_level) / 2.0 * 100.0
        low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
        result.update(las_ci_low=float(low), las_ci_high=float(high), las_std=float(np.nanstd(samples)))
    return result


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
) -> dict[str, float]:
    """Leakage-adjusted simulatability (LAS) of explanations, as defined by Hase et al. (2020).

    A simulator predicts the *model's* output (``references``) from the input and explanation
    (``predictions``), the input alone (``x_predictions``) and the explanation alone (``e_predictions``).
    Rows whose explanation alone gives the output away are *leaked*. LAS is the unweighted mean, over the
    leaked and the non-leaked bins, of ``acc(x, e) - acc(x)`` in that bin. If one bin is empty, LAS is the
    other bin's difference and a ``UserWarning`` says so.

    Args:
        predictions: simulator predictions given (x, e).
        x_predictions: simulator predictions given x alone.
        e_predictions: simulator predictions given e alone.
        references: the outputs of the model being explained (not the gold labels).
        bootstrap: number of bootstrap resamples for a percentile interval (0: none).
        seed: seed of the bootstrap.
        confidence_level: coverage of the interval.
        e_probabilities: optional probability the e-only simulator gives to the reference label; enables
            ``las_k_bins``: leakage probability cut into ``k_bins`` equal-width bins over [0, 1], and the
            mean over non-empty bins of ``acc(x, e) - acc(x)`` (the calibrated variant of the paper).
        k_bins: number of bins for ``las_k_bins``.

    Returns:
        ``las``, ``leaked_diff``, ``nonleaked_diff``, ``n_leaked``, ``n_nonleaked``, ``acc_xe``, ``acc_x``,
        ``acc_e``; ``las_ci_low``, ``las_ci_high``, ``las_std`` with ``bootstrap > 0``; ``las_k_bins`` with
        ``e_probabilities``.
    """
    refs = _as_labels(references, "references")
    columns = {"predictions": predictions, "x_predictions": x_predictions, "e_predictions": e_predictions}
    arrays = {}
    for name, values in columns.items():
        arr = _as_labels(values, name)
        if arr.shape != refs.shape:
            raise ValueError(f"`{name}` has {arr.shape[0]} rows but `references` has {refs.shape[0]}.")
        arrays[name] = arr
    if refs.size == 0:
        raise ValueError("`references` is empty: LAS needs at least one row.")
    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"`bootstrap` must be an int >= 0, got {bootstrap!r}.")
    if not 0 < confidence_level < 1:
        raise ValueError(f"`confidence_level` must be in (0, 1), got {confidence_level!r}.")
    xe_correct = arrays["predictions"] == refs
    x_correct = arrays["x_predictions"] == refs
    e_correct = arrays["e_predictions"] == refs
    result = las_from_correctness(xe_correct, x_correct, e_correct, bootstrap, seed, confidence_level)
    result.update(acc_xe=float(xe_correct.mean()), acc_x=float(x_correct.mean()), acc_e=float(e_correct.mean()))
    if e_probabilities is not None:
        probs = np.asarray(e_probabilities, dtype=np.float64)
        if probs.shape != refs.shape or np.any((probs < 0) | (probs > 1)) or np.isnan(probs).any():
            raise ValueError("`e_probabilities` must hold one probability in [0, 1] per row.")
        if not isinstance(k_bins, int) or k_bins < 1:
            raise ValueError(f"`k_bins` must be an int >= 1, got {k_bins!r}.")
        bins = np.minimum((probs * k_bins).astype(int), k_bins - 1)
        diffs = [
            _bin_diff(xe_correct[bins == b], x_correct[bins == b]) for b in range(k_bins) if np.any(bins == b)
        ]
        result["las_k_bins"] = float(np.mean(diffs))
    return result
