"""``scott-distill evaluate``: accuracy and faithfulness of a trained student."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import TrlParser

from ..checkpoints import resolve_checkpoint
from ..files import load_table, write_json
from ..formats import StudentFormat
from ..las.pipeline import student_output_rows
from ..student.evaluation import EvaluationConfig, evaluate_student, predict
from ..student.model import load_student_for_inference
from ._parser import command_parser


@dataclass
class EvaluateArguments:
    model_name_or_path: str = field(metadata={"help": "Trained student (folder with scott_config.json) or Hub id."})
    data: str = field(metadata={"help": "Rows with question, choices, answer (+ rationale, counterfactual_*)."})
    output: str = field(default="student_eval.json", metadata={"help": "Where to write metrics (JSON)."})
    predictions_output: str | None = field(
        default=None, metadata={"help": "Also write per-row predictions (jsonl): input for `scott-distill las` "
                                "(`explanation` = the rationale, `prediction` = the answer, null when unparseable)."}
    )
    max_rows: int | None = field(default=None, metadata={"help": "Only the first N rows."})
    device: str | None = field(default=None, metadata={
        "help": "Where the student runs: cpu, cuda, cuda:1 (default: this process's GPU if there is one, else the "
                "CPU)."})


def make_parser() -> TrlParser:
    return command_parser("evaluate", (EvaluateArguments, EvaluationConfig),
                          "Accuracy, forced-gold-rationale accuracy, perturbed-rationale accuracy and "
                          "counterfactual consistency of a student. Accepts --config file.yaml.")


def format_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'metric':<30}{'value':>10}", "-" * 40]
    for k, v in metrics.items():
        lines.append(f"{k:<30}{v:>10d}" if isinstance(v, int) else f"{k:<30}{v:>10.4f}")
    return "\n".join(lines)


def run(script: EvaluateArguments, config: EvaluationConfig) -> dict[str, Any]:
    model, tokenizer = load_student_for_inference(script.model_name_or_path, device=script.device)
    # a .gguf file or a bundled short name has its converted folder; a Hub id stays one (its scott_config.json)
    fmt = StudentFormat.from_pretrained(resolve_checkpoint(script.model_name_or_path))
    data = load_table(script.data)
    if script.max_rows:
        data = data.select(range(min(script.max_rows, len(data))))
    preds = predict(model, tokenizer, data, fmt, config.batch_size, config.max_new_tokens)
    metrics = evaluate_student(model, tokenizer, data, fmt, config, predictions=preds)
    write_json(metrics, script.output)
    if script.predictions_output:
        student_output_rows(data, preds).to_json(script.predictions_output)
    print(format_table(metrics))  # the command's result table goes to stdout
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    script, config = make_parser().parse_args_and_config(argv)
    run(script, config)
    return 0
