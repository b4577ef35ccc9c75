# Copyright 2026 The scott-distill developers. Apache-2.0.
"""Leakage-adjusted simulatability (LAS) as an `evaluate` metric."""

import datasets
import evaluate

from scott_distill.las import leakage_adjusted_simulatability

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
the other bin's difference and a warning is raised. With `bootstrap=N` a percentile confidence interval is
added (an exact multinomial bootstrap over the 8 correctness cells, equivalent to resampling rows).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int` or `str`): simulator predictions given the input and the explanation.
    x_predictions (`list`): simulator predictions given the input alone.
    e_predictions (`list`): simulator predictions given the explanation alone.
    references (`list`): the outputs of the model that wrote the explanations (not the gold labels).
    bootstrap (`int`, defaults to 0): bootstrap resamples for a confidence interval; 0 for none.
    seed (`int`, defaults to 0): bootstrap seed.
    confidence_level (`float`, defaults to 0.95): coverage of the percentile interval.
    e_probabilities (`list` of `float`, optional): probability the e-only simulator gives the reference
        label; adds `las_k_bins`, LAS over `k_bins` equal-width leakage-probability bins.
    k_bins (`int`, defaults to 4): number of bins for `las_k_bins`.
Returns:
    las (`float`): leakage-adjusted simulatability, in [-1, 1].
    leaked_diff (`float`), nonleaked_diff (`float`): acc(x, e) - acc(x) in each bin (NaN if empty).
    n_leaked (`int`), n_nonleaked (`int`): bin sizes.
    acc_xe, acc_x, acc_e (`float`): simulator accuracy in each condition.
    las_ci_low, las_ci_high, las_std (`float`): with `bootstrap > 0`.
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
"""


class LAS(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("int64"),
                        "x_predictions": datasets.Value("int64"),
                        "e_predictions": datasets.Value("int64"),
                        "references": datasets.Value("int64"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "x_predictions": datasets.Value("string"),
                        "e_predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
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
        )
