"""``scott-distill evaluate``: accuracy and faithfulness of a trained student."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import TrlParser

from .evaluation import evaluate_student, predict
from .io import load_table, write_json
from .las.pipeline import student_output_rows
from .student_io import load_student, read_student_format


@dataclass
class EvaluateArguments:
    model_name_or_path: str = field(metadata={"help": "Trained student (folder with scott_config.json) or Hub id."})
    data: str = field(metadata={"help": "Rows with question, choices, answer (+ rationale, counterfactual_*)."})
    output: str = field(default="student_eval.json", metadata={"help": "Where to write metrics (JSON)."})
    predictions_output: str | None = field(
        default=None, metadata={"help": "Also write per-row predictions (jsonl): input for `scott-distill las` "
                                "(`explanation` = the rationale, `prediction` = the answer, null when unparseable)."}
    )
    batch_size: int = field(default=16)
    max_new_tokens: int = field(default=128)
    perturb_fraction: float = field(default=0.5)
    seed: int = field(default=0)
    max_rows: int | None = field(default=None)


def format_table(metrics: dict) -> str:
    lines = [f"{'metric':<30}{'value':>10}", "-" * 40]
    for k, v in metrics.items():
        lines.append(f"{k:<30}{v:>10d}" if isinstance(v, int) else f"{k:<30}{v:>10.4f}")
    return "\n".join(lines)


def run(args: EvaluateArguments) -> dict:
    model, tokenizer = load_student(args.model_name_or_path)
    fmt = read_student_format(args.model_name_or_path)
    data = load_table(args.data)
    if args.max_rows:
        data = data.select(range(min(args.max_rows, len(data))))
    preds = predict(model, tokenizer, data, fmt, args.batch_size, args.max_new_tokens)
    metrics = evaluate_student(model, tokenizer, data, fmt, args.batch_size, args.max_new_tokens,
                               args.perturb_fraction, args.seed, predictions=preds)
    write_json(metrics, args.output)
    if args.predictions_output:
        student_output_rows(data, preds).to_json(args.predictions_output)
    print(format_table(metrics))  # the CLI's result table goes to stdout
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = TrlParser(EvaluateArguments, prog="scott-distill evaluate",
                       description="Accuracy, forced-gold-rationale accuracy, perturbed-rationale accuracy and "
                       "counterfactual consistency of a student. Accepts --config file.yaml.")
    (args,) = parser.parse_args_and_config(argv)
    run(args)
    return 0
