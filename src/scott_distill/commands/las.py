"""``scott-distill las``: train a simulator on a student's explanations and report LAS."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import TrlParser

from ..files import load_table, write_json
from ..las.pipeline import LASConfig, simulator_las
from ..las.simulator import load_simulator
from ._parser import command_parser

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
    eval: str | None = field(default=None, metadata={
        "help": "Student outputs on a dev split: the simulator is evaluated every epoch and the best dev-loss "
                "checkpoint kept."})
    output: str = field(default="las_results.json", metadata={"help": "Where to write the JSON results."})


def make_parser() -> TrlParser:
    return command_parser("las", (LASArguments, LASConfig),
                          "Train a LAS simulator on a student's explanations and report LAS with a "
                          "bootstrap interval. The simulator's training arguments are transformers' "
                          "(--num_train_epochs, --learning_rate, --output_dir, ...). Accepts --config file.yaml.")


def format_table(results: dict[str, Any]) -> str:
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


def run(script: LASArguments, config: LASConfig) -> dict[str, Any]:
    model, tokenizer = load_simulator(script.simulator, seed=config.seed)
    dev = load_table(script.eval) if script.eval else None
    if dev is not None and config.eval_strategy == "no":
        # a dev set is for picking the simulator: evaluate and keep the best checkpoint
        config = dataclasses.replace(config, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                                     metric_for_best_model="eval_loss")
    results = simulator_las(model, tokenizer, load_table(script.train), load_table(script.student_predictions),
                            config, dev_rows=dev)
    write_json(results, script.output)
    print(format_table(results))  # the command's result table goes to stdout
    logger.info("wrote %s", script.output)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    script, config = make_parser().parse_args_and_config(argv)
    run(script, config)
    return 0
