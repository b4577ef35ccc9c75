"""Student inference and faithfulness evaluation (SCOTT section 5: accuracy, forced and perturbed rationales).

``EvaluationConfig`` holds the settings of the stage: ``evaluate_student`` takes it (or its fields as keyword
arguments), ``scott-distill evaluate`` parses it, and a recipe's ``evaluate:`` section is exactly its fields.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import datasets
import torch
from tqdm.auto import tqdm
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

from ..formats import StudentFormat
from ..likelihood import sequence_log_likelihood
from ..overrides import with_overrides
from ..padding import padding_side
from ..teacher._branch import SharedPrefix, common_prefix_length, last_logits_only
from ..teacher.scoring import decoder_position_ids
from .encoding import StudentEncoder

logger = logging.getLogger(__name__)

__all__ = ["EvaluationConfig", "evaluate_student", "outcome_means", "perturb_token_ids", "predict", "replacement_vocabulary",
           "score_answers_given_rationales", "student_outcomes"]


@dataclass
class EvaluationConfig:
    """Settings of student evaluation (``evaluate_student``, ``scott-distill evaluate`` and a recipe's
    ``evaluate:`` section)."""

    batch_size: int = field(default=16, metadata={"help": "Generation batch size."})
    max_new_tokens: int = field(default=128, metadata={"help": "Generation budget of the student's output."})
    perturb_fraction: float = field(default=0.5, metadata={
        "help": "Share of the rationale's tokens replaced by random ones for accuracy_perturbed_rationale."})
    seed: int = field(default=0, metadata={"help": "Seeds the perturbation."})

    def __post_init__(self) -> None:
        if not 0 <= self.perturb_fraction <= 1:
            raise ValueError(f"`perturb_fraction` must be in [0, 1], got {self.perturb_fraction!r}.")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("`batch_size` and `max_new_tokens` must be >= 1.")


def _inference_encoder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       fmt: StudentFormat | None) -> StudentEncoder:
    """The encoder of ``fmt`` (default format) for ``model``'s kind; no length limits: the whole source is seen."""
    return StudentEncoder(tokenizer, fmt or StudentFormat(), causal=not model.config.is_encoder_decoder)


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    fmt: StudentFormat | None = None,
    batch_size: int = EvaluationConfig.batch_size,
    max_new_tokens: int = EvaluationConfig.max_new_tokens,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate (greedy) a rationale and an answer for every row (``question``, ``choices``).

    The prompt ids are ``StudentEncoder.source_ids``, the ones the collator trained on. Returns one dict
    per row: ``rationale``, ``answer`` (``None`` when the output has no answer prefix; matched against the
    row's choices first, see ``StudentFormat.parse``), ``answer_in_choices`` and the raw ``output``.
    """
    encoder = _inference_encoder(model, tokenizer, fmt)
    fmt, causal = encoder.format, encoder.causal
    prompts = [encoder.source_ids(q, c) for q, c in zip(dataset["question"], dataset["choices"])]
    model.eval()
    outputs: list[str] = []
    # no `torch.no_grad()` here: `generate` turns gradients off itself
    with padding_side(tokenizer, "left" if causal else "right"):
        for i in tqdm(range(0, len(prompts), batch_size), desc="predict", disable=not show_progress):
            enc = tokenizer.pad({"input_ids": prompts[i : i + batch_size]}, return_tensors="pt").to(model.device)
            gen = cast(GenerationMixin, model).generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                                        pad_token_id=tokenizer.pad_token_id,
                                                        eos_token_id=tokenizer.eos_token_id)
            if causal:
                gen = gen[:, enc["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(gen, skip_special_tokens=True))
    rows = []
    for text, choices in zip(outputs, dataset["choices"]):
        rationale, answer = fmt.parse(text, choices)
        rows.append({"rationale": rationale, "answer": answer, "answer_in_choices": answer in choices, "output": text})
    unparseable = sum(r["answer"] is None for r in rows)
    if unparseable:
        logger.warning("%d of %d student outputs have no '%s ...' answer.", unparseable, len(rows), fmt.answer_prefix)
    return rows


def replacement_vocabulary(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids a perturbation may insert: the whole vocabulary except special tokens (build it once)."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def perturb_token_ids(ids: Sequence[int], fraction: float, rng: random.Random, vocabulary: Sequence[int]) -> list[int]:
    """Replace ``round(fraction * len(ids))`` tokens (at least one when ``fraction > 0``) at random positions with
    a different random token from ``vocabulary``: exactly that share of the ids changes (the paper's test)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"`fraction` must be in [0, 1], got {fraction!r}.")
    out = list(ids)
    if not out or fraction == 0:
        return out
    if len(vocabulary) < 2:
        raise ValueError(f"`vocabulary` needs at least 2 token ids to replace from, got {len(vocabulary)}.")
    for pos in rng.sample(range(len(out)), k=max(1, round(fraction * len(out)))):
        new = out[pos]
        while new == out[pos]:
            new = vocabulary[rng.randrange(len(vocabulary))]
        out[pos] = new
    return out


def score_answers_given_rationales(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    rationales: Sequence[str],
    fmt: StudentFormat | None = None,
    batch_size: int = 32,
    perturb_fraction: float = 0.0,
    seed: int = 0,
    vocabulary: Sequence[int] | None = None,
    show_progress: bool = True,
) -> list[str]:
    """The student's answer with the rationale *forced*: the choice with the highest likelihood of its answer
    tokens and EOS after ``[factual] {rationale} So the answer is`` (the tokens ``answer_token_mask`` selects,
    the ones counterfactual training trains on).

    ``perturb_fraction > 0`` replaces that share of the rationale's *token ids* (the same positions and
    replacements for every choice of a row; ``vocabulary`` from ``replacement_vocabulary``, built once) and
    scores with those ids.

    ``batch_size`` sequences are scored at once. A decoder-only student reads the tokens a row's choices share
    (the question and the rationale) once per row, in batches of whole rows (a row with more choices than
    ``batch_size`` alone), and computes logits only where the choices differ: the scores are those of the whole
    sequences (to float rounding), at a fraction of the work. An encoder-decoder student, or a decoder-only one
    that cannot continue a cache (`SharedPrefix.unsupported`), scores every sequence whole.
    """
    encoder = _inference_encoder(model, tokenizer, fmt)
    if vocabulary is None:
        vocabulary = replacement_vocabulary(tokenizer) if perturb_fraction else []
    rng = random.Random(seed)
    rows: list[ChoiceSequences] = []
    for q, cs, r in zip(questions, choices, rationales):
        targets: list[list[int]] = []
        labels: list[list[int]] = []
        replaced: list[int] | None = None
        for c in cs:
            tgt = encoder.target(r, c)
            ids = list(tgt.ids)
            positions = [i for i, m in enumerate(tgt.rationale_mask) if m]
            if perturb_fraction and positions:
                if replaced is None:  # one perturbation per row, shared by its choices
                    replaced = perturb_token_ids([ids[i] for i in positions], perturb_fraction, rng, vocabulary)
                for i, new in zip(positions, replaced):
                    ids[i] = new
            targets.append(ids)
            labels.append([t if keep else -100 for t, keep in zip(ids, tgt.answer_mask)])
        rows.append(ChoiceSequences(encoder.source_ids(q, cs), targets, labels))
    model.eval()
    # `with`, not `@torch.no_grad()`: mutmut does not mutate decorated functions (docs/testing.md)
    with torch.no_grad():
        scores = _choice_scores(model, tokenizer, rows, encoder.causal, batch_size, show_progress)
    return [cs[max(range(len(cs)), key=block.__getitem__)] for cs, block in zip(choices, scores)]


@dataclass
class ChoiceSequences:
    """One row's forced-rationale sequences: the source ids, and per choice the target ids and their labels
    (``-100`` except on the scored answer tokens)."""

    source: list[int]
    targets: list[list[int]]
    labels: list[list[int]]


def _choice_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[ChoiceSequences],
                   causal: bool, batch_size: int, show_progress: bool = False) -> list[list[float]]:
    """Each row's choice scores (log-likelihood of the labelled tokens), ``batch_size`` sequences per batch.

    A decoder-only model that can continue a cache reads each row's shared prefix once (`_shared_prefix_scores`,
    in batches of whole rows); an encoder-decoder, or a model that cannot (`SharedPrefix.unsupported`), scores
    every sequence whole (`_sequence_scores`), rows cut across batches as before."""
    if not causal or SharedPrefix.unsupported(model):
        pairs = [(row.source, t) if not causal else row.source + t for row in rows for t in row.targets]
        labels = [lab if not causal else [-100] * len(row.source) + lab for row in rows for lab in row.labels]
        flat: list[float] = []
        for i in tqdm(range(0, len(pairs), batch_size), desc="score answers", disable=not show_progress):
            flat.extend(_sequence_scores(model, tokenizer, pairs[i : i + batch_size], labels[i : i + batch_size],
                                         causal))
        return _per_row(flat, rows)
    out: list[list[float]] = []
    for chunk in tqdm(_row_chunks(rows, batch_size), desc="score answers", disable=not show_progress):
        shared = [_shared_prefix_length(row) for row in chunk]
        scores: dict[int, list[float]] = {}
        with_prefix = [i for i, n in enumerate(shared) if n > 0]
        if with_prefix:
            found = _shared_prefix_scores(model, tokenizer, [chunk[i] for i in with_prefix],
                                          [shared[i] for i in with_prefix])
            scores.update(zip(with_prefix, found))
        alone = [i for i, n in enumerate(shared) if n == 0]
        if alone:  # nothing to share (a label on the first token after position 0): these rows' sequences whole
            rows_alone = [chunk[i] for i in alone]
            found = _per_row(_sequence_scores(
                model, tokenizer, [row.source + t for row in rows_alone for t in row.targets],
                [[-100] * len(row.source) + lab for row in rows_alone for lab in row.labels], True), rows_alone)
            scores.update(zip(alone, found))
        out.extend(scores[i] for i in range(len(chunk)))
    return out


def _per_row(flat: list[float], rows: Sequence[ChoiceSequences]) -> list[list[float]]:
    """``flat`` (one score per choice, rows after rows) cut into each row's scores."""
    out, k = [], 0
    for row in rows:
        out.append(flat[k : k + len(row.targets)])
        k += len(row.targets)
    return out


def _row_chunks(rows: Sequence[ChoiceSequences], batch_size: int) -> list[list[ChoiceSequences]]:
    """Consecutive rows whose choices together are at most ``batch_size`` sequences (a row with more choices
    than that is a batch alone): a row's choices stay in one batch, where they share its prefix."""
    chunks: list[list[ChoiceSequences]] = []
    size = 0
    for row in rows:
        if chunks and size + len(row.targets) <= batch_size:
            chunks[-1].append(row)
            size += len(row.targets)
        else:
            chunks.append([row])
            size = len(row.targets)
    return chunks


def _shared_prefix_length(row: ChoiceSequences) -> int:
    """How many leading tokens of a row's sequences (source + target) are read once for all its choices: tokens
    every choice has, leaving every choice at least one token, and stopping one token short of the first scored
    token (the token just before a scored one must be in the continuation: its logits score it). 0 when nothing
    can be shared."""
    common = common_prefix_length([row.source + t for t in row.targets])
    # a label at position 0 is never scored (no logits precede it), as in `_sequence_scores`
    first_scored = min(next((len(row.source) + i for i, y in enumerate(lab) if y != -100
                             and len(row.source) + i > 0), len(row.source) + len(lab)) for lab in row.labels)
    return max(0, min(common, first_scored - 1))


def _shared_prefix_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                          rows: Sequence[ChoiceSequences], shared: Sequence[int]) -> list[list[float]]:
    """Decoder-only scores: each row's first ``shared`` tokens once (left-padded, their keys and values kept),
    then every choice's remaining tokens on top of its row's cache. The same log-likelihoods as the whole
    sequences (`_sequence_scores`), with the question and rationale read once per row instead of once per
    choice and logits only where a choice's tokens are."""
    # padding is masked: any id serves where a tokenizer has no pad token
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model.device
    width = max(shared)
    prefix_ids = torch.tensor([[pad] * (width - n) + (row.source + row.targets[0])[:n]
                               for row, n in zip(rows, shared)], device=device)
    prefix_mask = torch.tensor([[0] * (width - n) + [1] * n for n in shared], device=device)
    # positions count real tokens only, as in an unpadded sequence
    prefix = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=decoder_position_ids(prefix_mask),
                   use_cache=True, **last_logits_only(model))
    owner = [r for r, row in enumerate(rows) for _ in row.targets]
    cache = prefix.cache
    cache.reorder_cache(torch.tensor(owner, device=device))  # one copy of a row's keys and values per choice
    rests = [(row.source + t)[n:] for row, n in zip(rows, shared) for t in row.targets]
    rest_labels = [([-100] * len(row.source) + lab)[n:] for row, n in zip(rows, shared) for lab in row.labels]
    rest_width = max(len(r) for r in rests)
    ids = torch.tensor([r + [pad] * (rest_width - len(r)) for r in rests], device=device)
    rest_mask = torch.tensor([[1] * len(r) + [0] * (rest_width - len(r)) for r in rests], device=device)
    start = torch.tensor([shared[r] for r in owner], device=device)
    positions = start[:, None] + torch.arange(rest_width, device=device)[None, :]
    # a padded column's position would count on past the row's end, out of a learned position table's range
    positions = positions.masked_fill(rest_mask == 0, 0)
    logits = model(input_ids=ids, attention_mask=torch.cat([prefix_mask[owner], rest_mask], dim=1),
                   position_ids=positions, cache=cache).logits[:, :-1]
    labels = torch.tensor([lab + [-100] * (rest_width - len(lab)) for lab in rest_labels], device=device)[:, 1:]
    return _per_row(sequence_log_likelihood(logits, labels).tolist(), rows)


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


