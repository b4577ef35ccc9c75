"""A SCOTT recipe: rationalize -> train -> evaluate -> push, each stage cached on disk.

A recipe is one YAML file: top-level run fields (`RecipeArguments`: task, data, output folder, model names, Hub
ids) and one section per stage whose keys are exactly that stage's config, the same dataclass the Python API
and the stage's own command take:

```yaml
task: cose
teacher: Qwen/Qwen2.5-3B-Instruct
student: google/flan-t5-base
simulator: google-t5/t5-base
rationalize: {perturbation: wrong, alpha: 0.5}          # RationalizeConfig
train: {counterfactual_alpha: 0.5, num_train_epochs: 10}  # CounterfactualTrainingArguments
evaluate: {max_new_tokens: 128}                           # EvaluationConfig
las: {num_train_epochs: 3, bootstrap: 10000}              # LASConfig
```

The recipe owns where each stage writes (``output_dir``) and which task it runs: ``rationalize.task``,
``train.output_dir`` and ``las.output_dir`` are set from the run fields. Parsing the file and the command
line (``--rationalize.alpha 0.3``) is ``scott_distill.commands.run``'s job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import datasets

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from .checkpoints import load_teacher
from .files import write_json
from .formats import RATIONALE_DATASET_DIR, RATIONALIZE_CONFIG_NAME, STUDENT_CONFIG_NAME, StudentFormat
from .las.pipeline import LASConfig, simulator_las, student_output_rows
from .las.simulator import load_simulator
from .student.evaluation import EvaluationConfig, evaluate_student, predict
from .student.model import RationaleStudent, load_student
from .student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments, resume_checkpoint
from .tasks import TASKS, load_task
from .teacher.rationalize import RationalizeConfig

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "Recipe", "RecipeArguments", "RecipeConfig"]

STAGES = ("rationalize", "train", "evaluate", "push")


@dataclass
class RecipeArguments:
    """The run fields of a recipe (its top level): what to run on, with which models, where to write and push."""

    task: str = field(metadata={"help": f"One of {sorted(TASKS)}."})
    output_dir: str = field(default="scott_runs/run", metadata={"help": "Every stage's output goes here."})
    stage: str = field(default="all", metadata={"help": f"One of {STAGES} or 'all' (push only with --push_to_hub)."})
    push_to_hub: bool = field(default=False, metadata={"help": "With --stage all, also push at the end."})
    data: str | None = field(default=None, metadata={"help": "Local file/folder or Hub id (default: the task's)."})
    train_split: str = field(default="train")
    eval_split: str = field(default="validation")
    eval_data: str | None = field(default=None, metadata={"help": "Separate file for the eval split, if any."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    teacher: str = field(default="Qwen/Qwen2.5-7B-Instruct", metadata={
        "help": "Teacher: Hub id, local folder, .gguf file or a bundled short name (smollm2-135m-instruct)."})
    teacher_dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    student: str = field(default="google/flan-t5-large", metadata={"help": "Student model to start from."})
    simulator: str = field(default="t5-base", metadata={"help": "Seq2seq model for the LAS simulator."})
    student_repo: str | None = field(default=None, metadata={"help": "Hub model repo of the student."})
    dataset_repo: str | None = field(default=None, metadata={"help": "Hub dataset repo of the rationales."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repos as private."})
    revision: str | None = field(default=None, metadata={"help": "Hub branch to push to."})

    def __post_init__(self) -> None:
        if self.stage not in (*STAGES, "all"):
            raise ValueError(f"--stage must be one of {STAGES} or 'all', got {self.stage!r}.")


# section name -> the config dataclass its keys are the fields of
SECTIONS: dict[str, type] = {
    "rationalize": RationalizeConfig,
    "train": CounterfactualTrainingArguments,
    "evaluate": EvaluationConfig,
    "las": LASConfig,
}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls(**values)`` with errors that name the recipe key."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown keys {unknown} in {where} (the fields of {cls.__name__}).")
    missing = sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"The recipe needs {missing} in {where}.")
    return cls(**values)


@dataclass
class RecipeConfig:
    """A whole recipe: the run fields and one config per stage."""

    run: RecipeArguments
    rationalize: RationalizeConfig
    train: CounterfactualTrainingArguments
    evaluate: EvaluationConfig
    las: LASConfig

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipeConfig:
        """From a recipe's YAML mapping: top-level run fields plus the sections of `SECTIONS`."""
        run_fields = {f.name for f in dataclasses.fields(RecipeArguments)}
        unknown = sorted(set(data) - run_fields - set(SECTIONS))
        if unknown:
            raise ValueError(f"Unknown recipe keys {unknown}: the top level holds the run fields "
                             f"{sorted(run_fields)} and the sections {sorted(SECTIONS)}.")
        run = _build(RecipeArguments, {k: v for k, v in data.items() if k in run_fields}, "the recipe's top level")
        out = Path(run.output_dir)
        owned = {"rationalize": {"task": run.task}, "train": {"output_dir": str(out / "checkpoints")},
                 "las": {"output_dir": str(out / "simulator")}}
        sections: dict[str, Any] = {}
        for name, config_class in SECTIONS.items():
            values = dict(data.get(name) or {})
            for key, value in owned.get(name, {}).items():
                if key in values and values[key] != value:
                    raise ValueError(f"`{name}.{key}` is set by the recipe ({value!r} from the run fields); "
                                     f"remove it from the `{name}:` section.")
                values[key] = value
            sections[name] = _build(config_class, values, f"the `{name}:` section")
        return cls(run=run, **sections)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the run fields and every section's settings."""
        return {"run": dataclasses.asdict(self.run), "rationalize": dataclasses.asdict(self.rationalize),
                "train": self.train.to_dict(), "evaluate": dataclasses.asdict(self.evaluate),
                "las": self.las.to_dict()}


