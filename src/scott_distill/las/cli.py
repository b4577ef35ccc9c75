"""``scott-distill las``: train a simulator on a student's explanations and report LAS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainingArguments
from trl import TrlParser

from ..io import load_table, write_json
from .formula import EMPTY_BIN_RULES
from .pipeline import simulator_las

logger = logging.getLogger(__name__)


@dataclass
class LASArguments:
    student_predictions: str = field(
        metadata={"help": "File (json/jsonl/csv/parquet) or dataset id with the student's outputs to measure: "
                  "columns question, choices, <explanation-column>, <label-column>. Rows whose answer is not one "
                  "of the choices (unparseable) are excluded and counted (n_excluded)."}
    )
    train: str = field(metadata={"help": "Student outputs on a training split, to train the simulator."})
    simulator: str = field(metadata={"help": "Seq2seq model id or local folder to fine-tune as the simulator."})
    eval: str | None = field(default=None, metadata={"help": "Student outputs on a dev split (simulator selection)."})
    output: str = field(default="las_results.json", metadata={"help": "Where to write the JSON results."})
    simulator_output_dir: str = field(default="las_simulator", metadata={
        "help": "Simulator checkpoints; the trained simulator and simulator_predictions.jsonl are saved here."})
    explanation_column: str = field(default="explanation")
    label_column: str = field(default="prediction", metadata={"help": "Column with the student's answer."})
    explanation_dropout: float = field(default=0.5, metadata={"help": "Drop e during training (0.5 for QA)."})
    epochs: float = field(default=3.0)
    learning_rate: float = field(default=1e-4)
    batch_size: int = field(default=8)
    eval_batch_size: int = field(default=32, metadata={"help": "Batch size when the simulator scores choices."})
    bootstrap: int = field(default=10000, metadata={"help": "Bootstrap resamples for the interval (0: none)."})
    empty_bin: str = field(default="other", metadata={
        "help": f"One of {EMPTY_BIN_RULES}: 'other' = an empty leaked/non-leaked bin is left out; 'nan' = the "
                "authors' compute_sim.py (NaN, and a NaN interval when a resample has an empty bin)."})
    seed: int = field(default=0)
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})


def format_table(results: dict) -> str:
    rows = [("LAS", "las"), ("  CI low", "las_ci_low"), ("  CI high", "las_ci_high"),
            ("  +/- (half CI)", "las_ci_half_width"), ("  bootstrap mean", "las_bootstrap_mean"),
            ("leaked diff", "leaked_diff"), ("non-leaked diff", "nonleaked_diff"),
            ("n leaked", "n_leaked"), ("n non-leaked", "n_nonleaked"), ("n excluded", "n_excluded"),
            ("acc(x,e)", "acc_xe"), ("acc(x)", "acc_x"), ("acc(e)", "acc_e"), ("LAS k-bins", "las_k_bins")]
    lines = [f"{'metric':<18}{'value':>10}", "-" * 28]
    for label, key in rows:
        if key in results:
            v = results[key]
            lines.append(f"{label:<18}{v:>10d}" if isinstance(v, int) else f"{label:<18}{v:>10.4f}")
    return "\n".join(lines)


def run(args: LASArguments) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(args.simulator)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.simulator)
    train = load_table(args.train)
    if args.max_train_rows:
        train = train.select(range(min(args.max_train_rows, len(train))))
    dev = load_table(args.eval) if args.eval else None
    measured = load_table(args.student_predictions)
    targs = Seq2SeqTrainingArguments(
        output_dir=args.simulator_output_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        eval_strategy="epoch" if dev is not None else "no", save_strategy="epoch" if dev is not None else "no",
        load_best_model_at_end=dev is not None, metric_for_best_model="eval_loss" if dev is not None else None,
        save_total_limit=1, seed=args.seed, report_to=[], logging_steps=10,
    )
    results = simulator_las(model, tokenizer, train, measured, targs, dev_rows=dev,
                            explanation_dropout=args.explanation_dropout, explanation_column=args.explanation_column,
                            label_column=args.label_column, bootstrap=args.bootstrap, empty_bin=args.empty_bin,
                            output_dir=args.simulator_output_dir)
    write_json(results, args.output)
    print(format_table(results))  # the CLI's result table goes to stdout
    logger.info("wrote %s", args.output)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = TrlParser(LASArguments, prog="scott-distill las",
                       description="Train a LAS simulator on a student's explanations and report LAS with a "
                       "bootstrap interval. Accepts --config file.yaml.")
    (args,) = parser.parse_args_and_config(argv)
    run(args)
    return 0