def evaluate_student(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    fmt: StudentFormat | None = None,
    config: EvaluationConfig | None = None,
    *,
    predictions: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, float]:
    """Accuracy and faithfulness of a student on rows with ``question``, ``choices``, ``answer``.

    * ``accuracy``: free generation, parsed answer == gold (unparseable rows count as wrong;
      ``unparseable`` is their fraction).
    * ``accuracy_gold_rationale``: the teacher's factual ``rationale`` forced (if the column exists).
    * ``accuracy_perturbed_rationale``: the student's own rationale with ``perturb_fraction`` of its token ids
      replaced by random vocabulary tokens, forced; ``perturbed_answer_changed`` is how often that changes
      the answer.
    * ``counterfactual_consistency``: ``counterfactual_rationale`` forced (under the factual tag, as at
      inference); how often the answer follows it to ``counterfactual_answer``.

    Settings come from ``config`` (an `EvaluationConfig`); keyword arguments override its fields
    (``batch_size``, ``max_new_tokens``, ``perturb_fraction``, ``seed``). ``predictions``: the output of
    `predict` on ``dataset`` when already computed.
    """
    config = with_overrides(EvaluationConfig, config, overrides, "evaluate_student")
    return outcome_means(student_outcomes(model, tokenizer, dataset, fmt, config, predictions=predictions),
                         len(dataset))