class Recipe:
    """The stages of a recipe over one output folder; each stage loads its result from disk when it is there."""

    def __init__(self, config: RecipeConfig) -> None:
        self.config = config
        self.out = Path(config.run.output_dir)
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
        run = self.config.run
        data, split, limit = ((run.data, run.train_split, run.max_train_rows) if which == "train"
                              else (run.eval_data or run.data, run.eval_split, run.max_eval_rows))
        rows = load_task(run.task, data, split=split)
        return rows.select(range(min(limit, len(rows)))) if limit else rows

    def rationalize(self) -> dict[str, datasets.Dataset]:
        """Teacher rationales of the train and eval splits (``rationales/{train,eval}``)."""
        if self._rationales is None:
            self._rationales = self._load_or_generate_rationales()
        return self._rationales

    def _load_or_generate_rationales(self) -> dict[str, datasets.Dataset]:
        from .teacher.rationalize import generate_rationales

        done = {s: self.rationale_dir(s) / RATIONALE_DATASET_DIR / "dataset_info.json" for s in ("train", "eval")}
        if all(p.exists() for p in done.values()):
            logger.info("rationalize: cached in %s", self.out / "rationales")
            return {s: datasets.load_from_disk(str(p.parent)) for s, p in done.items()}
        model, tok = load_teacher(self.config.run.teacher, self.config.run.teacher_dtype)
        return {s: generate_rationales(self._split(s), model, tok, self.config.rationalize,
                                       output_dir=self.rationale_dir(s))
                for s in ("train", "eval")}

    def train(self) -> Path:
        """The student trained with counterfactual training (``student/``; checkpoints resume)."""
        if (self.student_dir / STUDENT_CONFIG_NAME).exists():
            logger.info("train: cached student in %s", self.student_dir)
            return self.student_dir
        train = self.rationalize()["train"]
        model, tok = load_student(self.config.run.student)
        trainer = CounterfactualTrainer(model=model, args=self.config.train, train_dataset=train,
                                        processing_class=tok)
        # a crash, kill or stop signal left checkpoints: the same command goes on from the newest complete one
        trainer.train(resume_from_checkpoint=resume_checkpoint(self.config.train))
        RationaleStudent(cast("PreTrainedModel", trainer.model), tok, trainer.student_format).save_pretrained(
            self.student_dir)
        return self.student_dir

    def evaluate(self) -> dict[str, float]:
        """Accuracy, faithfulness and LAS of the student on the eval split (``eval/metrics.json``)."""
        if self.metrics_path.exists():
            logger.info("evaluate: cached metrics in %s", self.metrics_path)
            return json.loads(self.metrics_path.read_text())
        rationales = self.rationalize()
        model, tok = load_student(str(self.train()))
        fmt = StudentFormat.from_pretrained(self.student_dir)
        metrics = evaluate_student(model, tok, rationales["eval"], fmt, self.config.evaluate)
        metrics.update(self._las(model, tok, fmt, rationales))
        write_json(metrics, self.metrics_path)
        return metrics

    def _las(self, model: Any, tok: Any, fmt: StudentFormat, rationales: dict[str, datasets.Dataset]) -> dict[
            str, float]:
        """LAS of the student's own outputs: the simulator trains on the train split's, measures the eval split's."""
        evaluation, las = self.config.evaluate, self.config.las
        outputs = [student_output_rows(rows, predict(model, tok, rows, fmt, evaluation.batch_size,
                                                     evaluation.max_new_tokens, show_progress=False))
                   for rows in (las.training_rows(rationales["train"]), rationales["eval"])]
        simulator, sim_tok = load_simulator(self.config.run.simulator)
        results = simulator_las(simulator, sim_tok, outputs[0], outputs[1], las)
        keys = ("las", "las_ci_low", "las_ci_high", "las_ci_half_width", "n_leaked", "n_nonleaked", "n_excluded")
        return {k: results[k] for k in keys if k in results}

    def push(self) -> dict[str, str]:
        """The rationale dataset and the student (with a model card holding the metrics) to the Hub."""
        from .hub import push_rationale_dataset, render_student_card

        run = self.config.run
        if not run.student_repo or not run.dataset_repo:
            raise ValueError("push needs `student_repo` and `dataset_repo` in the recipe (or as flags).")
        metrics = self.evaluate()
        rationales = self.rationalize()
        settings_path = self.rationale_dir("train") / RATIONALIZE_CONFIG_NAME
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        dataset_url = push_rationale_dataset(rationales["train"], run.dataset_repo, self.out / "hub" / "dataset",
                                             settings, private=run.private, revision=run.revision)
        student = RationaleStudent.from_pretrained(self.student_dir)
        # a metric that could not be measured (NaN LAS: no student answer among the choices) is left off the card
        measured = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        card = render_student_card(run.student_repo, student.format, measured, task=run.task,
                                   dataset_id=run.dataset_repo, base_model=run.student, teacher=run.teacher,
                                   perturbation=self.config.rationalize.perturbation,
                                   decoding_alpha=self.config.rationalize.alpha,
                                   counterfactual_alpha=self.config.train.counterfactual_alpha,
                                   n_train=len(rationales["train"]))
        student_url = student.push_to_hub(run.student_repo, self.out / "hub" / "student", card,
                                          private=run.private, revision=run.revision)
        return {"dataset": dataset_url, "student": student_url}

    def run(self) -> dict[str, Any]:
        """The stages ``--stage`` asks for; writes ``run_summary.json``."""
        stage = self.config.run.stage
        result: dict[str, Any] = {}
        if stage in ("rationalize", "all"):
            result["rationales"] = {k: len(v) for k, v in self.rationalize().items()}
        if stage in ("train", "all"):
            result["student"] = str(self.train())
        if stage in ("evaluate", "all"):
            result["metrics"] = self.evaluate()
        if stage == "push" or (stage == "all" and self.config.run.push_to_hub):
            result["pushed"] = self.push()
        write_json({"config": self.config.to_dict(), **result}, self.out / "run_summary.json")
        return result

