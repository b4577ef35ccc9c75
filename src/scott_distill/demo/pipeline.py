"""The whole SCOTT method on the synthetic world: teacher, three decodings, four students, LAS."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import (
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

from ..las.pipeline import LASConfig, simulator_las, student_output_rows
from ..padding import padding_side
from ..report.compare import ReportConfig, report_runs
from ..report.runs import RESULTS_SCHEMA_VERSION, seed_folder, write_results
from ..student.evaluation import predict, student_outcomes
from ..student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments
from ..teacher.prompts import QUERY_TEMPLATE
from ..teacher.rationalize import generate_rationales
from .tokenizer import train_bpe_tokenizer
from .world import PLACES, World, make_world, specific_rationale

logger = logging.getLogger(__name__)

__all__ = ["DemoSettings", "run_demo", "run_demo_seed", "seed_folder", "smoke_student_table"]

# zero-shot: the teacher was trained on exactly this query format (World.teacher_corpus)
PROMPT = QUERY_TEMPLATE
DECODINGS = {"greedy": ("none", 0.0), "contrastive_empty": ("empty", 0.5), "contrastive_wrong": ("wrong", 0.5)}
STUDENTS = [("greedy", 0.0), ("greedy", 0.5), ("contrastive_wrong", 0.0), ("contrastive_wrong", 0.5)]
TEACHER_PREFIX = "teacher:"  # the teacher decodings' condition names in results.json
# the paired differences the method is about: contrastive vs greedy rationales (per alpha, and the teacher's own),
# alpha 0.5 vs 0 (per rationale source)
COMPARISONS = (
    ("contrastive_wrong/alpha=0.0", "greedy/alpha=0.0"), ("contrastive_wrong/alpha=0.5", "greedy/alpha=0.5"),
    ("greedy/alpha=0.5", "greedy/alpha=0.0"), ("contrastive_wrong/alpha=0.5", "contrastive_wrong/alpha=0.0"),
    (f"{TEACHER_PREFIX}contrastive_wrong", f"{TEACHER_PREFIX}greedy"),
    (f"{TEACHER_PREFIX}contrastive_empty", f"{TEACHER_PREFIX}greedy"),
)


@dataclass
class DemoSettings:
    seed: int = 0
    quick: bool = False
    n_objects: int = 48
    n_train: int = 400
    n_test: int = 150
    teacher_corpus: int = 4000
    teacher_epochs: float = 10.0
    student_epochs: float = 20.0
    simulator_epochs: float = 8.0
    teacher_width: int = 128
    width: int = 96

    @classmethod
    def for_mode(cls, quick: bool, seed: int) -> DemoSettings:
        if quick:
            return cls(seed=seed, quick=True, n_objects=24, n_train=200, n_test=100, teacher_corpus=2000,
                       teacher_epochs=8.0, student_epochs=15.0, simulator_epochs=5.0, width=64)
        return cls(seed=seed)


def _tokenizer(world: World) -> PreTrainedTokenizerFast:
    texts = world.teacher_corpus + [r["question"] + " " + r["rationale"] for r in world.train]
    texts += ["[factual] [counterfactual] So the answer is The answer is: task: My commonsense tells me"]
    return train_bpe_tokenizer(texts, vocab_size=600, padding_side="left")


def _train_teacher(world: World, tok, s: DemoSettings, out: Path) -> GPT2LMHeadModel:
    torch.manual_seed(s.seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=s.teacher_width, n_layer=2, n_head=4,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.pad_token_id))
    data = datasets.Dataset.from_dict({"text": world.teacher_corpus}).map(
        lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
    args = TrainingArguments(output_dir=str(out / "teacher"), num_train_epochs=s.teacher_epochs,
                             per_device_train_batch_size=32, learning_rate=3e-3, warmup_steps=20,
                             lr_scheduler_type="cosine", report_to=[], save_strategy="no", seed=s.seed,
                             disable_tqdm=True, logging_strategy="no")
    with padding_side(tok, "right"):
        Trainer(model=model, args=args, train_dataset=data,
                data_collator=DataCollatorForLanguageModeling(tok, mlm=False)).train()
    return model.eval()


def _decoding_outcomes(world: World, rows: datasets.Dataset) -> dict[str, dict[int, int]]:
    """Per training question, the oracle's judgement of the teacher's factual and counterfactual rationale."""
    judged = [world.judge(r["rationale"], r["answer"]) for r in rows]
    cf = [world.judge(r["counterfactual_rationale"], r["counterfactual_answer"]) for r in rows]
    return {"supports_gold": {i: int(j == "supports") for i, j in enumerate(judged)},
            "vacuous": {i: int(j == "vacuous") for i, j in enumerate(judged)},
            "counterfactual_supports": {i: int(j == "supports") for i, j in enumerate(cf)}}


def _student(tok, s: DemoSettings, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    # the special ids are generic config keywords that T5Config's own signature does not list
    special_ids: dict[str, Any] = {"decoder_start_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id}
    return T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=s.width, d_kv=s.width // 4, d_ff=2 * s.width, num_layers=2,
        num_decoder_layers=2, num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        dropout_rate=0.0, **special_ids))


def _with_counterfactual_probe(world: World, rows: list[dict], seed: int) -> datasets.Dataset:
    """Test rows plus an oracle counterfactual rationale (a wrong place argued for) to force."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        wrong = rng.choice([c for c in r["choices"] if c != r["answer"]])
        out.append({**r, "counterfactual_answer": wrong,
                    "counterfactual_rationale": specific_rationale(r["object"], wrong)})
    return datasets.Dataset.from_list(out)


