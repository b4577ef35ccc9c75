"""Counterfactual training of a self-consistent student: one forward, an alpha-weighted two-part loss."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from accelerate.utils.memory import clear_device_cache
from transformers import (
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..formats import StudentFormat
from ..interrupts import RunInterrupted, StopRequest, stop_on_signals
from ..memory import is_out_of_memory
from ..overrides import check_switches
from .collator import CounterfactualDataCollator
from .run_record import check_train_run

logger = logging.getLogger(__name__)

__all__ = [
    "CounterfactualTrainer",
    "CounterfactualTrainingArguments",
    "counterfactual_part_weights",
    "label_token_counts",
    "last_complete_checkpoint",
    "resume_checkpoint",
    "token_cross_entropy",
]

# the collator's bookkeeping tensors: never model inputs
_BOOKKEEPING_KEYS = ("is_counterfactual", "row_index")


@dataclass
class CounterfactualTrainingArguments(Seq2SeqTrainingArguments):
    """``Seq2SeqTrainingArguments`` plus SCOTT's counterfactual-training settings."""

    counterfactual_alpha: float = field(
        default=0.5,
        metadata={"help": "Objective = (1 - alpha) * factual + alpha * counterfactual (token means over the "
                          "training data). 0 = plain fine-tuning on the factual rows; 1 = counterfactual rows only."},
    )
    counterfactual_token_share: float | None = field(
        default=None,
        metadata={"help": "Share of counterfactual label tokens in the training data (in (0, 1)). Default: counted "
                          "once over train_dataset through the collator; required for an IterableDataset."},
    )
    # the student format (saved as scott_config.json); defaults are StudentFormat's own
    factual_tag: str = field(default=StudentFormat.factual_tag, metadata={"help": "Tag prefixed to factual "
                                                                            "sources/targets."})
    counterfactual_tag: str = field(default=StudentFormat.counterfactual_tag, metadata={"help": "Tag of "
                                                                                      "counterfactual rows."})
    answer_prefix: str = field(default=StudentFormat.answer_prefix, metadata={"help": "Text before the answer."})
    without_rationale: bool = field(default=StudentFormat.without_rationale, metadata={
        "help": "Answer-only baseline (no rationale)."})
    max_source_length: int = field(default=512, metadata={"help": "Source/prompt tokens (its end is cut)."})
    max_target_length: int = field(default=256, metadata={"help": "Target tokens (the rationale's end is cut)."})
    # the collator reads raw text columns: the Trainer must not drop them
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self) -> None:
        check_switches(self)  # before TrainingArguments reads a quoted "false" as on
        super().__post_init__()
        if not 0 <= self.counterfactual_alpha <= 1:
            raise ValueError(f"`counterfactual_alpha` must be in [0, 1], got {self.counterfactual_alpha!r}.")
        share = self.counterfactual_token_share
        if share is not None and not 0 < share < 1:
            raise ValueError(f"`counterfactual_token_share` must be in (0, 1) or None, got {share!r}.")

    @property
    def student_format(self) -> StudentFormat:
        """The format these arguments set (the fields named as ``StudentFormat``'s)."""
        return StudentFormat(**{f.name: getattr(self, f.name) for f in fields(StudentFormat)})


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, causal: bool, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy (float32, ``label_smoothing`` as in ``Trainer``'s ``LabelSmoother``) and the mask
    of label tokens; both aligned with ``labels`` (shifted by one for decoder-only students)."""
    if causal:  # decoder-only: token t predicts t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none",
        label_smoothing=label_smoothing,
    ).view(labels.shape)
    return ce, labels != -100


def label_token_counts(labels: torch.Tensor, is_counterfactual: torch.Tensor, causal: bool) -> torch.Tensor:
    """``[factual, counterfactual]`` label-token counts of a batch (the tokens the loss is computed on)."""
    valid = (labels[:, 1:] if causal else labels) != -100
    cf = is_counterfactual.to(valid.device).bool().unsqueeze(1)
    return torch.stack([(valid & ~cf).sum(), (valid & cf).sum()]).cpu()


def counterfactual_part_weights(alpha: float, counterfactual_share: float) -> tuple[float, float]:
    """Per-token weights ``(c_f, c_cf) = ((1 - alpha) / pi_f, alpha / pi_cf)``, ``pi`` the parts' token shares.

    A part with no tokens (share 0) gets weight 0: the missing part contributes nothing.
    """
    share_f = 1.0 - counterfactual_share
    return ((1.0 - alpha) / share_f if share_f > 0 else 0.0,
            alpha / counterfactual_share if counterfactual_share > 0 else 0.0)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` whose save finished, for ``resume_from_checkpoint=True``.

    The ``Trainer`` writes a checkpoint in place and its ``trainer_state.json`` last; a process killed during a
    save leaves a folder without one (or with one cut short), which ``get_last_checkpoint`` would still pick.
    Such folders are skipped with a warning. ``None`` when there is no complete checkpoint.
    """
    found = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        step = name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if step.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(step), os.path.join(output_dir, name)))
    for _, folder in sorted(found, reverse=True):
        try:
            with open(os.path.join(folder, TRAINER_STATE_NAME)) as f:
                json.load(f)
        except (OSError, ValueError):
            logger.warning("%s is incomplete (no readable %s: its save was cut short); resuming from an older "
                           "checkpoint.", folder, TRAINER_STATE_NAME)
            continue
        return folder
    return None


