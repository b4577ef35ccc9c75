"""The LAS simulator: a seq2seq model that predicts a model's answer from (x, e), x or e.

Follows Hase et al. (2020) for QA: the simulator scores each choice as the target ``The answer is: {choice}``
given ``{task}: {question} The choices are {c0}, {c1} and {c2}. My commonsense tells me {explanation}``.
The X condition drops the explanation part, the E condition blanks the question. One simulator serves all
three conditions; during training the explanation is dropped with probability ``explanation_dropout`` so
that it learns to answer with and without one. ``train_simulator(..., condition="e")`` trains on the explanation
alone instead (the question blanked): `scott_distill.las.judge` uses it for a judge of rationales.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import datasets
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForMultipleChoice,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
)

from ..formats import join_choices
from ..likelihood import sequence_log_likelihood
from ..padding import padding_side

logger = logging.getLogger(__name__)

__all__ = ["CONDITIONS", "SimulatorFormat", "is_choice_simulator", "load_simulator", "predict_choices", "simulate",
           "train_simulator"]

CONDITIONS = ("xe", "x", "e")


@dataclass(frozen=True)
class SimulatorFormat:
    """Input/target templates of the simulator (defaults: Hase et al.'s QA format)."""

    task_prefix: str = "task"
    explanation_prefix: str = "My commonsense tells me"
    target_template: str = "The answer is: {choice}"

    def source(self, question: str, choices: Sequence[str], explanation: str | None, condition: str) -> str:
        if condition not in CONDITIONS:
            raise ValueError(f"`condition` must be one of {CONDITIONS}, got {condition!r}.")
        q = "" if condition == "e" else question
        text = f"{self.task_prefix}: {q} The choices are {join_choices(list(choices))}."
        if condition != "x" and explanation:
            text += f" {self.explanation_prefix} {explanation}"
        return text

    def target(self, choice: str) -> str:
        return self.target_template.format(choice=choice)


def _check_columns(dataset: datasets.Dataset, needed: Sequence[str], name: str) -> None:
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(f"`{name}` lacks columns {missing}; it has {dataset.column_names}.")


def _check_training_view(explanation_dropout: float, condition: str) -> None:
    if not 0 <= explanation_dropout <= 1:
        raise ValueError(f"`explanation_dropout` must be in [0, 1], got {explanation_dropout!r}.")
    if condition not in ("xe", "e"):
        raise ValueError(f"`condition` (the training input view) must be 'xe' or 'e', got {condition!r}.")


def _training_conditions(n: int, explanation_dropout: float, seed: int, condition: str) -> list[str]:
    """Each training row's input view: ``condition``, or "x" (explanation dropped) with probability
    ``explanation_dropout``; one draw per row whatever the view, so a seed drops the same rows in every view."""
    rng = random.Random(seed)
    return ["x" if rng.random() < explanation_dropout else condition for _ in range(n)]


def build_training_rows(
    dataset: datasets.Dataset,
    fmt: SimulatorFormat,
    explanation_dropout: float,
    seed: int,
    label_column: str = "label",
    explanation_column: str = "explanation",
    condition: str = "xe",
) -> datasets.Dataset:
    """(source, target) text pairs in the ``condition`` view ("xe", or "e": the explanation alone), the explanation
    dropped (X input) with probability ``explanation_dropout``."""
    _check_training_view(explanation_dropout, condition)
    _check_columns(dataset, ["question", "choices", explanation_column, label_column], "dataset")
    sources, targets = [], []
    for row, view in zip(dataset, _training_conditions(len(dataset), explanation_dropout, seed, condition)):
        sources.append(fmt.source(row["question"], row["choices"], row[explanation_column], view))
        targets.append(fmt.target(str(row[label_column])))
    return datasets.Dataset.from_dict({"source": sources, "target": targets})


def load_simulator(name_or_path: str, seed: int | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A simulator to fine-tune and its tokenizer: a seq2seq model (Hase et al. use T5-base) as it is, an encoder
    (BERT, MiniLM: ``minilm-l6-v2`` is bundled offline) with a multiple-choice head (see `train_simulator`).

    ``name_or_path``: anything `scott_distill.checkpoints.resolve_checkpoint` accepts. A decoder-only model is
    refused: the simulator pipeline scores choices with a seq2seq target or a choice head, not a causal LM.
    ``seed``: the initial weights of a new multiple-choice head come from it alone, and the process's random state
    is left as it was. Without it they come from the process's random state, so whatever ran before in the same
    process (training a student, for one) changes the simulator and its LAS.
    """
    from transformers import AutoConfig, AutoModelForMultipleChoice

    from ..checkpoints import resolve_checkpoint

    path = resolve_checkpoint(name_or_path)
    config = AutoConfig.from_pretrained(path)
    if config.is_encoder_decoder:
        model = AutoModelForSeq2SeqLM.from_pretrained(path)
    elif type(config) in AutoModelForMultipleChoice._model_mapping:
        with torch.random.fork_rng(devices=[]):  # restores the CPU generator, the only one seeded here
            if seed is not None:
                torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that reseeds the GPUs too
            model = AutoModelForMultipleChoice.from_pretrained(path)
    else:
        raise ValueError(
            f"`simulator` {name_or_path!r} is a {config.model_type} model, which has neither a seq2seq form nor a "
            "multiple-choice head; use a seq2seq model (t5-base, as Hase et al.) or an encoder such as minilm-l6-v2."
        )
    return model, AutoTokenizer.from_pretrained(path)


def train_simulator(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: datasets.Dataset,
    eval_dataset: datasets.Dataset | None = None,
    args: Seq2SeqTrainingArguments | None = None,
    explanation_dropout: float = 0.5,
    fmt: SimulatorFormat | None = None,
    label_column: str = "label",
    explanation_column: str = "explanation",
    max_source_length: int = 256,
    max_target_length: int = 32,
    condition: str = "xe",
) -> PreTrainedModel:
    """Fine-tune a simulator; with a dev set and ``load_best_model_at_end`` the best dev-loss checkpoint is kept.

    A seq2seq model is trained with ``Seq2SeqTrainer`` to generate ``The answer is: {choice}``; a
    ``*ForMultipleChoice`` model (an encoder with a choice head, the classifier-style alternative) is trained
    with ``Trainer`` on (source, choice) pairs.

    ``train_dataset`` / ``eval_dataset`` rows: ``question``, ``choices``, ``explanation`` and ``label`` (the
    explained model's answer, a choice string). ``condition``: the input view of the training rows, "xe"
    (question and explanation, Hase et al.; the LAS simulator) or "e" (the explanation alone, the question blanked);
    rows dropped by ``explanation_dropout`` get the "x" view either way; dev rows are never dropped. Returns the
    (best) trained model.
    """
    _check_training_view(explanation_dropout, condition)
    fmt = fmt or SimulatorFormat()
    args = args or Seq2SeqTrainingArguments(output_dir="simulator", report_to=[], save_strategy="no")
    seed = args.seed
    if is_choice_simulator(model):
        return _train_choice_simulator(model, tokenizer, train_dataset, eval_dataset, args, explanation_dropout,
                                       fmt, label_column, explanation_column, max_source_length, condition)
    if not model.config.is_encoder_decoder:
        raise ValueError("`model` must be a seq2seq model (generative simulator) or a *ForMultipleChoice model "
                         "(classifier simulator).")

    def tokenize(batch):
        enc = tokenizer(batch["source"], max_length=max_source_length, truncation=True)
        enc["labels"] = tokenizer(text_target=batch["target"], max_length=max_target_length, truncation=True)[
            "input_ids"
        ]
        return enc

    train = build_training_rows(train_dataset, fmt, explanation_dropout, seed, label_column, explanation_column,
                                condition)
    train = train.map(tokenize, batched=True, remove_columns=train.column_names)
    dev = None
    if eval_dataset is not None:
        dev = build_training_rows(eval_dataset, fmt, 0.0, seed, label_column, explanation_column, condition)
        dev = dev.map(tokenize, batched=True, remove_columns=dev.column_names)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
    )
    with padding_side(tokenizer, "right"):  # seq2seq labels are padded on the right, whatever the default
        trainer.train()
    return cast(PreTrainedModel, trainer.model)


def is_choice_simulator(model: PreTrainedModel) -> bool:
    """A classifier-style simulator: an encoder with a multiple-choice head."""
    return type(model).__name__.endswith("ForMultipleChoice")


def _choice_features(tokenizer, sources: Sequence[str], choices: Sequence[Sequence[str]], max_length: int):
    return [tokenizer([src] * len(cs), list(cs), truncation=True, max_length=max_length)
            for src, cs in zip(sources, choices)]


def _train_choice_simulator(model, tokenizer, train_dataset, eval_dataset, args, explanation_dropout, fmt,
                            label_column, explanation_column, max_length, condition) -> PreTrainedModel:
    def features(dataset, dropout, seed):
        _check_columns(dataset, ["question", "choices", explanation_column, label_column], "dataset")
        rows = []
        for row, view in zip(dataset, _training_conditions(len(dataset), dropout, seed, condition)):
            src = fmt.source(row["question"], row["choices"], row[explanation_column], view)
            enc = _choice_features(tokenizer, [src], [row["choices"]], max_length)[0]
            label = str(row[label_column])
            if label not in row["choices"]:
                raise ValueError(f"label {label!r} is not among the choices {row['choices']}.")
            rows.append({**dict(enc), "labels": row["choices"].index(label)})
        return datasets.Dataset.from_list(rows)

    train = features(train_dataset, explanation_dropout, args.seed)
    dev = features(eval_dataset, 0.0, args.seed) if eval_dataset is not None else None
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorForMultipleChoice(tokenizer), processing_class=tokenizer)
    trainer.train()
    return cast(PreTrainedModel, trainer.model)


@torch.no_grad()
def _choice_scores(model, tokenizer, sources, choices, batch_size: int, max_length: int = 256) -> list[list[float]]:
    collate = DataCollatorForMultipleChoice(tokenizer)
    model.eval()
    out: list[list[float]] = []
    for i in range(0, len(sources), batch_size):
        feats = _choice_features(tokenizer, sources[i : i + batch_size], choices[i : i + batch_size], max_length)
        scores: list[list[float]] = [[] for _ in feats]
        widths = [len(f["input_ids"]) for f in feats]
        for w in sorted(set(widths)):  # rows with the same number of choices share a batch
            idx = [k for k, n in enumerate(widths) if n == w]
            # the collator requires a label; scoring ignores it
            batch = collate([{**feats[k], "labels": 0} for k in idx])
            batch = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
            for k, row in zip(idx, model(**batch).logits.float().log_softmax(-1).tolist()):
                scores[k] = row
        out.extend(scores)
    return out


@torch.no_grad()
def score_choices(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    choices: Sequence[Sequence[str]],
    fmt: SimulatorFormat,
    batch_size: int = 32,
    max_source_length: int = 256,
) -> list[list[float]]:
    """Total log-likelihood of ``fmt.target(choice)`` for every choice of every row."""
    model.eval()
    flat_src = [s for s, cs in zip(sources, choices) for _ in cs]
    flat_tgt = [fmt.target(c) for cs in choices for c in cs]
    scores: list[float] = []
    with padding_side(tokenizer, "right"):
        for i in range(0, len(flat_src), batch_size):
            enc = tokenizer(flat_src[i : i + batch_size], max_length=max_source_length, truncation=True,
                            padding=True, return_tensors="pt").to(model.device)
            tgt = tokenizer(text_target=flat_tgt[i : i + batch_size], padding=True, return_tensors="pt")
            labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100).to(model.device)
            scores.extend(sequence_log_likelihood(model(**enc, labels=labels).logits, labels).tolist())
    out, k = [], 0
    for cs in choices:
        out.append(scores[k : k + len(cs)])
        k += len(cs)
    return out


def predict_choices(
    simulator: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    condition: str,
    fmt: SimulatorFormat | None = None,
    explanation_column: str = "explanation",
    batch_size: int = 32,
) -> tuple[list[str], list[list[float]]]:
    """The simulator's choice for every row in one ``condition`` ("xe", "x" or "e"), and its probabilities (softmax
    over the choices' scores, in the row's choice order). Ties go to the first choice."""
    fmt = fmt or SimulatorFormat()
    if condition not in CONDITIONS:
        raise ValueError(f"`condition` must be one of {CONDITIONS}, got {condition!r}.")
    _check_columns(dataset, ["question", "choices", explanation_column], "dataset")
    questions, choices, expl = dataset["question"], dataset["choices"], dataset[explanation_column]
    sources = [fmt.source(q, c, e, condition) for q, c, e in zip(questions, choices, expl)]
    if is_choice_simulator(simulator):
        scores = _choice_scores(simulator, tokenizer, sources, choices, batch_size)
    else:
        scores = score_choices(simulator, tokenizer, sources, choices, fmt, batch_size)
    probs = [torch.softmax(torch.tensor(s), -1).tolist() for s in scores]
    return [cs[max(range(len(p)), key=p.__getitem__)] for cs, p in zip(choices, probs)], probs


def simulate(
    simulator: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    fmt: SimulatorFormat | None = None,
    explanation_column: str = "explanation",
    label_column: str | None = "label",
    batch_size: int = 32,
) -> dict[str, list]:
    """Simulator predictions in the three conditions.

    Returns ``{"xe": [...], "x": [...], "e": [...]}`` (predicted choice strings) and, for each condition,
    ``"<cond>_probs"`` (softmax over the choices' log-likelihoods). If ``label_column`` is present,
    ``"e_label_probability"`` is the e-only probability of that label (for ``las_k_bins``).
    """
    fmt = fmt or SimulatorFormat()
    result: dict[str, list] = {}
    for cond in CONDITIONS:
        result[cond], result[f"{cond}_probs"] = predict_choices(simulator, tokenizer, dataset, cond, fmt,
                                                                explanation_column, batch_size)
    choices = dataset["choices"]
    if label_column is not None and label_column in dataset.column_names:
        labels = [str(v) for v in dataset[label_column]]
        result["e_label_probability"] = [
            p[cs.index(y)] if y in cs else 0.0 for p, cs, y in zip(result["e_probs"], choices, labels)
        ]
    return result
