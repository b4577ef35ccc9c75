"""The one LAS pipeline: a student's outputs -> simulator -> predictions -> LAS.

``scott-distill las``, the recipe's evaluate stage and the demo all measure a student through `simulator_las`
with one `LASConfig` (the simulator's training arguments plus the LAS settings), so a student's LAS does not
depend on which of them measured it.

**Rule for answers outside the choices.** A row whose student answer is not one of the row's choices — the
output had no parseable answer (``None``) or named something else — is *excluded*, from the simulator's
training rows and from the measured rows, and counted (``n_excluded``, ``n_train_excluded``). The simulator
only scores the choices, so such an answer cannot be simulated; mapping it to a choice would invent an answer
the student never gave, and keeping it as an unmatchable label would count every condition wrong and pull the
non-leaked bin towards 0. The student's accuracy (``scott-distill evaluate``) still counts those rows as wrong.
When no training row or no measured row is left, LAS cannot be measured: the results are NaN (``n`` = 0) with a
warning, so that a long evaluation keeps its other metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Seq2SeqTrainingArguments

from ..overrides import check_switches
from .formula import EMPTY_BIN_RULES, leakage_adjusted_simulatability, simulator_correctness
from .simulator import SimulatorFormat, simulate, train_simulator

logger = logging.getLogger(__name__)

__all__ = ["LASConfig", "answer_in_choices", "simulator_las", "student_output_rows"]


@dataclass
class LASConfig(Seq2SeqTrainingArguments):
    """The simulator's training arguments plus the LAS settings (``simulator_las``, ``scott-distill las`` and a
    recipe's ``las:`` section).

    ``seed`` also seeds the explanation dropout and the bootstrap; ``per_device_eval_batch_size`` is the batch
    size when the simulator scores the choices; ``output_dir`` receives the trained simulator and
    ``simulator_predictions.jsonl`` (with ``save_simulator``).
    """

    output_dir: str | None = field(default="las_simulator", metadata={
        "help": "Simulator checkpoints; the trained simulator and simulator_predictions.jsonl are saved here."})
    learning_rate: float = field(default=1e-4, metadata={"help": "The simulator's learning rate."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Batch size when the simulator scores "
                                                                  "choices."})
    seed: int = field(default=0, metadata={"help": "Seeds the simulator's training, the explanation dropout and "
                                           "the bootstrap."})
    save_strategy: str = field(default="no", metadata={"help": "Simulator checkpoints (`epoch` with a dev set "
                                                       "keeps the best one)."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Simulator checkpoints kept."})
    logging_steps: float = field(default=10, metadata={"help": "Log the simulator's loss every N steps."})
    explanation_dropout: float = field(default=0.5, metadata={"help": "Drop e during training (0.5 for QA, as "
                                                              "Hase et al.)."})
    explanation_column: str = field(default="explanation", metadata={"help": "Column with the student's "
                                                                     "rationale."})
    label_column: str = field(default="prediction", metadata={"help": "Column with the student's answer."})
    bootstrap: int = field(default=10000, metadata={"help": "Bootstrap resamples for the interval (0: none)."})
    empty_bin: str = field(default="other", metadata={
        "help": f"One of {EMPTY_BIN_RULES}: 'other' = an empty leaked/non-leaked bin is left out; 'nan' = the "
                "authors' compute_sim.py (NaN, and a NaN interval when a resample has an empty bin)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Train the simulator on the first N "
                                                               "training rows only."})
    save_simulator: bool = field(default=True, metadata={"help": "Save the trained simulator and its predictions "
                                                         "to output_dir."})

    def training_rows(self, rows: datasets.Dataset) -> datasets.Dataset:
        """The rows the simulator trains on: the first ``max_train_rows`` (all by default)."""
        return rows.select(range(min(self.max_train_rows, len(rows)))) if self.max_train_rows else rows

    def __post_init__(self) -> None:
        check_switches(self)  # before TrainingArguments reads a quoted "false" as on
        super().__post_init__()
        if not 0 <= self.explanation_dropout <= 1:
            raise ValueError(f"`explanation_dropout` must be in [0, 1], got {self.explanation_dropout!r}.")
        if self.empty_bin not in EMPTY_BIN_RULES:
            raise ValueError(f"`empty_bin` must be one of {EMPTY_BIN_RULES}, got {self.empty_bin!r}.")
        if self.bootstrap < 0:
            raise ValueError(f"`bootstrap` must be >= 0, got {self.bootstrap!r}.")


def student_output_rows(dataset: datasets.Dataset, predictions: Sequence[dict[str, Any]]) -> datasets.Dataset:
    """The rows LAS measures: ``dataset``'s columns plus ``explanation`` (the student's rationale) and
    ``prediction`` (its answer, ``None`` when unparseable), from ``scott_distill.evaluation.predict``.

    ``scott-distill evaluate --predictions_output`` writes exactly these rows.
    """
    if len(predictions) != len(dataset):
        raise ValueError(f"`predictions` has {len(predictions)} rows but `dataset` has {len(dataset)}.")
    rows = dataset.remove_columns([c for c in ("explanation", "prediction") if c in dataset.column_names])
    rows = rows.add_column("explanation", [p["rationale"] for p in predictions])
    return rows.add_column("prediction", [p["answer"] for p in predictions])


def answer_in_choices(label: Any, choices: Sequence[str]) -> bool:
    """Whether a student's answer can be simulated: it is one of the choices (``None``: no answer)."""
    return label is not None and str(label) in choices


