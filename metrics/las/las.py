# Copyright 2026 The scott-distill developers. Apache-2.0.
"""Leakage-adjusted simulatability (LAS) as an `evaluate` metric."""

import datasets
import evaluate

from scott_distill.las import leakage_adjusted_simulatability, validate_labels

_CITATION = """\
@inproceedings{hase2020leakage,
  title={Leakage-Adjusted Simulatability: Can Models Generate Non-Trivial Explanations of Their Behavior in Natural Language?},
  author={Hase, Peter and Zhang, Shiyue and Xie, Harry and Bansal, Mohit},
  booktitle={Findings of EMNLP},
  year={2020}
}
"""

_DESCRIPTION = """\
Leakage-adjusted simulatability (LAS) measures how much a model's natural-language explanations help a
simulator predict the model's own outputs, controlling for explanations that simply state the answer
("leak" it). A simulator predicts the model's output from the input and explanation (x, e), from the input
alone (x) and from the explanation alone (e). Rows where the e-only prediction is right are *leaked*. LAS is
the unweighted mean over the leaked and non-leaked bins of acc(x, e) - acc(x). If one bin is empty LAS is
the other bin's difference and a warning is raised (`empty_bin="nan"` gives NaN instead, as the authors'
compute_sim.py). With `bootstrap=N` a percentile confidence interval is added: the resamples' cell counts
are drawn from their exact multinomial distribution (the same resampled data as resampling rows).
Labels are compared by value (1 == 1.0 == True; strings as text); numbers and strings are never mixed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of numbers or `str`): simulator predictions given the input and the explanation.
    x_predictions (`list`): simulator predictions given the input alone.
    e_predictions (`list`): simulator predictions given the explanation alone.
    references (`list`): the outputs of the model that wrote the explanations (not the gold labels).
    bootstrap (`int`, defaults to 0): bootstrap resamples for a confidence interval; 0 for none.
    seed (`int`, defaults to 0): bootstrap seed.
    confidence_level (`float`, defaults to 0.95): coverage of the percentile interval.
    e_probabilities (`list` of `float`, optional): probability the e-only simulator gives the reference
        label; adds `las_k_bins`, the paper's calibrated variant: a logistic regression of e-only correctness on
        these probabilities calibrates them, and LAS is averaged over `k_bins` equal-width bins of the
        calibrated values (over their observed range).
    k_bins (`int`, defaults to 4): number of bins for `las_k_bins`.
    empty_bin (`str`, defaults to `"other"`): `"other"`: an empty bin is left out (LAS is the other bin's
        difference, with a warning), in the estimate and in every resample; `"nan"`: the authors'
        compute_sim.py: LAS is NaN when a bin is empty, and the interval is NaN as soon as a resample has one.
Returns:
    las (`float`): leakage-adjusted simulatability, in [-1, 1].
    leaked_diff (`float`), nonleaked_diff (`float`): acc(x, e) - acc(x) in each bin (NaN if empty).
    n_leaked (`int`), n_nonleaked (`int`): bin sizes.
    acc_xe, acc_x, acc_e (`float`): simulator accuracy in each condition.
    las_ci_low, las_ci_high, las_ci_half_width, las_bootstrap_mean, las_std (`float`),
        bootstrap_resamples_with_empty_bin (`int`): with `bootstrap > 0`; the authors report
        `las_bootstrap_mean` +/- `las_ci_half_width`.
    las_k_bins (`float`): with `e_probabilities`.
Examples:

    >>> import os, evaluate, scott_distill
    >>> las = scott_distill.load_las()
    >>> results = las.compute(
    ...     predictions=[1, 0, 1, 1, 0, 1],
    ...     x_predictions=[1, 1, 0, 1, 1, 0],
    ...     e_predictions=[1, 0, 0, 0, 1, 1],
    ...     references=[1, 0, 1, 1, 0, 1],
    ... )
    >>> print(round(results["las"], 4), results["n_leaked"], results["n_nonleaked"])
    0.6667 3 3

    String labels and a bootstrap interval:

    >>> results = las.compute(
    ...     predictions=["yes", "no", "no"], x_predictions=["no", "no", "yes"],
    ...     e_predictions=["yes", "yes", "no"], references=["yes", "no", "no"], bootstrap=1000, seed=0,
    ... )
    >>> print(round(results["las"], 3), results["las_ci_low"] <= results["las"] <= results["las_ci_high"])
    0.5 True

    Labels are compared by value, the same rule as `scott_distill.las.leakage_adjusted_simulatability`:

    >>> results = las.compute(
    ...     predictions=[1.0, 0.0, 1.0, 1.0], x_predictions=[False, False, False, True],
    ...     e_predictions=[1, 1, 0, 0], references=[True, False, True, True],
    ... )
    >>> print(round(results["las"], 4))
    0.6667

    The authors' empty-bin behaviour (every row leaked here):

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     results = las.compute(predictions=[1, 0], x_predictions=[0, 0], e_predictions=[1, 0],
    ...                           references=[1, 0], empty_bin="nan", bootstrap=100)
    >>> print(results["las"], results["las_ci_half_width"], results["n_nonleaked"])
    nan nan 0
"""


_LABEL_COLUMNS = ("predictions", "x_predictions", "e_predictions", "references")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LAS(evaluate.Metric):
    # `evaluate` picks one feature set from the first row and casts every other value to it (a string "1"
    # would silently become 1.0): the pure function's label rule is applied to the inputs before that.
    def compute(self, **kwargs):
        """Compute LAS (the labels are checked with the pure function's rule first)."""
        self._check_labels(kwargs)
        return super().compute(**kwargs)

    def add_batch(self, **kwargs):
        """Add a batch (the labels are checked with the pure function's rule first)."""
        self._check_labels(kwargs)
        return super().add_batch(**kwargs)

    def add(self, **kwargs):
        """Add one row (the labels are checked with the pure function's rule first)."""
        names = {"prediction": "predictions", "reference": "references"}
        self._check_labels({names.get(k, k): [v] for k, v in kwargs.items()})
        return super().add(**kwargs)

    @staticmethod
    def _check_labels(kwargs):
        given = {k: kwargs[k] for k in _LABEL_COLUMNS if kwargs.get(k) is not None}
        if given:
            validate_labels(given)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                # strings first: a string row must not be cast to a number; numbers as float64 keep their value
                # (int64 would truncate a label 1.5 to 1)
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "x_predictions": datasets.Value("string"),
                        "e_predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("float64"),
                        "x_predictions": datasets.Value("float64"),
                        "e_predictions": datasets.Value("float64"),
                        "references": datasets.Value("float64"),
                    }
                ),
            ],
            reference_urls=["https://arxiv.org/abs/2010.04119", "https://github.com/peterbhase/LAS-NL-Explanations"],
        )

    def _compute(
        self,
        predictions,
        x_predictions,
        e_predictions,
        references,
        bootstrap=0,
        seed=0,
        confidence_level=0.95,
        e_probabilities=None,
        k_bins=4,
        empty_bin="other",
    ):
        return leakage_adjusted_simulatability(
            predictions=predictions,
            x_predictions=x_predictions,
            e_predictions=e_predictions,
            references=references,
            bootstrap=bootstrap,
            seed=seed,
            confidence_level=confidence_level,
            e_probabilities=e_probabilities,
            k_bins=k_bins,
            empty_bin=empty_bin,
        )
