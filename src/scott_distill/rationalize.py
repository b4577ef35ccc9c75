"""Dataset-scale teacher rationalization (SCOTT step 1): resumable, sharded across processes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .fused import contrastive_generate
from .processor import ContrastiveRationaleLogitsProcessor, input_device
from .tasks import load_prompt, normalize_rows
from .tasks.prompts import RationalePrompt

logger = logging.getLogger(__name__)

__all__ = ["PERTURBATIONS", "RationalizeSettings", "generate_rationales", "stop_token_ids_for"]

PERTURBATIONS = ("wrong", "empty", "none")
CONFIG_NAME = "run_config.json"
SHARD_DIR = "shards"
DATASET_DIR = "dataset"


@dataclass(frozen=True)
class RationalizeSettings:
    """Everything that determines the output rows; a resumed run must match it exactly."""

    task: str
    perturbation: str
    alpha: float
    counterfactual: bool
    batch_size: int
    max_new_tokens: int
    seed: int
    prompt: str
    use_chat_template: bool
    plausibility_threshold: float | None
    teacher: str
    data: str


def stop_token_ids_for(tokenizer: PreTrainedTokenizerBase, stop: str = "\n") -> list[int]:
    """Ids of every token whose text contains ``stop`` (a BPE vocabulary has many newline tokens)."""
    ids = [i for i in range(len(tokenizer)) if stop in tokenizer.decode([i])]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def _hash(*parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(list(part), default=str).encode())
    return h.hexdigest()[:16]


def _dist() -> tuple[int, int]:
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _pick_other(rng: random.Random, choices: list[str], exclude: str) -> str:
    return rng.choice([c for c in choices if c != exclude])


def _jobs(data: datasets.Dataset, prompt: RationalePrompt, s: RationalizeSettings, tokenizer) -> list[dict]:
    jobs = []
    for i, row in enumerate(data):
        q, cs, gold = row["question"], row["choices"], row["answer"]
        # one RNG per (seed, example, kind): the choice never depends on order, batching or rank
        rng = random.Random(f"{s.seed}:{row['id']}:perturb")
        contrast = {"wrong": _pick_other(rng, cs, gold), "empty": None, "none": None}[s.perturbation]

        def render(answer: str | None, q: str = q, cs: list[str] = cs) -> str:
            return prompt.render(q, cs, answer, tokenizer, s.use_chat_template)

        jobs.append({"row": i, "kind": "factual", "answer": gold, "contrast_answer": contrast,
                     "prompt": render(gold), "contrast": None if s.perturbation == "none" else render(contrast)})
        if s.counterfactual:
            cf = _pick_other(random.Random(f"{s.seed}:{row['id']}:counterfactual"), cs, gold)
            cf_contrast = {"wrong": gold, "empty": None, "none": None}[s.perturbation]
            jobs.append({"row": i, "kind": "counterfactual", "answer": cf, "contrast_answer": cf_contrast,
                         "prompt": render(cf), "contrast": None if s.perturbation == "none" else render(cf_contrast)})
    return jobs


def _batches(jobs: list[dict], tokenizer, batch_size: int) -> list[list[int]]:
    # longest first: padding is cut by grouping similar lengths, and an OOM shows up in the first batch
    lengths = [len(tokenizer(j["prompt"])["input_ids"]) for j in jobs]
    order = sorted(range(len(jobs)), key=lambda k: (-lengths[k], k))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _generate(model, tokenizer, jobs: list[dict], s: RationalizeSettings, stop_ids: list[int], use_fused: bool):
    prompts = [j["prompt"] for j in jobs]
    device = input_device(model)  # not model.device, which is `meta` for an accelerate-offloaded teacher
    if s.perturbation == "none":
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        out = model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                             pad_token_id=tokenizer.pad_token_id)
        new = out if model.config.is_encoder_decoder else out[:, enc["input_ids"].shape[1] :]
    elif use_fused:
        new = contrastive_generate(model, tokenizer, prompts, [j["contrast"] for j in jobs], alpha=s.alpha,
                                   max_new_tokens=s.max_new_tokens, do_sample=False, stop_token_ids=stop_ids,
                                   plausibility_threshold=s.plausibility_threshold)
    else:
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        con = tokenizer([j["contrast"] for j in jobs], return_tensors="pt", padding=True).to(device)
        proc = ContrastiveRationaleLogitsProcessor(model, con["input_ids"], con["attention_mask"], alpha=s.alpha,
                                                   stop_token_ids=stop_ids,
                                                   plausibility_threshold=s.plausibility_threshold)
        # the block frees the contrast cache as soon as generate returns; generate_kwargs() makes generate
        # stop at exactly the ids of the stop rule (model eos + stop_ids)
        with proc:
            out = model.generate(**enc, **proc.generate_kwargs(), max_new_tokens=s.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out if model.config.is_encoder_decoder else out[:, enc["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def _read_shards(shard_dir: Path) -> dict[int, list[str]]:
    """Finished batches from every shard file; a line cut short by a crash is ignored."""
    done: dict[int, list[str]] = {}
    for path in sorted(shard_dir.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["batch"]] = record["texts"]
    return done


def _repair(path: Path) -> None:
    """Drop a partial last line (a crash during a write) so that appends start on a fresh line."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


