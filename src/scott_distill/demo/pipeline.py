"""The whole SCOTT method on the synthetic world: teacher, three decodings, four students, LAS."""

from __future__ import annotations

import logging
import random
import time
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

from ..files import write_json
from ..las.pipeline import LASConfig, simulator_las, student_output_rows
from ..padding import padding_side
from ..student.evaluation import evaluate_student, predict
from ..student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments
from ..teacher.prompts import QUERY_TEMPLATE
from ..teacher.rationalize import generate_rationales
from .report import bar_chart, format_tables
from .tokenizer import train_bpe_tokenizer
from .world import PLACES, World, make_world, specific_rationale

logger = logging.getLogger(__name__)

__all__ = ["DemoSettings", "run_demo"]

# zero-shot: the teacher was trained on exactly this query format (World.teacher_corpus)
PROMPT = QUERY_TEMPLATE
DECODINGS = {"greedy": ("none", 0.0), "contrastive_empty": ("empty", 0.5), "contrastive_wrong": ("wrong", 0.5)}
STUDENTS = [("greedy", 0.0), ("greedy", 0.5), ("contrastive_wrong", 0.0), ("contrastive_wrong", 0.5)]


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


def _decoding_quality(world: World, rows: datasets.Dataset) -> dict[str, float]:
    judged = [world.judge(r["rationale"], r["answer"]) for r in rows]
    cf = [world.judge(r["counterfactual_rationale"], r["counterfactual_answer"]) for r in rows]
    n = len(judged)
    return {"supports_gold": judged.count("supports") / n, "vacuous": judged.count("vacuous") / n,
            "counterfactual_supports": cf.count("supports") / n}


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


def _las(student, tok, world: World, train_rows, test_rows, s: DemoSettings, out: Path) -> dict[str, float]:
    """Simulator trained on the student's own train-set explanations and answers; LAS on the test set."""
    outputs = [student_output_rows(split, predict(student, tok, split, batch_size=64, max_new_tokens=48,
                                                  show_progress=False))
               for split in (train_rows, test_rows)]
    args = LASConfig(output_dir=str(out), num_train_epochs=s.simulator_epochs, per_device_train_batch_size=32,
                     per_device_eval_batch_size=64, learning_rate=3e-3, report_to=[], save_strategy="no", seed=s.seed,
                     disable_tqdm=True, logging_strategy="no", explanation_dropout=0.5, bootstrap=1000,
                     save_simulator=False)
    return simulator_las(_student(tok, s, s.seed + 7), tok, outputs[0], outputs[1], args)


def run_demo(output_dir: str | Path = "demo_output", quick: bool = False, seed: int = 0,
             show_progress: bool = True) -> dict[str, Any]:
    """Run the demonstration; writes ``results.json`` and ``results.png`` to ``output_dir``."""
    s = DemoSettings.for_mode(quick, seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    start = time.perf_counter()
    stages = tqdm(total=3 + len(DECODINGS) + len(STUDENTS), desc="scott demo", unit="stage",
                  disable=not show_progress)

    world = make_world(seed, n_objects=s.n_objects, n_train=s.n_train, n_test=s.n_test,
                       n_teacher_corpus=s.teacher_corpus)
    tok = _tokenizer(world)
    stages.update(1)
    stages.set_postfix_str("teacher")
    teacher = _train_teacher(world, tok, s, out)
    stages.update(1)

    train_rows = datasets.Dataset.from_list(world.train)
    decoding: dict[str, dict[str, float]] = {}
    rationales: dict[str, datasets.Dataset] = {}
    for name, (perturbation, alpha) in DECODINGS.items():
        stages.set_postfix_str(f"decode {name}")
        rows = generate_rationales(train_rows, teacher, tok, task="csqa", perturbation=perturbation, alpha=alpha,
                                   counterfactual=True, batch_size=64, max_new_tokens=32, prompt=PROMPT,
                                   seed=seed, output_dir=out / "rationales" / name, show_progress=False)
        rationales[name] = rows
        decoding[name] = _decoding_quality(world, rows)
        stages.update(1)

    test = _with_counterfactual_probe(world, world.test, seed)
    anti = _with_counterfactual_probe(world, world.anti_shortcut, seed + 1)
    students: dict[str, dict[str, float]] = {}
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
        ind = evaluate_student(model, tok, test, batch_size=64, max_new_tokens=48)
        ood = evaluate_student(model, tok, anti, batch_size=64, max_new_tokens=48)
        las = _las(model, tok, world, datasets.Dataset.from_list(world.train[: s.n_test * 2]), test, s,
                   out / "simulators" / key.replace("/", "_"))
        students[key] = {"accuracy": ind["accuracy"], "accuracy_anti_shortcut": ood["accuracy"],
                         "counterfactual_consistency": ind["counterfactual_consistency"],
                         "accuracy_perturbed_rationale": ind["accuracy_perturbed_rationale"],
                         "las": las["las"], "las_ci_low": las["las_ci_low"], "las_ci_high": las["las_ci_high"]}
        stages.update(1)
    stages.close()
    results = {"settings": asdict(s), "decoding": decoding, "students": students,
               "seconds": round(time.perf_counter() - start, 1), "places": PLACES}
    write_json(results, out / "results.json")
    bar_chart(results, out / "results.png")
    results["table"] = format_tables(results)
    return results
