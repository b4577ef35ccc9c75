"""Counterfactual training of a self-consistent student: one forward, an alpha-weighted two-part loss."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from .collator import CounterfactualDataCollator

__all__ = ["CounterfactualTrainer", "CounterfactualTrainingArguments", "counterfactual_loss_parts"]


@dataclass
class CounterfactualTrainingArguments(Seq2SeqTrainingArguments):
    """``Seq2SeqTrainingArguments`` plus SCOTT's counterfactual-training settings."""

    counterfactual_alpha: float = field(
        default=0.5,
        metadata={"help": "Loss = (1 - alpha) * factual + alpha * counterfactual (token means). 0 = plain fine-tuning."},
    )
    factual_tag: str = field(default="[factual]", metadata={"help": "Tag prefixed to factual sources/targets."})
    counterfactual_tag: str = field(default="[counterfactual]", metadata={"help": "Tag of counterfactual rows."})
    answer_prefix: str = field(default="So the answer is", metadata={"help": "Text before the answer."})
    without_rationale: bool = field(default=False, metadata={"help": "Answer-only baseline (no rationale)."})
    max_source_length: int = field(default=512)
    max_target_length: int = field(default=256)
    # the collator reads raw text columns: the Trainer must not drop them
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.counterfactual_alpha <= 1:
            raise ValueError(f"`counterfactual_alpha` must be in [0, 1], got {self.counterfactual_alpha!r}.")


def counterfactual_loss_parts(
    logits: torch.Tensor, labels: torch.Tensor, is_counterfactual: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed token cross-entropy and token counts of factual and counterfactual label tokens.

    Returns ``(sum_factual, n_factual, sum_counterfactual, n_counterfactual)``.
    """
    if causal:  # decoder-only: token t predicts t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    valid = labels != -100
    cf = is_counterfactual.to(labels.device).bool().unsqueeze(1)
    fact_tok, cf_tok = valid & ~cf, valid & cf
    return (ce * fact_tok).sum(), fact_tok.sum(), (ce * cf_tok).sum(), cf_tok.sum()


class CounterfactualTrainer(Seq2SeqTrainer):
    """``Seq2SeqTrainer`` with SCOTT's counterfactual objective.

    One forward over the mixed batch; the loss is ``(1 - alpha)`` times the mean token cross-entropy over
    factual label tokens plus ``alpha`` times the mean over counterfactual label tokens (a batch with rows
    of only one kind uses that kind alone). The means are taken over all label tokens of the gradient-
    accumulation window (and of all processes when ``average_tokens_across_devices``), so accumulation and
    DDP give the gradient of one big batch. Logs ``loss_factual`` and ``loss_counterfactual``.
    Works for encoder-decoder and decoder-only students, and on ``peft`` (LoRA) models.

    If ``data_collator`` is not given, a ``CounterfactualDataCollator`` is built from ``args``.
    """

    args: CounterfactualTrainingArguments

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        targs = kwargs.get("args", args[1] if len(args) > 1 else None)
        if not isinstance(targs, CounterfactualTrainingArguments):
            raise ValueError("`args` must be a CounterfactualTrainingArguments.")
        if kwargs.get("data_collator") is None:
            tok = kwargs.get("processing_class")
            model = kwargs.get("model", args[0] if args else None)
            if tok is None:
                raise ValueError("Pass `processing_class=tokenizer` (or a `data_collator`).")
            kwargs["data_collator"] = CounterfactualDataCollator(
                tok, model=model, max_source_length=targs.max_source_length,
                max_target_length=targs.max_target_length, factual_tag=targs.factual_tag,
                counterfactual_tag=targs.counterfactual_tag, answer_prefix=targs.answer_prefix,
                without_rationale=targs.without_rationale,
            )
        super().__init__(*args, **kwargs)
        self._part_metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        # our loss is already normalised by the window's token counts
        self.loss_is_scaled_for_ga = True

    def _is_causal(self, model: torch.nn.Module) -> bool:
        config = getattr(self.accelerator.unwrap_model(model), "config", None)
        return not bool(getattr(config, "is_encoder_decoder", False))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Factual and counterfactual label-token counts over the accumulation window (all processes)."""
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        causal = self._is_causal(self.model)
        counts = torch.zeros(2, dtype=torch.long)
        for b in batch_samples:
            labels = b["labels"][:, 1:] if causal else b["labels"]
            valid = labels != -100
            cf = b["is_counterfactual"].bool().unsqueeze(1).to(valid.device)
            counts += torch.stack([(valid & ~cf).sum(), (valid & cf).sum()]).cpu()
        counts = counts.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.gather(counts.unsqueeze(0)).sum(0)
        return counts

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        is_cf = inputs.pop("is_counterfactual")
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        sum_f, n_f, sum_cf, n_cf = counterfactual_loss_parts(outputs.logits, labels, is_cf, self._is_causal(model))
        training = model.training and num_items_in_batch is not None
        if training:  # normalise by the whole window's (and all processes') token counts
            tot_f, tot_cf = num_items_in_batch[0], num_items_in_batch[1]
        else:
            tot_f, tot_cf = n_f, n_cf
        alpha = self.args.counterfactual_alpha
        w_f, w_cf = (1.0 - alpha, alpha)
        if int(tot_cf) == 0:
            w_f, w_cf = 1.0, 0.0
        elif int(tot_f) == 0:
            w_f, w_cf = 0.0, 1.0
        loss = w_f * sum_f / tot_f.clamp(min=1) + w_cf * sum_cf / tot_cf.clamp(min=1)
        if training and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size  # DDP averages gradients over processes
        mode = "train" if model.training else "eval"
        with torch.no_grad():
            if int(n_f):
                self._part_metrics[mode]["loss_factual"].append(float(sum_f / n_f))
            if int(n_cf):
                self._part_metrics[mode]["loss_counterfactual"].append(float(sum_cf / n_cf))
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if "loss" in logs or not any(k.startswith("eval_") for k in logs) else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in self._part_metrics[mode].items():
            if values:
                logs[prefix + key] = sum(values) / len(values)
        self._part_metrics[mode].clear()
        super().log(logs, start_time)
