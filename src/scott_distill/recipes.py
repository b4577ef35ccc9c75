"""``scott-distill run RECIPE.yaml``: rationalize -> train -> evaluate -> push, each stage cached on disk."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from trl import TrlParser

from .collator import StudentFormat
from .evaluation import evaluate_student, predict
from .io import write_json
from .rationalize_cli import load_teacher
from .student_io import load_student, read_student_format
from .tasks import TASKS, load_task
from .trainer import CounterfactualTrainer, CounterfactualTrainingArguments

logger = logging.getLogger(__name__)

STAGES = ("rationalize", "train", "evaluate", "push")


@dataclass
class RecipeArguments:
    task: str = field(metadata={"help": f"One of {sorted(TASKS)}."})
    output_dir: str = field(default="scott_runs/run", metadata={"help": "Every stage's output goes here."})
    stage: str = field(default="all", metadata={"help": f"One of {STAGES} or 'all' (push only with --push_to_hub)."})
    push_to_hub: bool = field(default=False, metadata={"help": "With --stage all, also push at the end."})
    data: str | None = field(default=None, metadata={"help": "Local file/folder or Hub id (default: the task's)."})
    train_split: str = field(default="train")
    eval_split: str = field(default="validation")
    eval_data: str | None = field(default=None, metadata={"help": "Separate file for the eval split, if any."})
    max_train_rows: int | None = field(default=None)
    max_eval_rows: int | None = field(default=None)
    seed: int = field(default=0)
    # teacher
    teacher: str = field(default="Qwen/Qwen2.5-7B-Instruct", metadata={"help": "Teacher model id or folder."})
    teacher_dtype: str = field(default="auto")
    perturbation: str = field(default="wrong")
    decoding_alpha: float = field(default=0.5)
    rationale_batch_size: int = field(default=16)
    max_new_tokens: int = field(default=128)
    use_chat_template: bool = field(default=False)
    # student
    student: str = field(default="google/flan-t5-large", metadata={"help": "Student model id or folder."})
    counterfactual_alpha: float = field(default=0.5)
    epochs: float = field(default=10.0)
    learning_rate: float = field(default=3e-4)
    batch_size: int = field(default=16)
    gradient_accumulation_steps: int = field(default=1)
    bf16: bool = field(default=False)
    # evaluation
    simulator: str = field(default="t5-base", metadata={"help": "Seq2seq model for the LAS simulator."})
    simulator_epochs: float = field(default=3.0)
    simulator_train_rows: int | None = field(default=None, metadata={"help": "Student train outputs used."})
    bootstrap: int = field(default=10000)
    eval_max_new_tokens: int = field(default=128)
    # hub
    student_repo: str | None = field(default=None)
    dataset_repo: str | None = field(default=None)
    private: bool = field(default=False)
    revision: str | None = field(default=None)


class Recipe:
    def __init__(self, args: RecipeArguments) -> None:
        if args.stage not in (*STAGES, "all"):
            raise ValueError(f"--stage must be one of {STAGES} or 'all', got {args.stage!r}.")
        self.args = args
        self.out = Path(args.output_dir)
        self._rationales: dict[str, datasets.Dataset] | None = None  # train/evaluate/push all read them

    # -- paths ------------------------------------------------------------------------------------
    def rationale_dir(self, split: str) -> Path:
        return self.out / "rationales" / split

    @property
    def student_dir(self) -> Path:
        return self.out / "student"

    @property
    def metrics_path(self) -> Path:
        return self.out / "eval" / "metrics.json"

    # -- stages -----------------------------------------------------------------------------------
    def _split(self, which: str) -> datasets.Dataset:
        a = self.args
        data, split, limit = ((a.data, a.train_split, a.max_train_rows) if which == "train"
                              else (a.eval_data or a.data, a.eval_split, a.max_eval_rows))
        rows = load_task(a.task, data, split=split)
        return rows.select(range(min(limit, len(rows)))) if limit else rows

    def rationalize(self) -> dict[str, datasets.Dataset]:
        if self._rationales is None:
            self._rationales = self._load_or_generate_rationales()
        return self._rationales

    def _load_or_generate_rationales(self) -> dict[str, datasets.Dataset]:
        from .rationalize import generate_rationales

        a = self.args
        done = {s: self.rationale_dir(s) / "dataset" / "dataset_info.json" for s in ("train", "eval")}
        if all(p.exists() for p in done.values()):
            logger.info("rationalize: cached in %s", self.out / "rationales")
            return {s: datasets.load_from_disk(str(p.parent)) for s, p in done.items()}
        model, tok = load_teacher(a.teacher, a.teacher_dtype)
        return {
            s: generate_rationales(
                self._split(s), model, tok, task=a.task, perturbation=a.perturbation, alpha=a.decoding_alpha,
                counterfactual=True, batch_size=a.rationale_batch_size, max_new_tokens=a.max_new_tokens,
                output_dir=self.rationale_dir(s), use_chat_template=a.use_chat_template, seed=a.seed,
            )
            for s in ("train", "eval")
        }

    def train(self) -> Path:
        a = self.args
        if (self.student_dir / "scott_config.json").exists():
            logger.info("train: cached student in %s", self.student_dir)
            return self.student_dir
        train = self.rationalize()["train"]
        model, tok = load_student(a.student)
        targs = CounterfactualTrainingArguments(
            output_dir=str(self.out / "checkpoints"), counterfactual_alpha=a.counterfactual_alpha,
            num_train_epochs=a.epochs, learning_rate=a.learning_rate, per_device_train_batch_size=a.batch_size,
            gradient_accumulation_steps=a.gradient_accumulation_steps, bf16=a.bf16, seed=a.seed,
            save_strategy="epoch", save_total_limit=1, report_to=[], logging_steps=10,
        )
        trainer = CounterfactualTrainer(model=model, args=targs, train_dataset=train, processing_class=tok)
        last = _last_checkpoint(targs.output_dir)
        trainer.train(resume_from_checkpoint=last)
        from .hub import save_student

        save_student(trainer.model, tok, StudentFormat(), self.student_dir)
        return self.student_dir

    def evaluate(self) -> dict[str, float]:
        a = self.args
        if self.metrics_path.exists():
            logger.info("evaluate: cached metrics in %s", self.metrics_path)
            return json.loads(self.metrics_path.read_text())
        rationales = self.rationalize()
        model, tok = load_student(str(self.train()))
        fmt = read_student_format(self.student_dir)
        eval_rows = rationales["eval"]
        metrics = evaluate_student(model, tok, eval_rows, fmt, max_new_tokens=a.eval_max_new_tokens, seed=a.seed)
        metrics.update(self._las(model, tok, fmt, rationales))
        write_json(metrics, self.metrics_path)
        return metrics

    def _las(self, model, tok, fmt, rationales) -> dict[str, float]:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainingArguments

        from .las.pipeline import simulator_las, student_output_rows

        a = self.args
        train_rows = rationales["train"]
        if a.simulator_train_rows:
            train_rows = train_rows.select(range(min(a.simulator_train_rows, len(train_rows))))
        outputs = [student_output_rows(rows, predict(model, tok, rows, fmt, max_new_tokens=a.eval_max_new_tokens,
                                                     show_progress=False))
                   for rows in (train_rows, rationales["eval"])]
        args = Seq2SeqTrainingArguments(output_dir=str(self.out / "simulator"), num_train_epochs=a.simulator_epochs,
                                        per_device_eval_batch_size=32, report_to=[], save_strategy="no", seed=a.seed)
        las = simulator_las(AutoModelForSeq2SeqLM.from_pretrained(a.simulator), AutoTokenizer.from_pretrained(a.simulator),
                            outputs[0], outputs[1], args, bootstrap=a.bootstrap, output_dir=self.out / "simulator")
        keys = ("las", "las_ci_low", "las_ci_high", "las_ci_half_width", "n_leaked", "n_nonleaked", "n_excluded")
        return {k: las[k] for k in keys if k in las}

    def push(self) -> dict[str, str]:
        from .hub import push_rationale_dataset, push_student, render_student_card

        a = self.args
        if not a.student_repo or not a.dataset_repo:
            raise ValueError("push needs `student_repo` and `dataset_repo` in the recipe (or as flags).")
        metrics = self.evaluate()
        rationales = self.rationalize()
        settings_path = self.rationale_dir("train") / "run_config.json"
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        dataset_url = push_rationale_dataset(rationales["train"], a.dataset_repo, self.out / "hub" / "dataset",
                                             settings, private=a.private, revision=a.revision)
        model, tok = load_student(str(self.student_dir))
        fmt = read_student_format(self.student_dir)
        # a metric that could not be measured (NaN LAS: no student answer among the choices) is left off the card
        measured = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        card = render_student_card(a.student_repo, fmt, measured, task=a.task, dataset_id=a.dataset_repo,
                                   base_model=a.student, teacher=a.teacher, perturbation=a.perturbation,
                                   decoding_alpha=a.decoding_alpha, counterfactual_alpha=a.counterfactual_alpha,
                                   n_train=len(rationales["train"]))
        student_url = push_student(model, tok, a.student_repo, fmt, self.out / "hub" / "student", card,
                                   private=a.private, revision=a.revision)
        return {"dataset": dataset_url, "student": student_url}

    def run(self) -> dict:
        stage = self.args.stage
        result: dict = {}
        if stage in ("rationalize", "all"):
            result["rationales"] = {k: len(v) for k, v in self.rationalize().items()}
        if stage in ("train", "all"):
            result["student"] = str(self.train())
        if stage in ("evaluate", "all"):
            result["metrics"] = self.evaluate()
        if stage == "push" or (stage == "all" and self.args.push_to_hub):
            result["pushed"] = self.push()
        write_json({"args": asdict(self.args), **result}, self.out / "run_summary.json")
        return result


def _last_checkpoint(folder: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(folder) if Path(folder).is_dir() else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv or [])
    if argv and argv[0].endswith((".yaml", ".yml")):  # `scott-distill run recipes/csqa.yaml ...`
        argv = ["--config", argv[0], *argv[1:]]
    parser = TrlParser(RecipeArguments, prog="scott-distill run",
                       description="Run a SCOTT recipe: rationalize -> train -> evaluate (-> push). Each stage's "
                       "output is cached under output_dir, so a re-run skips finished stages. Usage: "
                       "scott-distill run recipes/csqa.yaml [--stage STAGE] [--push_to_hub] [--any_field value]")
    (args,) = parser.parse_args_and_config(argv)
    result = Recipe(args).run()
    print(json.dumps(result, indent=2, default=str))  # the run's summary goes to stdout
    return 0