def _usable(rows: datasets.Dataset, label_column: str, explanation_column: str, name: str) -> tuple[
        datasets.Dataset, int, list[int]]:
    """The rows whose student answer is among the choices, how many were excluded, and the kept rows' indices."""
    missing = [c for c in ("question", "choices", explanation_column, label_column) if c not in rows.column_names]
    if missing:
        raise ValueError(f"`{name}` lacks columns {missing}; it has {rows.column_names}.")
    keep = [i for i, (y, cs) in enumerate(zip(rows[label_column], rows["choices"])) if answer_in_choices(y, cs)]
    excluded = len(rows) - len(keep)
    if excluded:
        logger.warning("LAS %s: %d of %d rows excluded, their student answer is not one of the choices.",
                       name, excluded, len(rows))
    return (rows.select(keep) if excluded else rows), excluded, keep


def _not_measurable(bootstrap: int) -> dict[str, Any]:
    """The results' keys, NaN: there is no row LAS could be measured on."""
    nan = math.nan
    out: dict[str, Any] = {"las": nan, "leaked_diff": nan, "nonleaked_diff": nan, "n_leaked": 0, "n_nonleaked": 0,
                           "acc_xe": nan, "acc_x": nan, "acc_e": nan, "las_k_bins": nan}
    if bootstrap:
        out.update(las_ci_low=nan, las_ci_high=nan, las_ci_half_width=nan, las_bootstrap_mean=nan, las_std=nan,
                   bootstrap_resamples_with_empty_bin=0)
    return out


def simulator_las(
    simulator: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: datasets.Dataset,
    measured_rows: datasets.Dataset,
    args: LASConfig,
    dev_rows: datasets.Dataset | None = None,
    fmt: SimulatorFormat | None = None,
) -> dict[str, Any]:
    """Train ``simulator`` on a student's outputs for ``train_rows`` and measure LAS on ``measured_rows``.

    Args:
        simulator: a seq2seq model (or a ``*ForMultipleChoice`` classifier) to fine-tune.
        tokenizer: the simulator's tokenizer.
        train_rows: `student_output_rows`-style rows: ``question``, ``choices``, ``args.explanation_column``
            (the student's rationale) and ``args.label_column`` (the student's answer). Rows whose answer is not
            among the choices are excluded (see the module docstring).
        measured_rows: rows of the same shape on which LAS is measured.
        dev_rows: optional rows of the same shape for model selection.
        args: the simulator's training and the LAS settings (`LASConfig`). With ``dev_rows`` and
            ``load_best_model_at_end`` the best dev-loss checkpoint is kept.
        fmt: the simulator's input/target format.

    Returns:
        `leakage_adjusted_simulatability`'s results (with ``las_k_bins``) plus ``n`` (measured rows used),
        ``n_excluded``, ``n_train_excluded`` and ``cells``: ``{index in measured_rows: [leaked, xe_correct,
        x_correct]}`` (0/1) for every measured row used, the per-question outcomes of results schema 1
        (docs/report.md); NaN values (``n`` = 0, no cells) when no usable training or measured row is left.
    """
    if not isinstance(args, LASConfig):
        raise ValueError(f"`args` must be a LASConfig, got {type(args).__name__}.")
    fmt = fmt or SimulatorFormat()
    columns = (args.label_column, args.explanation_column)
    train, n_train_excluded, _ = _usable(args.training_rows(train_rows), *columns, "train_rows")
    measured, n_excluded, measured_index = _usable(measured_rows, *columns, "measured_rows")
    dev = _usable(dev_rows, *columns, "dev_rows")[0] if dev_rows is not None else None
    if len(train) == 0 or len(measured) == 0:
        logger.warning("LAS cannot be measured: no %s row has a student answer among its choices; reporting NaN.",
                       "training" if len(train) == 0 else "measured")
        return {**_not_measurable(args.bootstrap), "n": 0, "n_excluded": n_excluded, "cells": {},
                "n_train_excluded": n_train_excluded}
    if dev is not None and len(dev) == 0:
        dev = None
    model = train_simulator(simulator, tokenizer, train, dev, args, args.explanation_dropout, fmt,
                            label_column=args.label_column, explanation_column=args.explanation_column)
    preds = simulate(model, tokenizer, measured, fmt, explanation_column=args.explanation_column,
                     label_column=args.label_column, batch_size=args.per_device_eval_batch_size)
    labels = [str(v) for v in measured[args.label_column]]
    results: dict[str, Any] = leakage_adjusted_simulatability(
        preds["xe"], preds["x"], preds["e"], labels, bootstrap=args.bootstrap, seed=args.seed,
        e_probabilities=preds["e_label_probability"], empty_bin=args.empty_bin,
    )
    xe_correct, x_correct, leaked = simulator_correctness(preds["xe"], preds["x"], preds["e"], labels)
    # per measured row (its index in measured_rows): the cell the two-stage bootstrap of `scott-distill report`
    # resamples; rows excluded above have none
    cells = {i: [int(v) for v in cell] for i, cell in zip(measured_index, zip(leaked, xe_correct, x_correct))}
    results.update(n=len(measured), n_excluded=n_excluded, n_train_excluded=n_train_excluded, cells=cells)
    if args.save_simulator and args.output_dir is not None:
        out = Path(args.output_dir)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        datasets.Dataset.from_dict({
            "xe": preds["xe"], "x": preds["x"], "e": preds["e"], args.label_column: labels,
            "e_label_probability": preds["e_label_probability"],
        }).to_json(out / "simulator_predictions.jsonl")
    return results