def _check_settings(output_dir: Path, settings: RationalizeSettings) -> None:
    path = output_dir / CONFIG_NAME
    current = asdict(settings)
    if path.exists():
        stored = json.loads(path.read_text())
        diff = {k: (stored.get(k), v) for k, v in current.items() if stored.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: stored {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{output_dir} holds a run with different settings ({details}). Use another output_dir, or "
                "delete it to start over."
            )
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=2))
        tmp.replace(path)


def _assemble(data: datasets.Dataset, jobs: list[dict], batches: list[list[int]], texts: dict[int, list[str]],
              prompt: RationalePrompt, s: RationalizeSettings) -> datasets.Dataset:
    by_job: dict[int, str] = {}
    for b, members in enumerate(batches):
        for job, text in zip(members, texts[b]):
            by_job[job] = prompt.clean(text)
    columns: dict[str, list] = {"human_rationale": data["rationale"], "rationale": [None] * len(data),
                                "contrast_answer": [None] * len(data)}
    if s.counterfactual:
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


def generate_rationales(
    dataset: datasets.Dataset,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str = "csqa",
    perturbation: str = "wrong",
    alpha: float = 0.5,
    counterfactual: bool = True,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    output_dir: str | os.PathLike | None = None,
    prompt: str | None = None,
    use_chat_template: bool = False,
    plausibility_threshold: float | None = None,
    seed: int = 0,
    use_fused: bool = True,
    show_progress: bool = True,
) -> datasets.Dataset:
    """Annotate a QA dataset with teacher rationales by SCOTT's contrastive decoding.

    Args:
        dataset: rows in the normalised schema (``id``, ``question``, ``choices``, ``answer``) or in the
            task's published format (normalised with ``scott_distill.tasks.normalize_rows``).
        model / tokenizer: the frozen teacher. A tokenizer without pad token gets the eos token (warning);
            decoder-only teachers are padded on the left.
        task: ``csqa``, ``strategyqa``, ``creak``, ``qasc`` or ``cose`` (picks the default prompt).
        perturbation: contrast prompts with a random ``"wrong"`` answer, an ``"empty"`` answer, or ``"none"``
            (plain greedy, the baseline).
        alpha: weight of the contrast branch.
        counterfactual: also rationalize a random wrong answer A' (contrast: the gold answer for
            ``"wrong"``, the empty answer for ``"empty"``), giving ``counterfactual_answer`` and
            ``counterfactual_rationale``.
        batch_size / max_new_tokens: generation batching (jobs sorted by prompt length) and budget.
        output_dir: if given, every finished batch is appended to ``output_dir/shards``; a re-run with the
            same settings resumes and gives exactly the rows of one uninterrupted run; the result is saved to
            ``output_dir/dataset``. Under ``torchrun`` each rank takes every world-size-th batch and rank 0
            merges.
        prompt: a task name, a prompt file or a template string (see ``scott_distill.tasks.load_prompt``).
        use_chat_template: render prompts through the tokenizer's chat template.
        plausibility_threshold: optional adaptive plausibility constraint of the contrastive scores.
        seed: seeds the wrong-answer choices (per example id, independent of batching and ranks).
        use_fused: both branches in one forward per step (``contrastive_generate``) instead of the processor.

    Returns:
        The dataset with ``rationale`` (the teacher's), ``human_rationale`` (the input's ``rationale``),
        ``contrast_answer`` and, with ``counterfactual``, ``counterfactual_answer`` / ``counterfactual_rationale``.
    """
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"`perturbation` must be one of {PERTURBATIONS}, got {perturbation!r}.")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("`batch_size` and `max_new_tokens` must be >= 1.")
    data = normalize_rows(dataset, task)
    if tokenizer.pad_token is None:
        logger.warning("The tokenizer has no pad token; using its eos token %r for padding.", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if not model.config.is_encoder_decoder and tokenizer.padding_side != "left":
        logger.warning("Decoder-only teacher: switching the tokenizer to left padding.")
        tokenizer.padding_side = "left"
    rationale_prompt = load_prompt(prompt or task)
    settings = RationalizeSettings(
        task=task, perturbation=perturbation, alpha=float(alpha), counterfactual=bool(counterfactual),
        batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed, prompt=rationale_prompt.fingerprint,
        use_chat_template=use_chat_template, plausibility_threshold=plausibility_threshold,
        teacher=f"{model.config.name_or_path}:{_hash([model.config.to_json_string(use_diff=False)])}",
        data=_hash(data["id"], data["question"], data["answer"]),
    )
    rank, world = _dist()
    # Tensor-parallel ranks (tp_plan="auto") hold slices of one teacher and must run the same batches
    # together: batches are split over the data-parallel groups only, and one rank per group writes.
    tp = int(getattr(model, "tp_size", None) or 1)
    part, parts, writer = rank // tp, world // tp, rank % tp == 0
    out_dir = Path(output_dir) if output_dir is not None else None
    if out_dir is not None:
        if rank == 0:
            _check_settings(out_dir, settings)
        _barrier()
        if rank != 0:
            _check_settings(out_dir, settings)
        if (out_dir / DATASET_DIR / "dataset_info.json").exists():
            logger.info("%s already holds the finished dataset; loading it.", out_dir)
            return datasets.load_from_disk(str(out_dir / DATASET_DIR))

    jobs = _jobs(data, rationale_prompt, settings, tokenizer)
    batches = _batches(jobs, tokenizer, batch_size)
    stop_ids = stop_token_ids_for(tokenizer, rationale_prompt.stop)
    texts: dict[int, list[str]] = {}
    shard_path = None
    if out_dir is not None:
        shard_dir = out_dir / SHARD_DIR
        shard_dir.mkdir(parents=True, exist_ok=True)
        shard_path = shard_dir / f"rank{part}.jsonl" if writer else None
        if writer:
            _repair(shard_path)
        texts = _read_shards(shard_dir)
        _barrier()  # every rank of a tensor-parallel group must see the same finished batches
        if texts:
            logger.info("Resuming: %d of %d batches already written.", len(texts), len(batches))
    todo = [b for b in range(len(batches)) if b % parts == part and b not in texts]
    bar = tqdm(total=sum(len(batches[b]) for b in todo), unit="ex", desc=f"rationalize[{rank}]",
               disable=not show_progress)
    start = time.perf_counter()
    with open(shard_path, "a") if shard_path else contextlib.nullcontext(io.StringIO()) as sink:
        for b in todo:
            batch_jobs = [jobs[k] for k in batches[b]]
            texts[b] = _generate(model, tokenizer, batch_jobs, settings, stop_ids, use_fused)
            sink.write(json.dumps({"batch": b, "texts": texts[b]}) + "\n")
            sink.flush()
            if shard_path:
                os.fsync(sink.fileno())
            bar.update(len(batch_jobs))
    bar.close()
    if todo:
        logger.info("rank %d: %d generations in %.1fs", rank, sum(len(batches[b]) for b in todo),
                    time.perf_counter() - start)
    if out_dir is None:
        if parts > 1:
            raise ValueError("Several processes need `output_dir` to exchange their shards.")
        return _assemble(data, jobs, batches, texts, rationale_prompt, settings)
    _barrier()
    if rank == 0:
        texts = _read_shards(out_dir / SHARD_DIR)
        missing = [b for b in range(len(batches)) if b not in texts]
        if missing:
            raise RuntimeError(f"Shards lack batches {missing[:10]}...; re-run to fill them in.")
        result = _assemble(data, jobs, batches, texts, rationale_prompt, settings)
        result.save_to_disk(str(out_dir / DATASET_DIR))
    _barrier()
    return datasets.load_from_disk(str(out_dir / DATASET_DIR))

