"""Student inference and faithfulness evaluation (SCOTT section 5: accuracy, forced and perturbed rationales)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .collator import StudentFormat
from .tokenizer_utils import padding_side, sequence_log_likelihood

logger = logging.getLogger(__name__)

__all__ = ["evaluate_student", "perturb_rationale", "predict", "score_answers_given_rationales"]


def _prompts(fmt: StudentFormat, questions: Sequence[str], choices: Sequence[Sequence[str]], causal: bool) -> list[str]:
    # decoder-only students saw "source \n target" in training (see CounterfactualDataCollator)
    return [fmt.source(q, c) + ("\n" if causal else "") for q, c in zip(questions, choices)]


@torch.no_grad()
def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    fmt: StudentFormat | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate (greedy) a rationale and an answer for every row (``question``, ``choices``).

    Returns one dict per row: ``rationale``, ``answer`` (``None`` when the output has no answer prefix),
    ``answer_in_choices`` and the raw ``output``.
    """
    fmt = fmt or StudentFormat()
    causal = not model.config.is_encoder_decoder
    prompts = _prompts(fmt, dataset["question"], dataset["choices"], causal)
    model.eval()
    outputs: list[str] = []
    with padding_side(tokenizer, "left" if causal else "right"):
        for i in tqdm(range(0, len(prompts), batch_size), desc="predict", disable=not show_progress):
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            if causal:
                gen = gen[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(gen, skip_special_tokens=True))
    rows = []
    for text, choices in zip(outputs, dataset["choices"]):
        rationale, answer = fmt.parse(text)
        rows.append({"rationale": rationale, "answer": answer, "answer_in_choices": answer in choices, "output": text})
    unparseable = sum(r["answer"] is None for r in rows)
    if unparseable:
        logger.warning("%d of %d student outputs have no '%s ...' answer.", unparseable, len(rows), fmt.answer_prefix)
    return rows


@torch.no_grad()
def score_answers_given_rationales(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    rationales: Sequence[str],
    fmt: StudentFormat | None = None,
    batch_size: int = 32,
) -> list[str]:
    """The student's answer with the rationale *forced*: the choice with the highest likelihood of
    ``" {choice}</s>"`` after ``[factual] {rationale} So the answer is``."""
    fmt = fmt or StudentFormat()
    causal = not model.config.is_encoder_decoder
    sources, targets, answer_starts = [], [], []
    for prompt, cs, r in zip(_prompts(fmt, questions, choices, causal), choices, rationales):
        for c in cs:
            target, start = fmt.target(r, c)
            sources.append(prompt)
            targets.append(target)
            answer_starts.append(start)
    model.eval()
    scores: list[float] = []
    for i in range(0, len(sources), batch_size):
        feats_ids, feats_labels = [], []
        for src, tgt, start in zip(sources[i : i + batch_size], targets[i : i + batch_size],
                                   answer_starts[i : i + batch_size]):
            enc = tokenizer(tgt, add_special_tokens=False, return_offsets_mapping=True)
            tgt_ids = enc["input_ids"] + [tokenizer.eos_token_id]
            keep = [end > start for _, end in enc["offset_mapping"]] + [True]
            src_ids = tokenizer(src)["input_ids"]
            if causal:
                feats_ids.append(src_ids + tgt_ids)
                feats_labels.append([-100] * len(src_ids) + [t if k else -100 for t, k in zip(tgt_ids, keep)])
            else:
                feats_ids.append((src_ids, tgt_ids))
                feats_labels.append([t if k else -100 for t, k in zip(tgt_ids, keep)])
        scores.extend(_sequence_scores(model, tokenizer, feats_ids, feats_labels, causal))
    out, k = [], 0
    for cs in choices:
        block = scores[k : k + len(cs)]
        out.append(cs[max(range(len(cs)), key=block.__getitem__)])
        k += len(cs)
    return out