def resume_checkpoint(args: CounterfactualTrainingArguments) -> str | None:
    """The checkpoint to resume from: ``--resume_from_checkpoint PATH``; ``false``: none; unset or ``true``: the
    newest complete ``checkpoint-N`` in ``output_dir`` (``None`` when there is none: a fresh start)."""
    value = args.resume_from_checkpoint
    # a YAML `resume_from_checkpoint: false` arrives as the bool (config values are not converted by argparse)
    if value is False or (isinstance(value, str) and value.strip().lower() in ("false", "no", "0")):
        return None
    if value is None or value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "1")):
        checkpoint = last_complete_checkpoint(args.output_dir or ".")
        if checkpoint is not None:
            logger.info("Resuming from %s, the newest complete checkpoint in %s (resume_from_checkpoint=false "
                        "starts over).", checkpoint, args.output_dir)
        return checkpoint
    return str(value)


def _rows_of(inputs: dict[str, Any]) -> int:
    """Dataset rows in a collated batch (a rationale row gives two examples)."""
    if "row_index" in inputs:
        return int(inputs["row_index"].max()) + 1 if len(inputs["row_index"]) else 0
    return len(inputs["input_ids"])


def _round_up(width: int, multiple: int | None) -> int:
    return -(-width // multiple) * multiple if multiple else width


def row_slice(inputs: dict[str, Any], start: int, stop: int, causal: bool,
              pad_to_multiple_of: int | None = None, trim: bool = True) -> dict[str, Any]:
    """The examples of dataset rows ``start:stop`` of a batch built by `CounterfactualDataCollator`, with the
    padding those rows alone would get (``trim``): the same tensors as collating just those rows.

    Its batches are padded on the right, and every target ends with a label token (EOS), so a piece's width
    is its longest attended source (``attention_mask``) and, for encoder-decoder students, its longest target
    (the last label that is not ``-100``). ``trim=False`` keeps the batch's width (another collator's padding).
    """
    rows = inputs["row_index"] if "row_index" in inputs else torch.arange(len(inputs["input_ids"]))
    keep = ((rows >= start) & (rows < stop)).nonzero().flatten()
    first, last = int(keep[0]), int(keep[-1]) + 1  # the collator lays out the examples of a row together
    piece = {k: (v[first:last] if isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == len(rows) else v)
             for k, v in inputs.items()}
    if "row_index" in piece:
        piece["row_index"] = piece["row_index"] - start
    if not trim:
        return piece
    source = _round_up(int(piece["attention_mask"].any(0).nonzero().max()) + 1, pad_to_multiple_of)
    source_keys = ("input_ids", "attention_mask") + (("labels",) if causal else ())
    for k in source_keys:
        piece[k] = piece[k][:, :source]
    if not causal:
        target = _round_up(int((piece["labels"] != -100).any(0).nonzero().max()) + 1, pad_to_multiple_of)
        for k in ("labels", "decoder_input_ids", "decoder_attention_mask"):
            if k in piece:
                piece[k] = piece[k][:, :target]
    return piece


class _SaveAndStopOnSignal(TrainerCallback):
    """After the optimizer step in progress when a stop signal came (on any process): save a checkpoint and stop.

    Checked at every step's end and after every evaluation and checkpoint save: a signal during the evaluation
    or the save that follows a step stops at that step (its checkpoint), not after one more step.
    """

    def __init__(self, request: StopRequest) -> None:
        self.request = request

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:
        return self._stop_if_requested(args, control)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:
        # every process evaluates, so the all-reduce in `_requested` is reached by all of them
        return self._stop_if_requested(args, control)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> TrainerControl:
        # a signal during a checkpoint's save: that checkpoint is the one to stop at (every process saves)
        if self._requested(args):
            control.should_training_stop = True
        return control

    def _stop_if_requested(self, args: TrainingArguments, control: TrainerControl) -> TrainerControl:
        if self._requested(args):
            control.should_save = True
            control.should_training_stop = True
        return control

    def _requested(self, args: TrainingArguments) -> bool:
        requested = self.request.signum is not None
        if args.world_size > 1 and torch.distributed.is_initialized():
            # every process must stop after the same step: one that stops earlier leaves the others waiting
            flag = torch.tensor([self.request.signum or 0], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
            if requested and self.request.signum is None:
                self.request.signum = int(flag.item())
        return requested


class CounterfactualTrainer(Seq2SeqTrainer):
    """``Seq2SeqTrainer`` with SCOTT's counterfactual objective.

    The objective is ``(1 - alpha)`` times the mean token cross-entropy over the factual label tokens of the
    training data plus ``alpha`` times the mean over its counterfactual label tokens. Each step optimises
    an unbiased-by-construction share of it: every label token ``t`` of an accumulation window gets the
    weight ``c_t / N_window`` with ``c_f = (1 - alpha) / pi_f`` and ``c_cf = alpha / pi_cf`` (``pi`` the
    parts' shares of label tokens in the training data, counted once before training) and ``N_window``
    the window's label tokens over all processes. So alpha holds whatever the batch holds (a
    counterfactual-only batch at ``alpha=0`` gives no gradient), a token's weight never depends on which
    rows share its batch, and a window whose composition matches the data's gives exactly
    ``(1 - alpha) * mean_factual + alpha * mean_counterfactual``. Accumulation and DDP stay exact: the
    window's counts are summed over micro-batches and processes, as ``Trainer`` does for its own loss.

    Logs ``loss_factual`` and ``loss_counterfactual`` (token means, gathered over processes) with every
    training ``loss``; ``evaluate`` / ``predict`` return them as ``eval_*`` / ``test_*`` metrics.
    ``label_smoothing_factor`` smooths both parts. Every save (``save_model``, checkpoints, ``push_to_hub``)
    writes ``scott_config.json`` with the student's text format next to the weights.
    Works for encoder-decoder and decoder-only students, and on ``peft`` (LoRA) models.

    Long runs: ``resume_from_checkpoint=True`` takes the newest *complete* checkpoint. SIGTERM / SIGINT during
    ``train`` save a checkpoint after the optimizer step in progress and raise
    `scott_distill.interrupts.RunInterrupted` (a second signal: at once). Out of memory in a training step redoes
    that step with half as many rows per forward (`training_step`), the same as a smaller batch with more
    gradient accumulation.

    Args:
        model: the student (``PreTrainedModel``, seq2seq or decoder-only; a ``peft`` model is fine).
        args: the training arguments, with SCOTT's settings (``counterfactual_alpha``, the student format,
            truncation lengths).
        data_collator: defaults to a ``CounterfactualDataCollator`` built from ``args`` and
            ``processing_class``; a given one must use the format of ``args`` (or ``args`` the default one).
        train_dataset: rationale rows (``generate_rationales`` output) and/or flat rows with
            ``is_counterfactual`` (see ``CounterfactualDataCollator``).
        eval_dataset: rows of the same kinds, for per-part evaluation losses.
        processing_class: the student's fast tokenizer (required without a ``data_collator``).
        model_init: as for ``Seq2SeqTrainer``.
        compute_loss_func: not supported (``ValueError``): the loss is the counterfactual objective.
        compute_metrics: as for ``Seq2SeqTrainer``.
        callbacks: as for ``Seq2SeqTrainer``.
        optimizers: as for ``Seq2SeqTrainer``.
        preprocess_logits_for_metrics: as for ``Seq2SeqTrainer``.

    Examples:

    ```python
    >>> from scott_distill import CounterfactualTrainer, CounterfactualTrainingArguments
    >>> args = CounterfactualTrainingArguments(output_dir="student", counterfactual_alpha=0.5)  # doctest: +SKIP
    >>> CounterfactualTrainer(model=student, args=args, train_dataset=rationales,
    ...                       processing_class=tokenizer).train()  # doctest: +SKIP

    ```
    """

    _tag_names = ["scott-distill", "counterfactual-training"]
    args: CounterfactualTrainingArguments

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | None = None,
        args: CounterfactualTrainingArguments | None = None,
        data_collator: Callable[[list[Any]], dict[str, Any]] | None = None,
        train_dataset: torch.utils.data.Dataset | datasets.Dataset | None = None,
        eval_dataset: torch.utils.data.Dataset | datasets.Dataset | dict[str, Any] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        model_init: Callable[[], PreTrainedModel] | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(args, CounterfactualTrainingArguments):
            raise ValueError(f"`args` must be a CounterfactualTrainingArguments, got {type(args).__name__}.")
        if compute_loss_func is not None:
            # compute_loss is the counterfactual objective: a custom loss function would be silently unused
            raise ValueError("`compute_loss_func` is not supported: CounterfactualTrainer's loss is SCOTT's "
                             "objective (counterfactual_alpha, label_smoothing_factor). Subclass it and override "
                             "`compute_loss` for another objective.")
        own_collator = data_collator is None
        self._own_collator = own_collator  # read by call_model_init, which Trainer calls from its own __init__ too
        if own_collator:
            if processing_class is None:
                raise ValueError("Pass `processing_class=tokenizer` (or a `data_collator`).")
            data_collator = self._default_collator(processing_class, model, args)
        super().__init__(
            model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, model_init=model_init,
            compute_loss_func=compute_loss_func, compute_metrics=compute_metrics, callbacks=callbacks,
            optimizers=optimizers, preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        if own_collator and model is None and not self._is_causal(self.model):
            # model_init: the student exists only now (Trainer made it). An encoder-decoder one is needed by its
            # collator (decoder inputs); a decoder-only one is not, and the collator would keep that first model
            # alive after train() makes the next one
            assert processing_class is not None  # checked above for our own collator
            self.data_collator = self._default_collator(processing_class, self.model, args)
        self.student_format = self._resolve_format()
        if self.args.predict_with_generate and self._is_causal(self.model):
            raise ValueError(
                "`predict_with_generate=True` is not supported for decoder-only students: their batches hold the "
                "target after the prompt, so `generate` would continue the answer. Evaluate them with "
                "`scott_distill.student.evaluation.evaluate_student` (or `predict`), which generates from the "
                "prompt."
            )
        self.counterfactual_token_share: float | None = self.args.counterfactual_token_share
        # [sum_f, n_f, sum_cf, n_cf] since the last log (train) / over the running evaluation loop (eval)
        self._train_parts = torch.zeros(4, dtype=torch.float64)
        self._eval_parts: torch.Tensor | None = None
        # dataset rows per forward in training; set (halved) by an out-of-memory error, None: the whole micro-batch
        self.rows_per_forward: int | None = None
        # our loss is already normalised by the window's token counts
        self.loss_is_scaled_for_ga = True
        self._warn_without_counterfactual_rows(self.train_dataset)
        add_model_tags = getattr(self.model, "add_model_tags", None)
        if callable(add_model_tags):  # shown on the model card of a push (as TRL's trainers do)
            add_model_tags(self._tag_names)

    # -- set-up ---------------------------------------------------------------------------------------

    def call_model_init(self, trial: Any = None) -> torch.nn.Module:
        """``Trainer.call_model_init``; our own collator of an encoder-decoder student is rebuilt with each new model
        (``train`` makes one per run and per hyperparameter-search trial): its decoder inputs come from that model,
        and keeping the first one would hold it in memory beside the next."""
        model = super().call_model_init(trial)
        collator = getattr(self, "data_collator", None)
        if (getattr(self, "_own_collator", False) and isinstance(collator, CounterfactualDataCollator)
                and collator.model is not None and not self._is_causal(model)):
            self.data_collator = self._default_collator(collator.tokenizer, model, self.args)
        return model

    @staticmethod
    def _default_collator(tokenizer: PreTrainedTokenizerBase, model: Any,
                          args: CounterfactualTrainingArguments) -> CounterfactualDataCollator:
        return CounterfactualDataCollator(tokenizer, model=model, format=args.student_format,
                                          max_source_length=args.max_source_length,
                                          max_target_length=args.max_target_length)

    def _resolve_format(self) -> StudentFormat:
        """The format the student learns: the collator's when it is ours (args must agree or be default)."""
        fmt = self.args.student_format
        if isinstance(self.data_collator, CounterfactualDataCollator) and self.data_collator.format != fmt:
            if fmt != StudentFormat():
                raise ValueError(
                    f"The data_collator's format {self.data_collator.format} differs from the one in `args` {fmt}; "
                    "set the tags and answer prefix in one place."
                )
            return self.data_collator.format
        return fmt

    def _warn_without_counterfactual_rows(self, dataset: Any) -> None:
        names = getattr(dataset, "column_names", None)
        if self.args.counterfactual_alpha == 0 or not names:
            return
        needed = ["counterfactual_answer"] + ([] if self.args.without_rationale else ["counterfactual_rationale"])
        missing = [c for c in needed if c not in names]
        if "is_counterfactual" not in names and missing:
            logger.warning(
                "counterfactual_alpha=%s but train_dataset has no counterfactual rows: it lacks the columns %s "
                "(and `is_counterfactual`). Only the factual part is trained, weighted by (1 - alpha) = %s, "
                "i.e. plain fine-tuning with a smaller loss. Columns: %s.",
                self.args.counterfactual_alpha, missing, 1 - self.args.counterfactual_alpha, names,
            )

    def _is_causal(self, model: Any) -> bool:
        config = getattr(self.accelerator.unwrap_model(model), "config", None)
        return not bool(getattr(config, "is_encoder_decoder", False))

    def count_label_tokens(self, dataset: Any, batch_rows: int = 256) -> torch.Tensor:
        """``[factual, counterfactual]`` label tokens of ``dataset`` as the training collator builds them."""
        if isinstance(dataset, torch.utils.data.IterableDataset) or isinstance(dataset, datasets.IterableDataset) \
                or not hasattr(dataset, "__len__"):
            raise ValueError(
                "train_dataset has no length, so the share of counterfactual label tokens cannot be counted; pass "
                "`counterfactual_token_share` in CounterfactualTrainingArguments."
            )
        causal = self._is_causal(self.model)
        counts = torch.zeros(2, dtype=torch.long)
        for start in range(0, len(dataset), batch_rows):
            stop = min(start + batch_rows, len(dataset))
            if isinstance(dataset, datasets.Dataset):
                chunk = dataset[start:stop]
                rows: list[dict[str, Any]] = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
            else:
                rows = [dataset[i] for i in range(start, stop)]
            batch = self.data_collator(rows)
            counts += label_token_counts(batch["labels"], batch["is_counterfactual"], causal)
        return counts

    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs: Any) -> Any:
        if self.counterfactual_token_share is None and self.train_dataset is not None:
            before = dict(getattr(self.data_collator, "truncation_counts", {}))
            n_f, n_cf = (int(c) for c in self.count_label_tokens(self.train_dataset))
            self.counterfactual_token_share = n_cf / max(n_f + n_cf, 1)
            logger.info("label tokens in train_dataset: %d factual, %d counterfactual (share %.4f)",
                        n_f, n_cf, self.counterfactual_token_share)
            if n_cf == 0 and self.args.counterfactual_alpha > 0:
                logger.warning("train_dataset holds no counterfactual label tokens: counterfactual_alpha=%s only "
                               "scales the factual loss by %s.", self.args.counterfactual_alpha,
                               1 - self.args.counterfactual_alpha)
            if n_f == 0 and self.args.counterfactual_alpha < 1:
                logger.warning("train_dataset holds no factual label tokens: only counterfactual answers are trained.")
            after = getattr(self.data_collator, "truncation_counts", {})
            counts = {k: v - before.get(k, 0) for k, v in after.items()}  # this pass over train_dataset only
            if counts.get("sources_cut") or counts.get("rationales_cut"):
                logger.warning("Truncation over train_dataset: %d of %d sources lost their end (max_source_length), "
                               "%d of %d targets lost the end of their rationale (max_target_length).",
                               counts.get("sources_cut", 0), counts.get("sources", 0),
                               counts.get("rationales_cut", 0), counts.get("targets", 0))
        if resume_from_checkpoint is True:  # the Trainer would take the newest folder, even one cut short
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir or ".")
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint in output_dir={self.args.output_dir!r} to resume from "
                                 "(resume_from_checkpoint=True); start without it or pass a checkpoint folder.")
        check_train_run(self, str(resume_from_checkpoint) if resume_from_checkpoint else None)
        self._unprepare_evaluation_only_model()
        output_dir = self.args.output_dir or "."
        hint = (f"Resume from the newest complete checkpoint in {output_dir}: `resume_from_checkpoint=True`, or run "
                "the same `scott-distill train` / `scott-distill run` command again.")
        with stop_on_signals("train", hint, "after the optimizer step in progress, with a checkpoint") as stop:
            callback = _SaveAndStopOnSignal(stop)
            self.add_callback(callback)
            try:
                result = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                       ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)
            finally:
                self.remove_callback(callback)
        if stop.signum is not None:
            checkpoint = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            if not os.path.isdir(checkpoint):  # the signal came after the last step's end: save it now
                self._save_checkpoint(self.model_wrapped, trial=None)
            raise RunInterrupted(stop.signum, (
                f"train: stopped by {signal.Signals(stop.signum).name} after optimizer step {self.state.global_step} "
                f"of {self.state.max_steps}; checkpoint saved to {checkpoint}. Resume from it with "
                f"`resume_from_checkpoint={checkpoint!r}` (or `True`: the newest complete checkpoint); the "
                "`scott-distill train` and `scott-distill run` commands resume from it by themselves."),
                checkpoint=checkpoint)
        return result

    def _unprepare_evaluation_only_model(self) -> None:
        """Let ``train`` wrap a model that ``evaluate`` or ``predict`` prepared first, under several processes.

        transformers 5.24's evaluation loop prepares a model not yet trained with accelerate 1.15's
        ``prepare_model(evaluation_mode=True)``, which marks it prepared without putting it in
        ``DistributedDataParallel``. ``train`` then gets the bare model back from ``prepare``: each process trains on
        its own rows, gradients are never all-reduced and process 0 saves only its own updates, silently. Undoing the
        mark (and the mixed-precision forward wrapper that prepare adds) lets ``train`` prepare it for training.
        With ``torch_compile`` the evaluation also left ``model_wrapped`` the compiled module around the model (not a
        process wrapper): it goes too, and ``train`` compiles and wraps the model again.
        """
        model, wrapped = self.model, self.model_wrapped
        compiled = getattr(wrapped, "_orig_mod", None) is model  # torch.compile's OptimizedModule
        if (model is None or self.args.world_size <= 1 or (wrapped is not model and not compiled)
                or not model.__dict__.get("_is_accelerate_prepared", False)
                or getattr(self, "is_distributed_loading_by_transformers", False)):
            return
        logger.info("train: the model was prepared for evaluation only (evaluate or predict before train); "
                    "preparing it again for training under %d processes", self.args.world_size)
        del model._is_accelerate_prepared
        original_forward = model.__dict__.pop("_original_forward", None)
        if original_forward is not None:
            model.forward = original_forward
        self.accelerator._models = [m for m in self.accelerator._models if m is not model and m is not wrapped]
        self.model_wrapped = model

    # -- out of memory ----------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        # the optimizer step's micro-batches and the per-part sums before them: an out-of-memory error redoes them
        self._window = (batch_samples, self._train_parts.clone())
        return batch_samples, num_items_in_batch

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """One micro-batch, ``rows_per_forward`` dataset rows per forward and backward.

        On out of memory the optimizer step in progress starts again with half as many rows per forward (and from
        then on): its gradients so far are zeroed (a backward cut short leaves part of its gradient) and its
        earlier micro-batches done again. That is the same as halving ``per_device_train_batch_size`` and
        doubling ``gradient_accumulation_steps``: the loss is normalised by the step's label tokens
        (``num_items_in_batch``), not the micro-batch's, and the same rows make the step, each once.
        """
        window, parts = getattr(self, "_window", ([], None))
        position = next((i for i, b in enumerate(window) if b is inputs), None)
        redo: list[dict[str, Any]] = []
        while True:
            try:
                for earlier in redo:
                    self._training_step_in_pieces(model, earlier, num_items_in_batch)
                return self._training_step_in_pieces(model, inputs, num_items_in_batch)
            except Exception as exc:
                rows = min(self.rows_per_forward or _rows_of(inputs), _rows_of(inputs))
                if (not is_out_of_memory(exc) or rows <= 1 or position is None or num_items_in_batch is None
                        or self.args.world_size > 1):
                    raise
                self.rows_per_forward = rows // 2
                logger.warning("Out of memory with %d rows per forward; redoing optimizer step %d with %d rows per "
                               "forward (the same rows and loss: like per_device_train_batch_size=%d with "
                               "gradient_accumulation_steps x %d).", rows, self.state.global_step + 1,
                               self.rows_per_forward, self.rows_per_forward, rows // self.rows_per_forward)
            # outside the except block: the traceback no longer holds the failed forward's tensors
            clear_device_cache(garbage_collection=True)
            model.zero_grad()
            assert parts is not None
            self._train_parts.copy_(parts)
            redo = window[:position]

    def _training_step_in_pieces(self, model: torch.nn.Module, inputs: dict[str, Any],
                                 num_items_in_batch: torch.Tensor | int | None) -> torch.Tensor:
        rows = _rows_of(inputs)
        if self.rows_per_forward is None or self.rows_per_forward >= rows:
            return super().training_step(model, inputs, num_items_in_batch)
        collator = self.data_collator
        ours = isinstance(collator, CounterfactualDataCollator)
        multiple = collator.pad_to_multiple_of if isinstance(collator, CounterfactualDataCollator) else None
        causal = self._is_causal(model)
        loss = torch.zeros((), device=self.args.device)
        for start in range(0, rows, self.rows_per_forward):
            piece = row_slice(inputs, start, start + self.rows_per_forward, causal, multiple, trim=ours)
            # each piece's loss is normalised by the whole step's label tokens: the pieces add up to the batch's
            loss = loss + super().training_step(model, piece, num_items_in_batch)
        return loss

    # -- loss -----------------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Label tokens of the accumulation window (all processes): the normaliser ``N_W`` of the loss.

        The parts are not normalised by their own window counts (that would tie alpha to the batch's
        composition) but by the training data's shares, counted once in ``train``.
        """
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        causal = self._is_causal(self.model)
        total = torch.stack([label_token_counts(b["labels"], b["is_counterfactual"], causal).sum()
                             for b in batch_samples]).sum().to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total.unsqueeze(0)).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        is_cf = inputs.pop("is_counterfactual").bool()
        row_index = inputs.pop("row_index", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        ce, valid = token_cross_entropy(outputs.logits, labels, self._is_causal(model),
                                        self.args.label_smoothing_factor)
        cf = is_cf.to(valid.device).unsqueeze(1)
        n_f, n_cf = (valid & ~cf).sum(), (valid & cf).sum()
        training = model.training and num_items_in_batch is not None
        # training: normalise by the whole window's (and all processes') token count; else by this batch's
        total = torch.as_tensor(num_items_in_batch, device=ce.device) if training else n_f + n_cf
        share = self.counterfactual_token_share
        if share is None:  # no training data was counted (evaluate-only trainer): this batch's own composition
            share = float(n_cf) / max(float(n_f + n_cf), 1.0)
        c_f, c_cf = counterfactual_part_weights(self.args.counterfactual_alpha, share)
        weights = torch.where(cf, c_cf, c_f) * valid
        loss = (ce * weights).sum() / total.clamp(min=1)
        if training and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size  # DDP averages gradients over processes
        self._record_parts(ce.detach(), valid, is_cf, row_index, model.training)
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    # -- per-part metrics -------------------------------------------------------------------------------

    def _record_parts(self, ce: torch.Tensor, valid: torch.Tensor, is_cf: torch.Tensor,
                      row_index: torch.Tensor | None, training: bool) -> None:
        """Accumulate ``[sum_f, n_f, sum_cf, n_cf]`` over processes for the logged per-part losses."""
        if not training and self._eval_parts is None:
            return  # a direct compute_loss call outside train/evaluate/predict
        with torch.no_grad():
            tok_sum, tok_n = (ce * valid).sum(1).double(), valid.sum(1).double()
            cf = is_cf.to(tok_sum.device)
            per_example = torch.stack([tok_sum * ~cf, tok_n * ~cf, tok_sum * cf, tok_n * cf], dim=1)
            if training:
                # per-process sums; plain `gather`: the Trainer prefetches the accumulation window, so
                # `gather_for_metrics` could see end_of_dataloader while an earlier micro-batch is processed
                parts = self.accelerator.gather(per_example.sum(0, keepdim=True)).sum(0)
                self._train_parts += parts.cpu()
            else:
                # per dataset row (a rationale row holds two examples), so that `gather_for_metrics` drops
                # exactly the rows duplicated to even out the last batch across processes
                if row_index is None:
                    row_index = torch.arange(len(per_example))
                row_index = row_index.to(per_example.device)
                per_row = torch.zeros(int(row_index.max()) + 1, 4, dtype=per_example.dtype,
                                      device=per_example.device).index_add_(0, row_index, per_example)
                self._eval_parts += self.accelerator.gather_for_metrics(per_row).sum(0).cpu()

    @staticmethod
    def _part_means(parts: torch.Tensor, prefix: str = "") -> dict[str, float]:
        sum_f, n_f, sum_cf, n_cf = parts.tolist()
        out = {}
        if n_f:
            out[f"{prefix}loss_factual"] = sum_f / n_f
        if n_cf:
            out[f"{prefix}loss_counterfactual"] = sum_cf / n_cf
        return out

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        # a fresh accumulator per loop: `predict` never leaks into the next `evaluate`
        self._eval_parts = torch.zeros(4, dtype=torch.float64)
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
            output.metrics.update(self._part_means(self._eval_parts, f"{metric_key_prefix}_"))
        finally:
            self._eval_parts = None
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                           **gen_kwargs)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs).detach()
        generation_inputs = {k: v for k, v in inputs.items() if k not in _BOOKKEEPING_KEYS}
        _, tokens, labels = super().prediction_step(model, generation_inputs, prediction_loss_only,
                                                    ignore_keys=ignore_keys, **gen_kwargs)
        return loss, tokens, labels

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: the per-part token means since the previous one
            logs.update(self._part_means(self._train_parts))
            self._train_parts.zero_()
        super().log(logs, start_time)

    # -- saving ---------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # every save path (save_model, checkpoints, push_to_hub) goes through _save
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            directory = output_dir if output_dir is not None else self.args.output_dir
            assert directory is not None  # TrainingArguments fills in a default output_dir
            os.makedirs(directory, exist_ok=True)
            self.student_format.save_pretrained(directory)
