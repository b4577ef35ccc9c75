"""Dataset-scale teacher rationalization (SCOTT step 1): resumable, sharded across processes.

``RationalizeConfig`` holds every setting of the stage: ``generate_rationales`` takes it (or its fields as
keyword arguments), ``scott-distill rationalize`` parses it from flags or YAML, and a recipe's
``rationalize:`` section is exactly its fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import datasets
import torch
from accelerate.utils.memory import clear_device_cache
from tqdm.auto import tqdm
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

from ..files import ensure_writable_dir
from ..interrupts import RunInterrupted, StopRequest, stop_on_signals
from ..memory import is_out_of_memory
from ..overrides import check_switches, with_overrides
from ..tasks import TASKS, get_task, normalize_rows
from ._branch import SharedPrefix, input_device
from .fused import contrastive_generate
from .processor import ContrastiveRationaleLogitsProcessor
from .prompts import RationalePrompt, load_prompt
from .scoring import stop_token_ids_for
from .shards import (
    ProcessGroup,
    ShardStore,
    content_hash,
    model_config_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)

logger = logging.getLogger(__name__)

__all__ = ["PERTURBATIONS", "RationalizeConfig", "generate_rationales"]

PERTURBATIONS = ("wrong", "empty", "none")
# settings that do not change the generated rows, left out of a run's fingerprint (a resumed run may change them)
_SAME_ROWS_EITHER_WAY = ("use_fused", "reuse_prefix")


@dataclass
class RationalizeConfig:
    """Settings of teacher rationalization (``generate_rationales``, ``scott-distill rationalize`` and a recipe's
    ``rationalize:`` section).

    Every field except ``use_fused`` and ``reuse_prefix`` decides the generated rows and is recorded in a run's
    ``run_config.json``.
    """

    task: str = field(default="csqa", metadata={"help": f"One of {sorted(TASKS)}: how the data is normalised and "
                                                "the default prompt."})
    perturbation: str = field(default="wrong", metadata={
        "help": f"Contrast prompts: one of {PERTURBATIONS}: a random 'wrong' answer, an 'empty' answer, or 'none' "
                "(plain greedy decoding, the baseline)."})
    alpha: float = field(default=0.5, metadata={"help": "Weight of the contrast branch."})
    counterfactual: bool = field(default=True, metadata={
        "help": "Also rationalize a random wrong answer A' (contrast: the gold answer for 'wrong', the empty "
                "answer for 'empty'), giving counterfactual_answer and counterfactual_rationale."})
    batch_size: int = field(default=16, metadata={"help": "Generation batch (jobs sorted by prompt length)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Generation budget per rationale."})
    prompt: str | None = field(default=None, metadata={
        "help": "A task name, a prompt file or a template string (default: the task's few-shot prompt)."})
    use_chat_template: bool = field(default=False, metadata={"help": "Render prompts with the tokenizer's chat "
                                                             "template."})
    plausibility_threshold: float | None = field(default=None, metadata={
        "help": "Adaptive plausibility constraint of the contrastive scores (off by default)."})
    seed: int = field(default=0, metadata={"help": "Seeds the wrong-answer choices (per example id, independent "
                                           "of batching and ranks)."})
    use_fused: bool = field(default=True, metadata={
        "help": "Both branches in one forward per step (contrastive_generate) instead of the logits processor; "
                "both give the same tokens."})
    reuse_prefix: bool = field(default=True, metadata={
        "help": "Compute the KV cache of the token prefix shared by every prompt (the few-shot block) once and "
                "start every batch and both branches from it; same tokens as without. Decoder-only teachers "
                "(an encoder-decoder's encoder is bidirectional, so it always encodes whole prompts)."})

    def __post_init__(self) -> None:
        get_task(self.task)  # a clear error for an unknown task
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"`perturbation` must be one of {PERTURBATIONS}, got {self.perturbation!r}.")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("`batch_size` and `max_new_tokens` must be >= 1.")
        self.alpha = float(self.alpha)
        check_switches(self)

    def settings(self) -> dict[str, Any]:
        """The fields that decide the generated rows (the prompt as given; see ``_run_settings``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _SAME_ROWS_EITHER_WAY}