def _las(student, tok, world: World, train_rows, test_rows, s: DemoSettings, out: Path) -> dict[str, Any]:
    """Simulator trained on the student's own train-set explanations and answers; LAS on the test set."""
    outputs = [student_output_rows(split, predict(student, tok, split, batch_size=64, max_new_tokens=48,
                                                  show_progress=False))
               for split in (train_rows, test_rows)]
    args = LASConfig(output_dir=str(out), num_train_epochs=s.simulator_epochs, per_device_train_batch_size=32,
                     per_device_eval_batch_size=64, learning_rate=3e-3, report_to=[], save_strategy="no", seed=s.seed,
                     disable_tqdm=True, logging_strategy="no", explanation_dropout=0.5, bootstrap=1000,
                     save_simulator=False)
    return simulator_las(_student(tok, s, s.seed + 7), tok, outputs[0], outputs[1], args)


def _outcomes_by_id(outcomes: dict[int, Any], prefix: str) -> dict[str, Any]:
    """Row index -> outcome as results schema 1's question id -> outcome (ids stable within a seed)."""
    return {f"{prefix}-{i}": v for i, v in outcomes.items()}


def run_demo_seed(output_dir: str | Path, settings: DemoSettings, show_progress: bool = True) -> dict[str, Any]:
    """One seed of the demonstration; writes ``results.json`` (results schema 1, with the per-question outcomes
    the report resamples) to ``output_dir`` and returns the results."""
    s, seed = settings, settings.seed
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    start = time.perf_counter()
    stages = tqdm(total=2 + len(DECODINGS) + len(STUDENTS), desc=f"scott demo seed {seed}", unit="stage",
                  disable=not show_progress)

    world = make_world(seed, n_objects=s.n_objects, n_train=s.n_train, n_test=s.n_test,
                       n_teacher_corpus=s.teacher_corpus)
    tok = _tokenizer(world)
    stages.update(1)
    stages.set_postfix_str("teacher")
    teacher = _train_teacher(world, tok, s, out)
    stages.update(1)

    train_rows = datasets.Dataset.from_list(world.train)
    metrics: dict[str, dict[str, float]] = {}
    per_question: dict[str, dict[str, dict[str, Any]]] = {}
    rationales: dict[str, datasets.Dataset] = {}
    for name, (perturbation, alpha) in DECODINGS.items():
        stages.set_postfix_str(f"decode {name}")
        rows = generate_rationales(train_rows, teacher, tok, task="csqa", perturbation=perturbation, alpha=alpha,
                                   counterfactual=True, batch_size=64, max_new_tokens=32, prompt=PROMPT,
                                   seed=seed, output_dir=out / "rationales" / name, show_progress=False)
        rationales[name] = rows
        judged = _decoding_outcomes(world, rows)
        per_question[f"{TEACHER_PREFIX}{name}"] = {m: _outcomes_by_id(v, "train") for m, v in judged.items()}
        stages.update(1)

    test = _with_counterfactual_probe(world, world.test, seed)
    anti = _with_counterfactual_probe(world, world.anti_shortcut, seed + 1)
    for source, alpha in STUDENTS:
        key = f"{source}/alpha={alpha}"
        stages.set_postfix_str(f"student {key}")
        model = _student(tok, s, seed)
        args = CounterfactualTrainingArguments(
            output_dir=str(out / "students" / key.replace("/", "_")), counterfactual_alpha=alpha,
            num_train_epochs=s.student_epochs, per_device_train_batch_size=32, learning_rate=3e-3,
            warmup_steps=10, report_to=[], save_strategy="no", seed=seed, disable_tqdm=True, logging_strategy="no",
            max_source_length=64, max_target_length=64)
        CounterfactualTrainer(model=model, args=args, train_dataset=rationales[source],
                              processing_class=tok).train()
        ind = student_outcomes(model, tok, test, batch_size=64, max_new_tokens=48)
        ood = student_outcomes(model, tok, anti, batch_size=64, max_new_tokens=48)
        las = _las(model, tok, world, datasets.Dataset.from_list(world.train[: s.n_test * 2]), test, s,
                   out / "simulators" / key.replace("/", "_"))
        per_question[key] = {
            "accuracy": _outcomes_by_id(ind["accuracy"], "test"),
            "accuracy_anti_shortcut": _outcomes_by_id(ood["accuracy"], "anti"),
            "counterfactual_consistency": _outcomes_by_id(ind["counterfactual_consistency"], "test"),
            "accuracy_perturbed_rationale": _outcomes_by_id(ind["accuracy_perturbed_rationale"], "test"),
        }
        metrics[key] = {}
        if las["cells"]:  # none when no student answer is among the choices: LAS is not measured
            per_question[key]["las"] = _outcomes_by_id(las["cells"], "test")
            metrics[key]["las"] = las["las"]
        stages.update(1)
    stages.close()
    return write_results(out / "results.json", kind="demo", seed=seed, per_question=per_question, metrics=metrics,
                         labels={"setting": _setting_label(s)}, comparisons=COMPARISONS,
                         extra={"settings": asdict(s), "seconds": round(time.perf_counter() - start, 1),
                                "places": PLACES})