def _sequence_scores(model, tokenizer, ids, labels, causal: bool) -> list[float]:
    pad = tokenizer.pad_token_id
    device = model.device

    def pad_to(rows, value):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], device=device)

    lab = pad_to(labels, -100)
    if causal:
        input_ids = pad_to(ids, pad)
        mask = pad_to([[1] * len(r) for r in ids], 0)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        lab = lab[:, 1:]
    else:
        src = [s for s, _ in ids]
        tgt = [t for _, t in ids]
        input_ids = pad_to(src, pad)
        mask = pad_to([[1] * len(r) for r in src], 0)
        start = model.config.decoder_start_token_id
        dec = pad_to([[start] + t[:-1] for t in tgt], pad)
        logits = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=dec).logits
    return sequence_log_likelihood(logits, lab).tolist()


def perturb_rationale(
    rationale: str, tokenizer: PreTrainedTokenizerBase, fraction: float = 0.5, rng: random.Random | None = None
) -> str:
    """Replace ``fraction`` of the rationale's tokens with random vocabulary tokens (the paper's test)."""
    rng = rng or random.Random(0)
    ids = tokenizer(rationale, add_special_tokens=False)["input_ids"]
    if not ids:
        return rationale
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    for pos in rng.sample(range(len(ids)), k=max(1, round(fraction * len(ids)))):
        ids[pos] = rng.choice(vocab)
    return tokenizer.decode(ids, skip_special_tokens=True)


def evaluate_student(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    fmt: StudentFormat | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    perturb_fraction: float = 0.5,
    seed: int = 0,
    predictions: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Accuracy and faithfulness of a student on rows with ``question``, ``choices``, ``answer``.

    * ``accuracy``: free generation, parsed answer == gold (unparseable rows count as wrong;
      ``unparseable`` is their fraction).
    * ``accuracy_gold_rationale``: the teacher's factual ``rationale`` forced (if the column exists).
    * ``accuracy_perturbed_rationale``: the student's own rationale with ``perturb_fraction`` of its tokens
      replaced at random, forced; ``perturbed_answer_changed`` is how often that changes the answer.
    * ``counterfactual_consistency``: ``counterfactual_rationale`` forced (under the factual tag, as at
      inference); how often the answer follows it to ``counterfactual_answer``.
    """
    fmt = fmt or StudentFormat()
    for col in ("question", "choices", "answer"):
        if col not in dataset.column_names:
            raise ValueError(f"`dataset` lacks column {col!r}; it has {dataset.column_names}.")
    preds = predictions or predict(model, tokenizer, dataset, fmt, batch_size, max_new_tokens)
    gold = dataset["answer"]
    n = len(gold)
    result: dict[str, float] = {
        "n": n,
        "accuracy": sum(p["answer"] == g for p, g in zip(preds, gold)) / n,
        "unparseable": sum(p["answer"] is None for p in preds) / n,
    }
    q, c = dataset["question"], dataset["choices"]
    if "rationale" in dataset.column_names and not fmt.without_rationale:
        forced = score_answers_given_rationales(model, tokenizer, q, c, dataset["rationale"], fmt)
        result["accuracy_gold_rationale"] = sum(a == g for a, g in zip(forced, gold)) / n
    if not fmt.without_rationale:
        rng = random.Random(seed)
        own = [p["rationale"] for p in preds]
        clean = score_answers_given_rationales(model, tokenizer, q, c, own, fmt)
        noisy = [perturb_rationale(r, tokenizer, perturb_fraction, rng) for r in own]
        perturbed = score_answers_given_rationales(model, tokenizer, q, c, noisy, fmt)
        result["accuracy_perturbed_rationale"] = sum(a == g for a, g in zip(perturbed, gold)) / n
        result["perturbed_answer_changed"] = sum(a != b for a, b in zip(clean, perturbed)) / n
    if {"counterfactual_rationale", "counterfactual_answer"} <= set(dataset.column_names) and not fmt.without_rationale:
        rows = [i for i, a in enumerate(dataset["counterfactual_answer"]) if a]
        if rows:
            forced = score_answers_given_rationales(
                model, tokenizer, [q[i] for i in rows], [c[i] for i in rows],
                [dataset["counterfactual_rationale"][i] for i in rows], fmt,
            )
            targets = [dataset["counterfactual_answer"][i] for i in rows]
            result["counterfactual_consistency"] = sum(a == t for a, t in zip(forced, targets)) / len(rows)
    return result