def _context_limit(model: PreTrainedModel) -> tuple[int | None, str]:
    """The number of positions the teacher accepts, from its config (``None``: no absolute limit, e.g. T5)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value, attr
    return None, ""


def _check_context(model: PreTrainedModel, jobs: list[dict], prompt_ids: list[list[int]],
                   contrast_ids: list[list[int] | None], data: datasets.Dataset, config: RationalizeConfig) -> None:
    """Refuse prompts that do not fit the teacher's context, before anything runs (a GPT-2 teacher would fail
    with an IndexError deep in its position embedding)."""
    limit, attr = _context_limit(model)
    if limit is None:
        return
    lengths = [len(ids) for ids in prompt_ids]
    contrast_lengths = {k: len(ids) for k, ids in enumerate(contrast_ids) if ids is not None}
    encoder_decoder = model.config.is_encoder_decoder
    if encoder_decoder and config.max_new_tokens + 1 > limit:
        raise ValueError(f"max_new_tokens={config.max_new_tokens} exceeds the teacher's decoder limit of {limit} positions "
                         f"(config.{attr}).")
    too_long = []
    for k in range(len(jobs)):
        length = max(lengths[k], contrast_lengths.get(k, 0))
        needed = length if encoder_decoder else length + config.max_new_tokens
        if needed > limit:
            too_long.append((k, length, needed))
    if too_long:
        k, length, needed = too_long[0]
        row = jobs[k]["row"]
        budget = "" if encoder_decoder else f" + max_new_tokens={config.max_new_tokens} = {needed} positions"
        raise ValueError(
            f"Row {row} (id {data[row]['id']!r}): the {jobs[k]['kind']} prompt is {length} tokens{budget}, but the "
            f"teacher accepts at most {limit} positions (config.{attr}); {len(too_long)} of {len(jobs)} prompts do "
            "not fit. Use fewer exemplars (`prompt=` a shorter prompt file or template with fewer shots), a smaller "
            "`max_new_tokens`, or a teacher with a longer context."
        )


@contextlib.contextmanager
def _teacher_padding(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> Iterator[PreTrainedTokenizerBase]:
    """Pad token (the eos token if there is none) and side (left for decoder-only teachers) for generation,
    restored afterwards: the caller's tokenizer is left as it was."""
    pad_token, side = tokenizer.pad_token, tokenizer.padding_side
    if pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("The tokenizer has neither a pad token nor an eos token to pad with; set `pad_token`.")
        logger.info("The tokenizer has no pad token; padding with its eos token %r.", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if not model.config.is_encoder_decoder:
        tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side
        if pad_token is None:
            tokenizer.pad_token = None


def _pick_other(rng: random.Random, choices: list[str], exclude: str) -> str:
    return rng.choice([c for c in choices if c != exclude])


def _jobs(data: datasets.Dataset, prompt: RationalePrompt, config: RationalizeConfig,
          tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    jobs = []
    for i, row in enumerate(data):
        q, cs, gold = row["question"], row["choices"], row["answer"]
        # one RNG per (seed, example, kind): the choice never depends on order, batching or rank
        rng = random.Random(f"{config.seed}:{row['id']}:perturb")
        contrast = {"wrong": _pick_other(rng, cs, gold), "empty": None, "none": None}[config.perturbation]

        def render(answer: str | None, q: str = q, cs: list[str] = cs) -> str:
            return prompt.render(q, cs, answer, tokenizer, config.use_chat_template)

        jobs.append({"row": i, "kind": "factual", "answer": gold, "contrast_answer": contrast,
                     "prompt": render(gold), "contrast": None if config.perturbation == "none" else render(contrast)})
        if config.counterfactual:
            cf = _pick_other(random.Random(f"{config.seed}:{row['id']}:counterfactual"), cs, gold)
            cf_contrast = {"wrong": gold, "empty": None, "none": None}[config.perturbation]
            jobs.append({"row": i, "kind": "counterfactual", "answer": cf, "contrast_answer": cf_contrast,
                         "prompt": render(cf), "contrast": None if config.perturbation == "none" else render(cf_contrast)})
    return jobs


def _token_ids(tokenizer: PreTrainedTokenizerBase, jobs: list[dict]) -> tuple[list[list[int]], list[list[int] | None]]:
    """Token ids of every job's prompt and contrast prompt (``None`` without one), each tokenized alone: the ids
    a padded batch holds."""
    prompt_ids = tokenizer([j["prompt"] for j in jobs])["input_ids"]
    with_contrast = [k for k, j in enumerate(jobs) if j["contrast"] is not None]
    contrast_ids: list[list[int] | None] = [None] * len(jobs)
    if with_contrast:
        for k, ids in zip(with_contrast, tokenizer([jobs[k]["contrast"] for k in with_contrast])["input_ids"]):
            contrast_ids[k] = ids
    return prompt_ids, contrast_ids


def _shared_prefix(model: PreTrainedModel, prompt_ids: list[list[int]],
                   contrast_ids: list[list[int] | None]) -> SharedPrefix | None:
    """The cached token prefix of every prompt of the run (both branches), or ``None`` (logged) without one."""
    reason = SharedPrefix.unsupported(model)
    if reason:
        logger.info("No shared-prefix reuse: %s.", reason)
        return None
    prefix = SharedPrefix.of(model, prompt_ids + [ids for ids in contrast_ids if ids is not None])
    if prefix is None:
        logger.info("No shared-prefix reuse: the prompts share no leading token.")
    else:
        logger.info("Reusing the KV cache of the %d-token prefix shared by all prompts.", len(prefix))
    return prefix


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    # longest first: padding is cut by grouping similar lengths, and an OOM shows up in the first batch
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _gold_inputs(enc: Any, prefix: SharedPrefix | None) -> dict[str, Any]:
    """``generate``'s inputs for the tokenized gold prompts: from a copy of the shared prefix's cache if any."""
    if prefix is None:
        return dict(enc)
    return prefix.generate_inputs(enc["input_ids"], enc["attention_mask"])


def _generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, jobs: list[dict], config: RationalizeConfig,
              stop_ids: list[int], prefix: SharedPrefix | None = None) -> list[str]:
    prompts = [j["prompt"] for j in jobs]
    device = input_device(model)  # not model.device, which is `meta` for an accelerate-offloaded teacher
    if config.perturbation == "none":
        gold = _gold_inputs(tokenizer(prompts, return_tensors="pt", padding=True).to(device), prefix)
        out = cast(GenerationMixin, model).generate(**gold, max_new_tokens=config.max_new_tokens, do_sample=False,
                                                    eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        new = out if model.config.is_encoder_decoder else out[:, gold["input_ids"].shape[1] :]
    elif config.use_fused:
        new = contrastive_generate(model, tokenizer, prompts, [j["contrast"] for j in jobs], alpha=config.alpha,
                                   max_new_tokens=config.max_new_tokens, do_sample=False, stop_token_ids=stop_ids,
                                   plausibility_threshold=config.plausibility_threshold, shared_prefix=prefix)
    else:
        gold = _gold_inputs(tokenizer(prompts, return_tensors="pt", padding=True).to(device), prefix)
        con = tokenizer([j["contrast"] for j in jobs], return_tensors="pt", padding=True).to(device)
        proc = ContrastiveRationaleLogitsProcessor(model, con["input_ids"], con["attention_mask"], alpha=config.alpha,
                                                   stop_token_ids=stop_ids,
                                                   plausibility_threshold=config.plausibility_threshold,
                                                   shared_prefix=prefix)
        # the block frees the contrast cache as soon as generate returns; generate_kwargs() makes generate
        # stop at exactly the ids of the stop rule (model eos + stop_ids)
        with proc:
            out = cast(GenerationMixin, model).generate(**gold, **proc.generate_kwargs(), do_sample=False,
                                                        max_new_tokens=config.max_new_tokens,
                                                        pad_token_id=tokenizer.pad_token_id)
        new = out if model.config.is_encoder_decoder else out[:, gold["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def _assemble(data: datasets.Dataset, jobs: list[dict], batches: list[list[int]], texts: dict[int, list[str]],
              prompt: RationalePrompt, config: RationalizeConfig) -> datasets.Dataset:
    by_job: dict[int, str] = {}
    for b, members in enumerate(batches):
        for k, text in zip(members, texts[b]):
            by_job[k] = prompt.clean(text)
    columns: dict[str, list] = {"human_rationale": data["rationale"], "rationale": [None] * len(data),
                                "contrast_answer": [None] * len(data)}
    if config.counterfactual:
        columns.update(counterfactual_answer=[None] * len(data), counterfactual_rationale=[None] * len(data))
    for k, job in enumerate(jobs):
        if job["kind"] == "factual":
            columns["rationale"][job["row"]] = by_job[k]
            columns["contrast_answer"][job["row"]] = job["contrast_answer"]
        else:
            columns["counterfactual_answer"][job["row"]] = job["answer"]
            columns["counterfactual_rationale"][job["row"]] = by_job[k]
    out = data.remove_columns(["rationale"])
    for name, values in columns.items():
        if name in out.column_names:
            out = out.remove_columns([name])
        out = out.add_column(name, values)
    return out


def _run_settings(config: RationalizeConfig, prompt: RationalePrompt, model: PreTrainedModel,
                  tokenizer: PreTrainedTokenizerBase, data: datasets.Dataset, jobs: list[dict]) -> dict[str, Any]:
    """Everything that determines the output rows; a resumed run must match it exactly."""
    return {
        **config.settings(),
        "prompt": prompt.fingerprint,
        "teacher": model_config_fingerprint(model),
        "teacher_weights": weights_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data": content_hash(data["id"], data["question"], data["choices"], data["answer"]),
        "prompts": content_hash([j["prompt"] for j in jobs], [j["contrast"] for j in jobs]),
    }


def _generate_backing_off(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, jobs: list[dict],
                          config: RationalizeConfig, stop_ids: list[int], rows: int,
                          prefix: SharedPrefix | None = None) -> tuple[list[str], int]:
    """The texts of ``jobs``, generated ``rows`` at a time; on out-of-memory the batch is generated again with
    half as many rows per forward (as ``accelerate.utils.find_executable_batch_size`` does), down to one.
    Returns the texts and the row count that fitted, which the next batches start from."""
    while True:
        try:
            texts: list[str] = []
            for start in range(0, len(jobs), rows):
                texts += _generate(model, tokenizer, jobs[start : start + rows], config, stop_ids, prefix)
            return texts, rows
        except Exception as exc:
            if not is_out_of_memory(exc) or rows == 1:
                raise
            rows = min(rows, len(jobs)) // 2 or 1
            logger.warning("Out of memory generating %d rows at a time; retrying this batch %d rows at a time.",
                           min(len(jobs), rows * 2), rows)
        # outside the except block: the traceback no longer holds the failed forward's tensors
        clear_device_cache(garbage_collection=True)


def _generate_batches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, jobs: list[dict],
                      batches: list[list[int]], todo: list[int], config: RationalizeConfig, stop_ids: list[int],
                      write: Callable[[int, list[str]], None], desc: str, show_progress: bool,
                      stop: StopRequest | None = None, resume_hint: str = "",
                      prefix: SharedPrefix | None = None) -> dict[int, list[str]]:
    """Generate the ``todo`` batches, handing each finished one to ``write(batch, texts)`` before the next.

    Every batch starts from ``prefix`` (the shared few-shot prefix's KV) when given. A batch that runs out of memory
    is generated again in smaller pieces (it is still written as one batch). Once ``stop`` is set (a signal),
    `RunInterrupted` is raised after the batch in progress is written.
    """
    texts: dict[int, list[str]] = {}
    rows = config.batch_size
    bar = tqdm(total=sum(len(batches[b]) for b in todo), unit="ex", desc=desc, disable=not show_progress)
    start = time.perf_counter()
    with _teacher_padding(tokenizer, model):
        for b in todo:
            batch_jobs = [jobs[k] for k in batches[b]]
            texts[b], rows = _generate_backing_off(model, tokenizer, batch_jobs, config, stop_ids, rows, prefix)
            write(b, texts[b])
            bar.update(len(batch_jobs))
            if stop and stop.signum is not None:
                bar.close()
                raise RunInterrupted(stop.signum, (
                    f"{desc}: stopped by {signal.Signals(stop.signum).name} after writing batch {b}; "
                    f"{len(texts)} batch(es) written by this run, {len(todo) - len(texts)} left. {resume_hint}"))
    bar.close()
    if todo:
        logger.info("%s: %d generations in %.1fs", desc, sum(len(batches[b]) for b in todo),
                    time.perf_counter() - start)
    return texts


def generate_rationales(
    dataset: datasets.Dataset,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: RationalizeConfig | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> datasets.Dataset:
    """Annotate a QA dataset with teacher rationales by SCOTT's contrastive decoding.

    Settings come from ``config`` (a `RationalizeConfig`); keyword arguments override its fields, e.g.
    ``generate_rationales(data, teacher, tok, task="cose", perturbation="wrong", alpha=0.5)``.

    Args:
        dataset: rows in the normalised schema (``id``, ``question``, ``choices``, ``answer``) or in the
            task's published format (normalised with ``scott_distill.tasks.normalize_rows``).
        model: the frozen teacher.
        tokenizer: the teacher's tokenizer. During generation a tokenizer without pad token pads with its eos
            token, on the left for a decoder-only teacher; the tokenizer is restored afterwards. Every prompt plus
            ``max_new_tokens`` must fit the teacher's context (checked up front: a ``ValueError`` names the row).
        config: the settings (`RationalizeConfig`); ``None`` is the defaults.
        output_dir: if given, every finished batch is appended to ``output_dir/shards``; a re-run with the
            same settings resumes and gives exactly the rows of one uninterrupted run; the result is saved to
            ``output_dir/dataset``. The settings and fingerprints of the data (choices included), the rendered
            prompts, the tokenizer and the teacher's config and weights are kept in ``run_config.json``; a re-run
            that differs in any of them is refused. Under ``torchrun`` each rank takes every world-size-th batch
            and rank 0 merges (see ``scott_distill.teacher.shards``).
            A killed run loses at most the batch in progress (see ``scott_distill.teacher.shards``). SIGTERM or
            SIGINT stops the run after the batch in progress is written and raises
            `scott_distill.interrupts.RunInterrupted` (a second signal: at once); a batch that runs out of
            accelerator memory is generated again in halves (fewer rows per forward from then on). The folder
            must be writable: checked before anything runs.
        show_progress: a progress bar per process.
        **overrides: fields of `RationalizeConfig` (``task``, ``perturbation``, ``alpha``, ``counterfactual``,
            ``batch_size``, ``max_new_tokens``, ``prompt``, ``use_chat_template``, ``plausibility_threshold``,
            ``seed``, ``use_fused``, ``reuse_prefix``) replacing ``config``'s.

    Returns:
        The dataset with ``rationale`` (the teacher's), ``human_rationale`` (the input's ``rationale``),
        ``contrast_answer`` and, with ``counterfactual``, ``counterfactual_answer`` / ``counterfactual_rationale``.
    """
    config = with_overrides(RationalizeConfig, config, overrides, "generate_rationales")
    if output_dir is not None:
        ensure_writable_dir(output_dir, "output_dir")
    data = normalize_rows(dataset, config.task)
    prompt = load_prompt(config.prompt or config.task)
    jobs = _jobs(data, prompt, config, tokenizer)
    prompt_ids, contrast_ids = _token_ids(tokenizer, jobs)
    _check_context(model, jobs, prompt_ids, contrast_ids, data, config)
    group = ProcessGroup.join(model)
    store = ShardStore(output_dir, group) if output_dir is not None else None
    if store is None and group.parts > 1:
        raise ValueError("Several processes need `output_dir` to exchange their shards.")
    batches = _batches([len(ids) for ids in prompt_ids], config.batch_size)
    done: dict[int, list[str]] = {}
    if store is not None:
        store.check_settings(_run_settings(config, prompt, model, tokenizer, data, jobs))
        if store.finished:
            logger.info("%s already holds the finished dataset; loading it.", output_dir)
            return store.load_dataset()
        done = store.resume()
        if done:
            logger.info("Resuming: %d of %d batches already written.", len(done), len(batches))
    todo = [b for b in range(len(batches)) if b % group.parts == group.part and b not in done]
    stop_ids = stop_token_ids_for(tokenizer, prompt.stop)
    desc = f"rationalize[{group.rank}]"
    prefix = _shared_prefix(model, prompt_ids, contrast_ids) if config.reuse_prefix and todo else None
    if store is None:
        done = _generate_batches(model, tokenizer, jobs, batches, todo, config, stop_ids, lambda b, t: None, desc,
                                 show_progress, prefix=prefix)
        return _assemble(data, jobs, batches, done, prompt, config)
    hint = (f"Every finished batch is kept in {output_dir}: run the same command (the same settings and "
            "output_dir) to resume.")
    with stop_on_signals(desc, hint) as stop, store.writer() as write:
        done.update(_generate_batches(model, tokenizer, jobs, batches, todo, config, stop_ids, write, desc,
                                      show_progress, stop, hint, prefix))
    return store.merge(len(batches), lambda texts: _assemble(data, jobs, batches, texts, prompt, config))

