"""An independent judge of rationales: a simulator trained on *human* explanations to pick the gold answer from the
explanation alone.

Lexical measures (does a rationale name the gold answer?) miss a rationale that supports an answer without naming
it, and credit one that names it while arguing for another. The judge asks instead: given only this rationale and
the choices, which answer does it point to? It is the LAS simulator (`scott_distill.las.simulator`, MiniLM-L6 with
a multiple-choice head by default) trained by the same `train_simulator`, in the rationale-only ("e") view: the
question is blanked, the choices stay (the judge has to pick among them). Rationale alone, as issue #11 asks: with
the question the judge would learn to answer CoS-E from the question itself and credit any rationale with its own
question-answering; without it, a pick of the gold answer can only come from the rationale (or from a prior over
the choices, which the empty-rationale floor measures).

It is trained on human explanations of one set of questions (CoS-E train) with settings fixed in advance, and it
never sees the rationales it judges: `RationaleJudge.pick` refuses rows whose question id was among its training
questions. Its own calibration is its accuracy on held-out human explanations (``calibration`` in ``judge.json``).

A trained judge is a folder (`RationaleJudge.save_pretrained`): the model, its tokenizer and ``judge.json`` (the
settings and a fingerprint of the training data, the training question ids, the calibration). `fit_or_load_judge`
trains once and loads the folder afterwards; a folder trained on other data or settings is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Seq2SeqTrainingArguments

from ..checkpoints import to_inference_device
from ..files import write_json
from ..fingerprints import content_hash
from ..overrides import check_switches
from .simulator import SimulatorFormat, load_simulator, predict_choices, train_simulator

logger = logging.getLogger(__name__)

__all__ = ["JUDGE_CONDITION", "JudgeConfig", "RationaleJudge", "fit_judge", "fit_or_load_judge", "judge_rows"]

JUDGE_CONDITION = "e"  # the simulator's rationale-only view: question blanked, choices and explanation kept
JUDGE_FILE = "judge.json"
# the JudgeConfig fields that decide the judge's weights (recorded, and compared when a folder is reused)
_SETTINGS = ("simulator", "learning_rate", "num_train_epochs", "per_device_train_batch_size", "seed", "weight_decay",
             "warmup_steps", "lr_scheduler_type", "max_steps", "max_length", "max_train_rows")


@dataclass
class JudgeConfig(Seq2SeqTrainingArguments):
    """The judge's training arguments (``Trainer``'s) and the judge's own settings; defaults fixed before any
    rationale was judged (MiniLM-L6's fine-tuning defaults of this project's simulator tests, 2 epochs).

    ``output_dir`` is the judge's folder: the trained judge is saved there and reused (`fit_or_load_judge`).
    """

    output_dir: str | None = field(default="rationale_judge", metadata={
        "help": "The judge's folder: trained once, saved here, loaded afterwards."})
    simulator: str = field(default="minilm-l6-v2", metadata={
        "help": "The model the judge is trained from (anything `load_simulator` accepts; default: the bundled "
                "MiniLM-L6 encoder with a multiple-choice head)."})
    learning_rate: float = field(default=5e-5, metadata={"help": "The judge's learning rate."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over the human explanations."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch (questions)."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch when the judge scores choices."})
    seed: int = field(default=0, metadata={"help": "Seeds the judge's head initialisation and data order."})
    save_strategy: str = field(default="no", metadata={"help": "Trainer checkpoints (none: the judge is saved at "
                                                       "the end)."})
    logging_steps: float = field(default=50, metadata={"help": "Log the judge's loss every N steps."})
    max_length: int = field(default=256, metadata={"help": "Tokens per (rationale, choice) input."})
    max_train_rows: int | None = field(default=None, metadata={
        "help": "Train on the first N rows that have an explanation (all by default; a budget knob, fixed before "
                "judging)."})
    explanation_column: str = field(default="rationale", metadata={"help": "Column with the explanation."})
    answer_column: str = field(default="answer", metadata={"help": "Column with the gold answer (a choice)."})

    def __post_init__(self) -> None:
        check_switches(self)  # before TrainingArguments reads a quoted "false" as on
        super().__post_init__()
        if self.max_length < 8:
            raise ValueError(f"`max_length` must be >= 8 tokens, got {self.max_length!r}.")
        if self.max_train_rows is not None and self.max_train_rows < 1:
            raise ValueError(f"`max_train_rows` must be >= 1 or None, got {self.max_train_rows!r}.")

    def judge_settings(self) -> dict[str, Any]:
        """The settings that decide the judge's weights."""
        return {name: getattr(self, name) for name in _SETTINGS}


