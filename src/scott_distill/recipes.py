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

Student seeds (``seeds: [0, 1, 2]`` or ``--seeds 0 1 2``): the teacher's rationales are generated once and
shared; each seed trains and evaluates its own student in ``output_dir/seed_<s>/`` with ``train.seed`` and
``las.seed`` set to ``s`` (``evaluate.seed``, the rationale perturbation of the faithfulness test, stays fixed:
its randomness is per question, which the report resamples anyway). Every seed writes ``results.json``
(results schema 1, per-question outcomes) and the run ends with the report over its seeds
(``report.txt``/``.png``/``.json`` in ``output_dir``). Without ``seeds`` there is one student, trained with
``train.seed``, in ``output_dir`` itself (the layout of runs made before seeds existed).
"""

from __future__ import annotations

import copy
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
from .fingerprints import dataset_fingerprint
from .formats import RATIONALE_DATASET_DIR, RATIONALIZE_CONFIG_NAME, STUDENT_CONFIG_NAME, StudentFormat
from .las.pipeline import LASConfig, simulator_las, student_output_rows
from .las.simulator import load_simulator
from .overrides import check_switches
from .report.compare import ReportConfig, report_runs
from .report.runs import RESULTS_FILE, seed_folder, write_results
from .stage_records import check_stage_record, model_name, settings_of, write_stage_record
from .student.evaluation import EvaluationConfig, outcome_means, predict, student_outcomes
from .student.model import RationaleStudent, load_student, load_student_for_inference
from .student.run_record import LENGTH_SETTINGS, OPTIMIZATION_SETTINGS, RUN_SETTINGS
from .student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments, resume_checkpoint
from .tasks import TASKS, load_task
from .teacher.prompts import load_prompt
from .teacher.rationalize import RationalizeConfig

logger = logging.getLogger(__name__)

__all__ = ["RECIPE_CONDITION", "STAGES", "Recipe", "RecipeArguments", "RecipeConfig", "StudentSeed"]

STAGES = ("rationalize", "train", "evaluate", "push")
RECIPE_CONDITION = "student"  # the one condition of a recipe's results.json; runs differ by their labels
#: the `las:` fields that decide the simulator and the LAS numbers (the rest: where to write, what to log)
LAS_SETTINGS = ("explanation_dropout", "explanation_column", "label_column", "bootstrap", "empty_bin",
                "max_train_rows", *OPTIMIZATION_SETTINGS, *LENGTH_SETTINGS)
# the rows of each split as the flags that choose them: a stage record's key, shown when a re-run's rows differ
TRAIN_ROWS = "rows of the train split (--data, --train_split, --max_train_rows)"
EVAL_ROWS = "rows of the eval split (--eval_data or --data, --eval_split, --max_eval_rows)"
ROWS = {"train": TRAIN_ROWS, "eval": EVAL_ROWS}
RATIONALIZE_SPLIT = "rationalize ({} split)"  # the rationalize stage of one split, as a refusal names it


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
    seeds: list[int] | None = field(default=None, metadata={
        "help": "Student-training seeds, e.g. --seeds 0 1 2: the teacher's rationales are shared, each seed trains "
                "and evaluates its own student in output_dir/seed_<s>/ (train.seed and las.seed = s), resumable "
                "per seed, and the run ends with a report over the seeds. Default: one student with train.seed, "
                "in output_dir itself."})

    def __post_init__(self) -> None:
        check_switches(self)  # a quoted `push_to_hub: "false"` is a truthy string
        if self.stage not in (*STAGES, "all"):
            raise ValueError(f"--stage must be one of {STAGES} or 'all', got {self.stage!r}.")
        if self.seeds is not None:
            seeds = list(self.seeds)
            if not seeds or len(set(seeds)) != len(seeds) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in seeds):
                raise ValueError(f"--seeds must be distinct integers, at least one, got {self.seeds!r}.")
            self.seeds = seeds


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


@dataclass(frozen=True)
class StudentSeed:
    """One student of a recipe: its training seed, its folder and the stage configs that depend on the seed."""

    seed: int
    folder: Path
    train: CounterfactualTrainingArguments
    las: LASConfig

    @property
    def student_dir(self) -> Path:
        return self.folder / "student"

    @property
    def metrics_path(self) -> Path:
        return self.folder / "eval" / "metrics.json"

    @property
    def results_path(self) -> Path:
        return self.folder / RESULTS_FILE


def _question_ids(rows: datasets.Dataset) -> list[str]:
    """The eval rows' question ids for results.json: the task's ``id`` column when it is there and unique (so that
    runs on the same questions pair up by question), else the row's position in the eval split."""
    if "id" in rows.column_names:
        ids = [str(i) for i in rows["id"]]
        if len(set(ids)) == len(ids):
            return ids
        logger.warning("the eval split's `id` column repeats ids: results.json names questions by row position.")
    return [f"eval-{i}" for i in range(len(rows))]


