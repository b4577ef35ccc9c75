"""Dataset-scale teacher rationalization (SCOTT step 1): resumable, sharded across processes."""

from __future__ import annotations

import contextlib
import dataclasses
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
    teacher_weights: str
    tokenizer: str
    data: str
    prompts: str


def stop_token_ids_for(tokenizer: PreTrainedTokenizerBase, stop: str = "\n") -> list[int]:
    """Ids of every token whose text contains ``stop`` (a BPE vocabulary has many newline tokens)."""
    ids = [i for i in range(len(tokenizer)) if stop in tokenizer.decode([i])]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def _hash(*parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(list(part), default=str).encode())
    return h.hexdigest()[:16]


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything that decides token ids: the backend's vocabulary, merges, normalizer, pre-tokenizer,
    post-processor and added tokens (not its padding/truncation state, which every call changes)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    return _hash([type(tokenizer).__name__], [json.dumps(spec, sort_keys=True)])


@torch.no_grad()
def _weights_fingerprint(model: PreTrainedModel, samples_per_tensor: int = 256) -> str:
    """Cheap hash of the teacher's weights: name, dtype and shape of every parameter and buffer, and the values
    at ``samples_per_tensor`` evenly spaced positions of each. The cost grows with the number of tensors, not
    their size (a 20B model reads a few hundred thousand values); a changed checkpoint is caught unless it
    differs only at positions no sample touches."""
    h = hashlib.sha256()
    skipped = 0
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.device.type == "meta" or tensor.numel() == 0:  # offloaded: no values to read
            skipped += tensor.device.type == "meta"
            continue
        if hasattr(tensor, "full_tensor"):  # a tensor-parallel DTensor: every rank must hash the same values
            tensor = tensor.full_tensor()
        flat = tensor.detach().reshape(-1)
        n = min(samples_per_tensor, flat.numel())
        idx = torch.arange(n, device=flat.device) * (flat.numel() - 1) // max(n - 1, 1)
        h.update(flat[idx].double().cpu().numpy().tobytes())
    if skipped:
        logger.warning("%d teacher tensors are offloaded (meta device): the resume fingerprint covers their names "
                       "and shapes only.", skipped)
    return h.hexdigest()[:16]


def _config_fingerprint(model: PreTrainedModel) -> str:
    """The teacher's architecture and settings, without where it was loaded from: the same weights read from
    another folder (a moved checkpoint, another HF_HOME's GGUF conversion) resume the same run."""
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    return f"{model.config.model_type}:{_hash([json.dumps(config, sort_keys=True, default=str)])}"


def _context_limit(model: PreTrainedModel) -> tuple[int | None, str]:
    """The number of positions the teacher accepts, from its config (``None``: no absolute limit, e.g. T5)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value, attr
    return None, ""


def _check_context(model, tokenizer, jobs: list[dict], lengths: list[int], data: datasets.Dataset,
                   s: RationalizeSettings) -> None:
    """Refuse prompts that do not fit the teacher's context, before anything runs (a GPT-2 teacher would fail
    with an IndexError deep in its position embedding)."""
    limit, attr = _context_limit(model)
    if limit is None:
        return
    contrast = [j["contrast"] for j in jobs]
    with_contrast = [k for k, c in enumerate(contrast) if c is not None]
    contrast_lengths = dict(zip(with_contrast, (len(ids) for ids in tokenizer(
        [contrast[k] for k in with_contrast])["input_ids"]))) if with_contrast else {}
    encoder_decoder = model.config.is_encoder_decoder
    if encoder_decoder and s.max_new_tokens + 1 > limit:
        raise ValueError(f"max_new_tokens={s.max_new_tokens} exceeds the teacher's decoder limit of {limit} positions "
                         f"(config.{attr}).")
    too_long = []
    for k in range(len(jobs)):
        length = max(lengths[k], contrast_lengths.get(k, 0))
        needed = length if encoder_decoder else length + s.max_new_tokens
        if needed > limit:
            too_long.append((k, length, needed))
    if too_long:
        k, length, needed = too_long[0]
        row = jobs[k]["row"]
        budget = "" if encoder_decoder else f" + max_new_tokens={s.max_new_tokens} = {needed} positions"
        raise ValueError(
            f"Row {row} (id {data[row]['id']!r}): the {jobs[k]['kind']} prompt is {length} tokens{budget}, but the "
            f"teacher accepts at most {limit} positions (config.{attr}); {len(too_long)} of {len(jobs)} prompts do "
            "not fit. Use fewer exemplars (`prompt=` a shorter prompt file or template with fewer shots), a smaller "
            "`max_new_tokens`, or a teacher with a longer context."
        )


@contextlib.contextmanager
def _teacher_padding(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel):
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


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    # longest first: padding is cut by grouping similar lengths, and an OOM shows up in the first batch
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
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
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{path} is corrupted ({exc}); its shards cannot be matched to these settings. Delete {output_dir} "
                "to start over, or restore the file."
            ) from None
        if not isinstance(stored, dict):
            raise ValueError(f"{path} is corrupted (not a JSON object). Delete {output_dir} to start over.")
        diff = {k: (stored.get(k), v) for k, v in current.items() if stored.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: stored {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{output_dir} holds a run with different settings ({details}). Use another output_dir, or "
                "delete it to start over."
            )
    else:
        shards = [p for p in (output_dir / SHARD_DIR).glob("rank*.jsonl") if p.stat().st_size]
        if shards:
            raise ValueError(f"{output_dir} holds shards but no {CONFIG_NAME}: they cannot be matched to these "
                             "settings. Delete the folder to start over.")
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
        model / tokenizer: the frozen teacher. During generation a tokenizer without pad token pads with its eos
            token, on the left for a decoder-only teacher; the tokenizer is restored afterwards. Every prompt plus
            ``max_new_tokens`` must fit the teacher's context (checked up front: a ``ValueError`` names the row).
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
            ``output_dir/dataset``. The settings and fingerprints of the data (choices included), the rendered
            prompts, the tokenizer and the teacher's config and weights are kept in ``run_config.json``; a re-run
            that differs in any of them is refused. Under ``torchrun`` each rank takes every world-size-th batch
            and rank 0
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
    rationale_prompt = load_prompt(prompt or task)
    settings = RationalizeSettings(
        task=task, perturbation=perturbation, alpha=float(alpha), counterfactual=bool(counterfactual),
        batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed, prompt=rationale_prompt.fingerprint,
        use_chat_template=use_chat_template, plausibility_threshold=plausibility_threshold,
        teacher=_config_fingerprint(model),
        teacher_weights=_weights_fingerprint(model),
        tokenizer=_tokenizer_fingerprint(tokenizer),
        data=_hash(data["id"], data["question"], data["choices"], data["answer"]),
        prompts="",
    )
    jobs = _jobs(data, rationale_prompt, settings, tokenizer)
    settings = dataclasses.replace(settings, prompts=_hash([j["prompt"] for j in jobs], [j["contrast"] for j in jobs]))
    lengths = [len(ids) for ids in tokenizer([j["prompt"] for j in jobs])["input_ids"]]
    _check_context(model, tokenizer, jobs, lengths, data, settings)
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

    batches = _batches(lengths, batch_size)
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
    with _teacher_padding(tokenizer, model), open(shard_path, "a") if shard_path else contextlib.nullcontext(
            io.StringIO()) as sink:
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