def _explained_rows(rows: datasets.Dataset, explanation_column: str, answer_column: str, name: str) -> tuple[
        datasets.Dataset, int]:
    """The rows that have an explanation (non-empty) and whose answer is one of their choices; how many were left
    out for lacking an explanation. An answer outside the choices is an error (the data is broken)."""
    missing = [c for c in ("id", "question", "choices", explanation_column, answer_column) if c not in rows.column_names]
    if missing:
        raise ValueError(f"`{name}` lacks columns {missing}; it has {rows.column_names}.")
    for i, (answer, choices) in enumerate(zip(rows[answer_column], rows["choices"])):
        if answer not in choices:
            raise ValueError(f"`{name}` row {i}: the answer {answer!r} is not one of its choices {choices}.")
    keep = [i for i, e in enumerate(rows[explanation_column]) if e is not None and str(e).strip()]
    return (rows.select(keep) if len(keep) < len(rows) else rows), len(rows) - len(keep)


def _training_rows(human_rows: datasets.Dataset, config: JudgeConfig) -> tuple[datasets.Dataset, int]:
    """The rows the judge trains on: those with an explanation, the first ``config.max_train_rows`` of them; and how
    many rows lacked an explanation."""
    rows, n_without = _explained_rows(human_rows, config.explanation_column, config.answer_column, "human_rows")
    if config.max_train_rows is not None and len(rows) > config.max_train_rows:
        rows = rows.select(range(config.max_train_rows))
    return rows, n_without


def _training_fingerprint(rows: datasets.Dataset, config: JudgeConfig) -> str:
    return content_hash(rows["id"], rows["question"], rows["choices"], rows[config.explanation_column],
                        rows[config.answer_column], [json.dumps(config.judge_settings(), sort_keys=True)])


class RationaleJudge:
    """A trained judge: picks, from a rationale alone, the choice it points to.

    Args:
        model: the trained simulator (``*ForMultipleChoice`` or seq2seq).
        tokenizer: its tokenizer.
        trained_on: ids of the questions whose human explanations it was trained on; `pick` refuses them.
        record: what ``judge.json`` holds (settings, fingerprint, calibration).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, trained_on: Sequence[str],
                 record: dict[str, Any] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.trained_on = frozenset(str(i) for i in trained_on)
        self.record: dict[str, Any] = dict(record or {})
        self.fmt = SimulatorFormat()

    def pick(self, rows: datasets.Dataset, explanation_column: str = "rationale", batch_size: int = 64) -> list[str]:
        """The choice the judge picks for each row from ``explanation_column`` and the choices alone.

        ``rows`` need ``id``, ``question`` (blanked, never shown to the judge), ``choices`` and
        ``explanation_column`` (``None`` or empty: the judge sees the choices only). A row whose ``id`` is among the
        judge's training questions is refused (``ValueError``): the judge has seen a human explanation of it.
        """
        missing = [c for c in ("id", "question", "choices", explanation_column) if c not in rows.column_names]
        if missing:
            raise ValueError(f"`rows` lacks columns {missing}; it has {rows.column_names} (the judge needs `id` to "
                             "check that it was not trained on these questions).")
        seen = sorted({str(i) for i in rows["id"]} & self.trained_on)
        if seen:
            raise ValueError(f"`rows` holds {len(seen)} question(s) the judge was trained on (e.g. {seen[:3]}); judge "
                             "only questions outside its training data.")
        # no `map`: it would write cache files next to a dataset loaded from disk (a run's output folder)
        texts = [e or "" for e in rows[explanation_column]]
        rows = rows.remove_columns(explanation_column).add_column(explanation_column, texts)
        picks, _ = predict_choices(self.model, self.tokenizer, rows, JUDGE_CONDITION, self.fmt, explanation_column,
                                   batch_size)
        return picks

    def picks_answer(self, rows: datasets.Dataset, explanation_column: str = "rationale",
                     answer_column: str = "answer", batch_size: int = 64) -> list[bool]:
        """Per row: whether the judge picks ``answer_column`` (the gold answer) from ``explanation_column``."""
        if answer_column not in rows.column_names:
            raise ValueError(f"`rows` lacks the `answer_column` {answer_column!r}; it has {rows.column_names}.")
        picks = self.pick(rows, explanation_column, batch_size)
        return [p == str(a) for p, a in zip(picks, rows[answer_column])]

    def save_pretrained(self, folder: str | Path) -> None:
        """The model, its tokenizer and ``judge.json`` (written last: a folder without it holds no finished judge)."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / "trained_on_ids.json").write_text(json.dumps(sorted(self.trained_on)))
        write_json(self.record, folder / JUDGE_FILE)  # atomic: a crash never leaves half a marker

    @staticmethod
    def record_of(folder: str | Path) -> dict[str, Any]:
        """The ``judge.json`` of a saved judge (settings, fingerprint, calibration), without loading the model."""
        path = Path(folder) / JUDGE_FILE
        if not path.is_file():
            raise ValueError(f"`folder` {str(folder)!r} holds no finished judge (no {JUDGE_FILE}).")
        return json.loads(path.read_text())

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | None = None) -> RationaleJudge:
        """A judge saved by `save_pretrained`, in eval mode, on ``device`` when given, else on this process's GPU if
        there is one (`to_inference_device`; a judge just trained is where ``Trainer`` put it)."""
        record = cls.record_of(folder)
        model, tokenizer = load_simulator(str(folder))
        model = to_inference_device(model.eval(), device)
        trained_on = json.loads((Path(folder) / "trained_on_ids.json").read_text())
        return cls(model, tokenizer, trained_on, record)