class Recipe:
    """The stages of a recipe over one output folder; each stage loads its result from disk when it is there.

    The rationales are shared by every student seed; ``train`` and ``evaluate`` take a seed (default: the first
    of the recipe's seeds) and write to that seed's folder (`StudentSeed`).
    """

    def __init__(self, config: RecipeConfig) -> None:
        self.config = config
        self.out = Path(config.run.output_dir)
        self._rationales: dict[str, datasets.Dataset] | None = None  # train/evaluate/push all read them
        self._teacher_record: dict[str, Any] | None = None  # the records' parts that read the data or a prompt
        self._rows: dict[str, str | None] = {}
        self._splits: dict[str, datasets.Dataset] = {}  # a split's rows, read once for its record and its teacher
        self.students = {s.seed: s for s in self._student_seeds()}

    def _student_seeds(self) -> list[StudentSeed]:
        config = self.config
        if config.run.seeds is None:  # one student in output_dir itself: the layout before seeds existed
            return [StudentSeed(config.train.seed, self.out, config.train, config.las)]
        if config.train.data_seed is not None:
            logger.warning("train.data_seed=%s fixes the data order of every student seed: the seeds %s differ in "
                           "initialisation and dropout only.", config.train.data_seed, config.run.seeds)
        students = []
        for seed in config.run.seeds:
            folder = seed_folder(self.out, seed)
            # a copy with the seed set: re-running TrainingArguments.__post_init__ (dataclasses.replace) would
            # process the already-processed fields a second time
            train, las = copy.deepcopy(config.train), copy.deepcopy(config.las)
            train.seed, train.output_dir = seed, str(folder / "checkpoints")
            las.seed, las.output_dir = seed, str(folder / "simulator")
            students.append(StudentSeed(seed, folder, train, las))
        return students

    def student(self, seed: int | None = None) -> StudentSeed:
        """The student of seed ``seed`` (default: the first of the recipe's seeds)."""
        if seed is None:
            return next(iter(self.students.values()))
        if seed not in self.students:
            raise ValueError(f"`seed` {seed} is not one of the recipe's student seeds {list(self.students)}.")
        return self.students[seed]

    # -- paths ------------------------------------------------------------------------------------
    def rationale_dir(self, split: str) -> Path:
        return self.out / "rationales" / split

    @property
    def student_dir(self) -> Path:
        """The first seed's student folder (``output_dir/student`` without ``seeds``)."""
        return self.student().student_dir

    @property
    def metrics_path(self) -> Path:
        """The first seed's ``eval/metrics.json``."""
        return self.student().metrics_path

    # -- what decides each stage's result (stage_records.py: a cached result is used only if they match) ------
    def rationale_record(self, split: str) -> dict[str, Any]:
        """What decides the rationales of ``split`` ("train" or "eval"), keyed by the flag that sets each: the
        teacher and its dtype, the rationalization settings and prompt text, and the split's rows."""
        if self._teacher_record is None:
            run, rationalize = self.config.run, self.config.rationalize
            self._teacher_record = {
                "teacher": model_name(run.teacher), "teacher_dtype": run.teacher_dtype,
                **{f"rationalize.{k}": v for k, v in rationalize.settings().items()},
                "rationalize.prompt (its text)": load_prompt(rationalize.prompt or rationalize.task).fingerprint}
        if split not in self._rows:
            self._rows[split] = dataset_fingerprint(self._split(split))
        return {**self._teacher_record, ROWS[split]: self._rows[split]}

    def student_record(self, seed: int | None = None) -> dict[str, Any]:
        """What decides seed ``seed``'s student: the train split's rationales (not the eval split's, which training
        never reads), the starting student, the training settings."""
        student = self.student(seed)
        return {**self.rationale_record("train"), "student": model_name(self.config.run.student),
                **settings_of(student.train, (*RUN_SETTINGS, *LENGTH_SETTINGS), prefix="train.")}

    def evaluation_record(self, seed: int | None = None) -> dict[str, Any]:
        """What decides seed ``seed``'s metrics: its student, the eval split's rationales, the evaluation settings
        (the generation batch size aside), the simulator and the LAS settings."""
        student = self.student(seed)
        return {**self.student_record(seed), **self.rationale_record("eval"),
                "simulator": model_name(self.config.run.simulator),
                **settings_of(self.config.evaluate, leave_out=("batch_size",), prefix="evaluate."),
                **settings_of(student.las, LAS_SETTINGS, prefix="las.")}

    def _remake(self, stage: str, seed: int | None, differ: set[str] | None) -> str:
        """What to delete to make a refused result again: the result of the earliest stage a differing setting
        decides (``differ``; ``None``: the result has no record, so that stage's) and everything made from it, a
        student's checkpoints included (a resume would continue them)."""
        def evaluated(s: StudentSeed) -> list[Path]:
            return [s.metrics_path.parent, s.results_path]

        def trained(s: StudentSeed) -> list[Path]:
            return [s.student_dir, Path(str(s.train.output_dir)), *evaluated(s)]

        seeds, rationales = list(self.students.values()), self.out / "rationales"
        if differ is None:
            differ = {RATIONALIZE_SPLIT.format("train"): {TRAIN_ROWS}, RATIONALIZE_SPLIT.format("eval"): {EVAL_ROWS},
                      "train": {"student"}}.get(stage, set())
        if differ & (set(self.rationale_record("train")) - {TRAIN_ROWS}):  # both splits' rationales: every student
            paths = [rationales, *(p for s in seeds for p in trained(s))]
        elif TRAIN_ROWS in differ:
            paths = [rationales / "train", *(p for s in seeds for p in trained(s))]
        elif differ & set(self.student_record(seed)):
            paths = trained(self.student(seed))
        elif EVAL_ROWS in differ:
            paths = [rationales / "eval", *(p for s in seeds for p in evaluated(s))]
        else:
            paths = evaluated(self.student(seed))
        return "delete " + ", ".join(str(p) for p in paths)

    def _cached(self, folder: Path, record: dict[str, Any], stage: str, seed: int | None = None) -> None:
        check_stage_record(folder, record, stage, lambda differ: self._remake(stage, seed, differ))

    # -- stages -----------------------------------------------------------------------------------
    def _split(self, which: str) -> datasets.Dataset:
        if which not in self._splits:
            run = self.config.run
            data, split, limit = ((run.data, run.train_split, run.max_train_rows) if which == "train"
                                  else (run.eval_data or run.data, run.eval_split, run.max_eval_rows))
            rows = load_task(run.task, data, split=split)
            self._splits[which] = rows.select(range(min(limit, len(rows)))) if limit else rows
        return self._splits[which]

    def rationalize(self) -> dict[str, datasets.Dataset]:
        """Teacher rationales of the train and eval splits (``rationales/{train,eval}``), shared by every seed."""
        if self._rationales is None:
            self._rationales = self._load_or_generate_rationales()
        return self._rationales

    def _load_or_generate_rationales(self) -> dict[str, datasets.Dataset]:
        from .teacher.rationalize import generate_rationales

        splits = ("train", "eval")
        done = {s: (self.rationale_dir(s) / RATIONALE_DATASET_DIR / "dataset_info.json").exists() for s in splits}
        for split in splits:  # each split has its record: other eval rows do not unmake the train split's
            if done[split]:
                self._cached(self.rationale_dir(split), self.rationale_record(split), RATIONALIZE_SPLIT.format(split))
            else:  # recorded before the result is complete: a crash then leaves no result without its record
                write_stage_record(self.rationale_dir(split), self.rationale_record(split))
        if all(done.values()):
            logger.info("rationalize: cached in %s", self.out / "rationales")
            return {s: datasets.load_from_disk(str(self.rationale_dir(s) / RATIONALE_DATASET_DIR)) for s in splits}
        model, tok = load_teacher(self.config.run.teacher, self.config.run.teacher_dtype)
        return {s: generate_rationales(self._split(s), model, tok, self.config.rationalize,
                                       output_dir=self.rationale_dir(s))
                for s in splits}

    def train(self, seed: int | None = None) -> Path:
        """The student of seed ``seed`` trained with counterfactual training (its ``student/``; checkpoints
        resume)."""
        student = self.student(seed)
        if (student.student_dir / STUDENT_CONFIG_NAME).exists():
            self._cached(student.student_dir, self.student_record(seed), "train", seed)
            logger.info("train: cached student in %s", student.student_dir)
            return student.student_dir
        train = self.rationalize()["train"]
        model, tok = load_student(self.config.run.student, seed=student.train.seed)
        trainer = CounterfactualTrainer(model=model, args=student.train, train_dataset=train, processing_class=tok)
        # a crash, kill or stop signal left checkpoints: the same command goes on from the newest complete one
        trainer.train(resume_from_checkpoint=resume_checkpoint(student.train))
        write_stage_record(student.student_dir, self.student_record(seed))  # before the result, as above
        RationaleStudent(cast("PreTrainedModel", trainer.model), tok, trainer.student_format).save_pretrained(
            student.student_dir)
        return student.student_dir

    def evaluate(self, seed: int | None = None) -> dict[str, float]:
        """Accuracy, faithfulness and LAS of seed ``seed``'s student on the eval split: ``eval/metrics.json`` and
        ``results.json`` (results schema 1: the per-question outcomes `scott-distill report` resamples)."""
        student = self.student(seed)
        if student.metrics_path.exists() and student.results_path.exists():
            self._cached(student.metrics_path.parent, self.evaluation_record(seed), "evaluate", seed)
            logger.info("evaluate: cached metrics in %s", student.metrics_path)
            return json.loads(student.metrics_path.read_text())
        if student.metrics_path.exists():
            logger.info("evaluate: %s has no %s (a run from before per-question results): evaluating again",
                        student.folder, RESULTS_FILE)
        rationales = self.rationalize()
        # `use_cpu` keeps evaluation on the CPU as it kept training there
        model, tok = load_student_for_inference(str(self.train(student.seed)),
                                                device="cpu" if student.train.use_cpu else None)
        fmt = StudentFormat.from_pretrained(student.student_dir)
        rows, evaluation = rationales["eval"], self.config.evaluate
        predictions = predict(model, tok, rows, fmt, evaluation.batch_size, evaluation.max_new_tokens)
        outcomes = student_outcomes(model, tok, rows, fmt, evaluation, predictions=predictions)
        las = self._las(model, tok, fmt, rationales, student.las, eval_predictions=predictions)
        metrics: dict[str, Any] = outcome_means(outcomes, len(rows))
        keys = ("las", "las_ci_low", "las_ci_high", "las_ci_half_width", "n_leaked", "n_nonleaked", "n_excluded")
        metrics.update({k: las[k] for k in keys if k in las})
        ids = _question_ids(rows)
        per_question: dict[str, dict[str, Any]] = {m: {ids[i]: v for i, v in rows_.items()}
                                                   for m, rows_ in outcomes.items()}
        stated: dict[str, float] = {}
        if las["cells"]:  # none when no student answer is among the choices: LAS is not measured
            per_question["las"] = {ids[i]: cell for i, cell in las["cells"].items()}
            stated["las"] = las["las"]
        write_stage_record(student.metrics_path.parent, self.evaluation_record(seed))  # before the result, as above
        write_json(metrics, student.metrics_path)
        write_results(student.results_path, kind="recipe", seed=student.seed,
                      per_question={RECIPE_CONDITION: per_question}, metrics={RECIPE_CONDITION: stated},
                      labels=self.labels(), empty_bin=student.las.empty_bin,
                      extra={"seeds": {"train": student.train.seed, "las": student.las.seed,
                                       "evaluate": evaluation.seed, "rationalize": self.config.rationalize.seed},
                             "student_dir": str(student.student_dir), "metrics_file": str(student.metrics_path)})
        return metrics

    def labels(self) -> dict[str, Any]:
        """What identifies this recipe's runs in a report (its seeds share them; another recipe run differs in
        at least ``run``, the output folder's name)."""
        run, config = self.config.run, self.config
        return {"run": self.out.name, "task": run.task, "teacher": run.teacher, "perturbation":
                config.rationalize.perturbation, "decoding_alpha": config.rationalize.alpha, "student": run.student,
                "counterfactual_alpha": config.train.counterfactual_alpha}

    def _las(self, model: Any, tok: Any, fmt: StudentFormat, rationales: dict[str, datasets.Dataset],
             las: LASConfig | None = None, eval_predictions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """LAS of the student's own outputs: the simulator trains on the train split's, measures the eval split's
        (`simulator_las`' results, with the per-question ``cells``). ``eval_predictions``: the student's
        predictions on the eval split when already made."""
        evaluation, las = self.config.evaluate, las or self.config.las

        def outputs(rows: datasets.Dataset) -> list[dict[str, Any]]:
            return predict(model, tok, rows, fmt, evaluation.batch_size, evaluation.max_new_tokens,
                           show_progress=False)

        train_rows, eval_rows = las.training_rows(rationales["train"]), rationales["eval"]
        train_out = student_output_rows(train_rows, outputs(train_rows))
        eval_out = student_output_rows(eval_rows, eval_predictions or outputs(eval_rows))
        simulator, sim_tok = load_simulator(self.config.run.simulator, seed=las.seed)
        return simulator_las(simulator, sim_tok, train_out, eval_out, las)

    def summarize(self) -> tuple[str, dict[str, Path]]:
        """The report over the evaluated seeds (`scott-distill report`'s table, PNG and numbers in
        ``output_dir``); with one seed the table says that a one-seed result is not a finding."""
        done = [s for s in self.students.values() if s.results_path.exists()]
        seeds = [s.seed for s in done]
        run = self.config.run
        # a metric some seeds lack (LAS when a seed's student never answered with a choice) is left out of the
        # summary, with a warning, instead of failing the run after every seed was trained
        held = [json.loads(s.results_path.read_text())["metrics"][RECIPE_CONDITION] for s in done]
        metrics = [m for m in held[0] if all(m in h for h in held)]
        partial = sorted({m for h in held for m in h} - set(metrics))
        if partial:
            logger.warning("report: %s left out, not measured in every seed (%s)", partial,
                           {m: [s.seed for s, h in zip(done, held) if m in h] for m in partial})
        _, table, files = report_runs(ReportConfig(
            runs=[str(s.results_path) for s in done], output_dir=str(self.out), metrics=metrics,
            title=f"SCOTT recipe {self.out.name} ({run.task}), student seeds {seeds}"))
        if partial:
            table += (f"\nNote: {partial} left out of this summary: measured in some seeds only "
                      "(see each seed's results.json).")
            files["table"].write_text(table + "\n")
        if len(seeds) == 1:
            logger.warning("one student seed (%d): the report's numbers are not findings; run more with "
                           "--seeds (e.g. --seeds 0 1 2).", seeds[0])
        return table, files

    def push(self) -> dict[str, str]:
        """The rationale dataset and the student (with a model card holding the metrics) to the Hub."""
        from .hub import push_rationale_dataset, render_student_card

        run = self.config.run
        if not run.student_repo or not run.dataset_repo:
            raise ValueError("push needs `student_repo` and `dataset_repo` in the recipe (or as flags).")
        if len(self.students) > 1:
            raise ValueError(f"push takes one student, the recipe has the seeds {list(self.students)}: choose one "
                             "with --seeds S (its student and metrics are pushed).")
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
        """The stages ``--stage`` asks for, seed after seed; writes ``run_summary.json`` and, after ``evaluate``,
        the report over the seeds.

        A seed's finished stages are read back from disk, so a run that stopped in one seed resumes there: the
        seeds before it are not trained or evaluated again.
        """
        stage = self.config.run.stage
        result: dict[str, Any] = {}
        per_seed: dict[int, dict[str, Any]] = {s: {} for s in self.students}
        if stage in ("rationalize", "all"):
            result["rationales"] = {k: len(v) for k, v in self.rationalize().items()}
        for seed, student in per_seed.items():
            if stage in ("train", "all"):
                student["student"] = str(self.train(seed))
            if stage in ("evaluate", "all"):
                student["metrics"] = self.evaluate(seed)
        if stage in ("evaluate", "all"):
            table, files = self.summarize()
            result["report"] = {role: str(path) for role, path in files.items()}
            result["table"] = table
        if self.config.run.seeds is None:  # run_summary.json as before seeds existed
            result.update(per_seed[self.config.train.seed])
        elif any(per_seed.values()):
            result["seeds"] = per_seed
        if stage == "push" or (stage == "all" and self.config.run.push_to_hub):
            result["pushed"] = self.push()
        write_json({"config": self.config.to_dict(), **{k: v for k, v in result.items() if k != "table"}},
                   self.out / "run_summary.json")
        return result