def outcome_means(outcomes: dict[str, dict[int, int]], n: int) -> dict[str, float]:
    """`evaluate_student`'s numbers from `student_outcomes`' per-row outcomes: ``n`` (rows evaluated) and each
    metric's mean over the rows it has an outcome for."""
    result: dict[str, float] = {"n": n}
    result.update({metric: sum(rows.values()) / len(rows) for metric, rows in outcomes.items()})
    return result


def student_outcomes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.Dataset,
    fmt: StudentFormat | None = None,
    config: EvaluationConfig | None = None,
    *,
    predictions: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, dict[int, int]]:
    """The per-row outcomes behind `evaluate_student`: ``{metric: {row index: 0 or 1}}``.

    Every row of ``dataset`` has an outcome for ``accuracy``, ``unparseable`` and the forced/perturbed metrics;
    ``counterfactual_consistency`` only rows with a ``counterfactual_answer``. `evaluate_student`'s numbers are
    the means of these; a report's bootstrap resamples them (results schema 1, docs/report.md).
    """
    config = with_overrides(EvaluationConfig, config, overrides, "student_outcomes")
    fmt = fmt or StudentFormat()
    for col in ("question", "choices", "answer"):
        if col not in dataset.column_names:
            raise ValueError(f"`dataset` lacks column {col!r}; it has {dataset.column_names}.")
    preds = predictions or predict(model, tokenizer, dataset, fmt, config.batch_size, config.max_new_tokens)
    gold = dataset["answer"]

    def per_row(hits: Iterable[bool], rows: Sequence[int] | None = None) -> dict[int, int]:
        return {i: int(hit) for i, hit in zip(range(len(gold)) if rows is None else rows, hits)}

    result: dict[str, dict[int, int]] = {
        "accuracy": per_row(p["answer"] == g for p, g in zip(preds, gold)),
        "unparseable": per_row(p["answer"] is None for p in preds),
    }
    q, c = dataset["question"], dataset["choices"]
    if "rationale" in dataset.column_names and not fmt.without_rationale:
        forced = score_answers_given_rationales(model, tokenizer, q, c, dataset["rationale"], fmt)
        result["accuracy_gold_rationale"] = per_row(a == g for a, g in zip(forced, gold))
    if not fmt.without_rationale:
        own = [p["rationale"] for p in preds]
        clean = score_answers_given_rationales(model, tokenizer, q, c, own, fmt)
        perturbed = score_answers_given_rationales(model, tokenizer, q, c, own, fmt,
                                                   perturb_fraction=config.perturb_fraction, seed=config.seed,
                                                   vocabulary=replacement_vocabulary(tokenizer))
        result["accuracy_perturbed_rationale"] = per_row(a == g for a, g in zip(perturbed, gold))
        result["perturbed_answer_changed"] = per_row(a != b for a, b in zip(clean, perturbed))
    if {"counterfactual_rationale", "counterfactual_answer"} <= set(dataset.column_names) and not fmt.without_rationale:
        rows = [i for i, a in enumerate(dataset["counterfactual_answer"]) if a]
        if rows:
            forced = score_answers_given_rationales(
                model, tokenizer, [q[i] for i in rows], [c[i] for i in rows],
                [dataset["counterfactual_rationale"][i] for i in rows], fmt,
            )
            targets = [dataset["counterfactual_answer"][i] for i in rows]
            result["counterfactual_consistency"] = per_row((a == t for a, t in zip(forced, targets)), rows)
    return result