def judge_rows(judge: RationaleJudge, rows: datasets.Dataset, explanation_column: str = "rationale",
               answer_column: str = "answer", batch_size: int = 64) -> dict[str, Any]:
    """The judge's accuracy on ``rows``: the share whose ``answer_column`` it picks from ``explanation_column``,
    with ``n`` and the per-row outcomes (``correct``)."""
    correct = judge.picks_answer(rows, explanation_column, answer_column, batch_size)
    return {"accuracy": sum(correct) / len(correct) if correct else float("nan"), "n": len(correct),
            "correct": correct}


def fit_judge(human_rows: datasets.Dataset, config: JudgeConfig, dev_rows: datasets.Dataset | None = None,
              save: bool = True) -> RationaleJudge:
    """Train a judge on human explanations and save it to ``config.output_dir``.

    Args:
        human_rows: the normalised schema (``id``, ``question``, ``choices``, ``answer``) with human explanations
            in ``config.explanation_column`` (``load_task("cose", "train.csv")``: ``rationale``). Rows without an
            explanation are left out (counted in ``judge.json``).
        config: the judge's training arguments and settings (`JudgeConfig`).
        dev_rows: held-out rows of the same shape: the judge's calibration (its accuracy on their human
            explanations) is measured there and recorded; never used to choose anything.
        save: save the judge to ``config.output_dir``.
    """
    if not isinstance(config, JudgeConfig):
        raise ValueError(f"`config` must be a JudgeConfig, got {type(config).__name__}.")
    train, n_without = _training_rows(human_rows, config)
    if len(train) == 0:
        raise ValueError("`human_rows` holds no row with an explanation to train the judge on.")
    if n_without:
        logger.warning("judge: %d of %d training rows have no human explanation and are left out.", n_without,
                       len(human_rows))
    model, tokenizer = load_simulator(config.simulator, seed=config.seed)  # a new head: its weights from the seed
    logger.info("judge: training %s on %d human explanations (rationale-only view).", config.simulator, len(train))
    model = train_simulator(model, tokenizer, train, None, config, explanation_dropout=0.0,
                            label_column=config.answer_column, explanation_column=config.explanation_column,
                            max_source_length=config.max_length, condition=JUDGE_CONDITION)
    record: dict[str, Any] = {"settings": config.judge_settings(), "fingerprint": _training_fingerprint(train, config),
                              "n_train": len(train), "n_train_without_explanation": n_without,
                              "view": JUDGE_CONDITION}
    judge = RationaleJudge(model, tokenizer, train["id"], record)
    if dev_rows is not None:
        dev, n_dev_without = _explained_rows(dev_rows, config.explanation_column, config.answer_column, "dev_rows")
        result = judge_rows(judge, dev, config.explanation_column, config.answer_column,
                            config.per_device_eval_batch_size)
        judge.record["calibration"] = {"accuracy": result["accuracy"], "n": result["n"],
                                       "n_without_explanation": n_dev_without,
                                       "data_fingerprint": content_hash(dev["id"])}
        logger.info("judge: accuracy on %d held-out human explanations %.3f", result["n"], result["accuracy"])
    if save:
        if config.output_dir is None:
            raise ValueError("`config.output_dir` must name the judge's folder to save it (got None).")
        judge.save_pretrained(config.output_dir)
    return judge


def fit_or_load_judge(human_rows: datasets.Dataset, config: JudgeConfig,
                      dev_rows: datasets.Dataset | None = None) -> RationaleJudge:
    """The judge in ``config.output_dir`` when it was trained on exactly ``human_rows`` with ``config``'s settings;
    otherwise (no finished judge there) `fit_judge`. A finished judge trained on other data or settings is refused
    (``ValueError``), never overwritten: choose another ``output_dir``."""
    if config.output_dir is None:
        raise ValueError("`config.output_dir` must name the judge's folder (got None).")
    folder = Path(config.output_dir)
    if (folder / JUDGE_FILE).is_file():
        train, _ = _training_rows(human_rows, config)
        record = json.loads((folder / JUDGE_FILE).read_text())
        expected = _training_fingerprint(train, config)
        if record.get("fingerprint") != expected:
            raise ValueError(f"`output_dir` {str(folder)!r} holds a judge trained on other data or settings "
                             f"(fingerprint {record.get('fingerprint')} != {expected}; settings there: "
                             f"{record.get('settings')}); choose another folder.")
        logger.info("judge: loading the trained judge from %s", folder)
        return RationaleJudge.from_pretrained(folder)
    return fit_judge(human_rows, config, dev_rows)