def _setting_label(s: DemoSettings) -> str:
    if s == DemoSettings.for_mode(s.quick, s.seed):
        return "quick" if s.quick else "full"
    return "custom"


def _finished_seed(folder: Path, settings: DemoSettings) -> dict[str, Any] | None:
    """A finished seed's results when ``folder`` holds them for exactly ``settings``; None when not run yet."""
    path = folder / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    if results.get("schema_version") != RESULTS_SCHEMA_VERSION or results.get("settings") != asdict(settings):
        raise ValueError(f"{path} holds a demo run with other settings ({results.get('settings')}) or an older "
                         f"results format than this one ({asdict(settings)}): give another `output_dir`, or delete "
                         "that folder to re-run the seed.")
    logger.info("demo seed %d: reusing %s", settings.seed, path)
    return results


def run_demo(output_dir: str | Path = "demo_output", quick: bool = False, seeds: Sequence[int] = (0,),
             show_progress: bool = True, settings: DemoSettings | None = None,
             n_resamples: int = 10000) -> dict[str, Any]:
    """Run the demonstration for every seed in ``seeds`` and compare them.

    Each seed runs in ``output_dir/seed_<seed>/`` (``results.json`` in results schema 1); a seed
    whose ``results.json`` is there already, with the same settings, is reused, so an interrupted run resumes.
    Then the seeds are compared by `scott_distill.report.compare.report_runs` (the path of ``scott-distill
    report``): ``report.txt``, ``report.png`` and ``report.json`` in ``output_dir``.

    Args:
        output_dir: the run's folder.
        quick: the small setting (a smoke run; see docs/demo.md).
        seeds: the seeds: each one draws its own world, teacher, students and simulators.
        show_progress: progress bars.
        settings: sizes other than the ``quick``/full ones (its ``seed`` is replaced by each of ``seeds``).
        n_resamples: bootstrap resamples of the report's intervals.

    Returns:
        ``seeds`` (seed -> that seed's results), ``report`` (the `Report`), ``table`` (the text printed),
        ``files``, ``smoke`` (True for the quick setting: only the teacher is compared, the students' table is
        labelled a smoke run) and ``seconds``.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(x, int) for x in seeds):
        raise ValueError(f"`seeds` must be distinct integers, at least one, got {seeds!r}.")
    out = Path(output_dir)
    start = time.perf_counter()
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        s = dataclasses.replace(settings, seed=seed) if settings else DemoSettings.for_mode(quick, seed)
        folder = seed_folder(out, seed)
        per_seed[seed] = _finished_seed(folder, s) or run_demo_seed(folder, s, show_progress)
    first = dataclasses.replace(settings, seed=seeds[0]) if settings else DemoSettings.for_mode(quick, seeds[0])
    setting = _setting_label(first)
    # the quick setting is a smoke run: its students are too small to compare (docs/demo.md, measured over
    # seeds), so only the teacher conditions are compared; the students get a labelled table without intervals
    smoke = first.quick
    report, table, files = report_runs(ReportConfig(
        runs=[str(seed_folder(out, seed) / "results.json") for seed in seeds], output_dir=str(out),
        conditions=[f"{TEACHER_PREFIX}{name}" for name in DECODINGS] if smoke else [], n_resamples=n_resamples,
        title=f"SCOTT demo ({setting} setting), seeds {seeds}" + (": teacher only (quick = smoke run)"
                                                                   if smoke else "")))
    if smoke:
        table = (f"Teacher decoding (the comparison of this run)\n{table}\n\n"
                 + smoke_student_table(per_seed))
    return {"seeds": per_seed, "report": report, "table": table, "files": files, "smoke": smoke,
            "seconds": round(time.perf_counter() - start, 1)}


SMOKE_COLUMNS = (("accuracy", "acc"), ("accuracy_anti_shortcut", "acc anti"),
                 ("counterfactual_consistency", "CF cons."), ("accuracy_perturbed_rationale", "acc pert."))


def smoke_student_table(per_seed: dict[int, dict[str, Any]]) -> str:
    """The students of a quick (smoke) run: means over seeds, no intervals, no comparison, labelled as such."""
    seeds = sorted(per_seed)
    students = [f"{source}/alpha={alpha}" for source, alpha in STUDENTS]
    shown = ", ".join(map(str, seeds))
    lines = [f"Students: SMOKE RUN, too small to compare (quick setting; mean over seeds {shown}, no intervals).",
             "These rows show that every stage ran; they are not results. Compare students with the full setting: "
             "scott-distill demo --seeds 0 1 2 3 4 (docs/demo.md).",
             f"{'student':<30}" + "".join(f"{label:>10}" for _, label in SMOKE_COLUMNS)]
    for key in students:
        values = [[per_seed[s]["metrics"][key][m] for s in seeds] for m, _ in SMOKE_COLUMNS]
        lines.append(f"{key:<30}" + "".join(f"{sum(v) / len(v):>10.1%}" for v in values))
    return "\n".join(lines)
