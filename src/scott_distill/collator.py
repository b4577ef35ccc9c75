"""Counterfactual data collator: factual and counterfactual training rows in one padded batch."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, PreTrainedModel, PreTrainedTokenizerBase

from .tokenizer_utils import padding_side

__all__ = ["CounterfactualDataCollator", "StudentFormat", "format_choices"]


def format_choices(choices: Sequence[str]) -> str:
    """``(a) c1 (b) c2 ...``"""
    if len(choices) > len(string.ascii_lowercase):
        raise ValueError(f"At most 26 choices are supported, got {len(choices)}.")
    return " ".join(f"({string.ascii_lowercase[i]}) {c}" for i, c in enumerate(choices))


@dataclass(frozen=True)
class StudentFormat:
    """The student's input/output text format (saved with a student as ``scott_config.json``)."""

    factual_tag: str = "[factual]"
    counterfactual_tag: str = "[counterfactual]"
    answer_prefix: str = "So the answer is"
    without_rationale: bool = False

    def source(self, question: str, choices: Sequence[str], counterfactual: bool = False) -> str:
        tag = self.counterfactual_tag if counterfactual else self.factual_tag
        return f"{tag} {question} \n {format_choices(choices)}"

    def target(self, rationale: str | None, answer: str, counterfactual: bool = False) -> tuple[str, int]:
        """Target text and the character offset where the answer starts."""
        if self.without_rationale:
            return answer, 0
        tag = self.counterfactual_tag if counterfactual else self.factual_tag
        head = f"{tag} {(rationale or '').strip()} {self.answer_prefix} ".replace("  ", " ")
        return head + answer, len(head)

    def parse(self, text: str) -> tuple[str, str | None]:
        """Split a generated target into (rationale, answer); answer is ``None`` when unparseable."""
        text = text.strip()
        for tag in (self.factual_tag, self.counterfactual_tag):
            if text.startswith(tag):
                text = text[len(tag) :].strip()
        if self.without_rationale:
            return "", text or None
        idx = text.rfind(self.answer_prefix)
        if idx < 0:
            return text, None
        answer = text[idx + len(self.answer_prefix) :].strip().rstrip(".").strip()
        return text[:idx].strip(), answer or None

    def to_dict(self) -> dict[str, Any]:
        return {"factual_tag": self.factual_tag, "counterfactual_tag": self.counterfactual_tag,
                "answer_prefix": self.answer_prefix, "without_rationale": self.without_rationale}


class CounterfactualDataCollator:
    """Tokenizes and pads factual and counterfactual rows for SCOTT's student training.

    Accepts either kind of row (both may be mixed in one dataset):

    * a **rationale row** from ``generate_rationales``: ``question``, ``choices``, ``answer``, ``rationale`` and
      optionally ``counterfactual_answer`` / ``counterfactual_rationale``; it becomes one factual example and,
      when the counterfactual part is present, one counterfactual example (so a batch of n such rows holds up
      to 2n examples);
    * a **flat row** with an ``is_counterfactual`` column: ``question``, ``choices``, ``answer``, ``rationale``,
      ``is_counterfactual`` — one example.

    Encoder-decoder students get ``[factual] question \\n (a) c1 (b) c2 ...`` as the source and
    ``[factual] rationale So the answer is A`` as the target with loss on every target token (+ EOS).
    Counterfactual examples use the counterfactual tag, the counterfactual rationale and answer, and labels
    ``-100`` everywhere except the answer tokens and EOS; the decoder is still teacher-forced over the whole
    target (``decoder_input_ids`` are the shifted *full* target). Decoder-only students get ``source \\n target``
    as one sequence, the source masked (and the rationale too on counterfactual rows). Every batch carries
    an ``is_counterfactual`` bool tensor. Padding is ``DataCollatorForSeq2Seq``'s.

    Args:
        tokenizer: a fast tokenizer (offsets locate the answer tokens exactly).
        model: the student; required for encoder-decoder students (builds ``decoder_input_ids``).
        max_source_length / max_target_length: truncation lengths (the target keeps its end: the answer).
        factual_tag / counterfactual_tag / answer_prefix: the text format.
        without_rationale: answer-only baseline (targets are just the answer).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: PreTrainedModel | None = None,
        max_source_length: int = 512,
        max_target_length: int = 256,
        factual_tag: str = "[factual]",
        counterfactual_tag: str = "[counterfactual]",
        answer_prefix: str = "So the answer is",
        without_rationale: bool = False,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("`tokenizer` must be a fast tokenizer (offset mappings locate the answer tokens).")
        if tokenizer.pad_token_id is None:
            raise ValueError("`tokenizer` has no pad token; set `tokenizer.pad_token` (e.g. to the eos token).")
        if tokenizer.eos_token_id is None:
            raise ValueError("`tokenizer` has no eos token; the student must learn where its output ends.")
        self.tokenizer = tokenizer
        self.model = model
        self.is_encoder_decoder = bool(model is not None and model.config.is_encoder_decoder)
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.format = StudentFormat(factual_tag, counterfactual_tag, answer_prefix, without_rationale)
        self._pad = DataCollatorForSeq2Seq(
            tokenizer, model=model if self.is_encoder_decoder else None, label_pad_token_id=-100,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    # -- rows -> examples -------------------------------------------------------------------------

    def examples(self, row: Mapping[str, Any]) -> list[tuple[str, str, int, bool]]:
        """(source, target, answer_char_start, is_counterfactual) examples of one dataset row."""
        missing = [c for c in ("question", "choices", "answer") if c not in row]
        if missing:
            raise ValueError(f"Row lacks columns {missing}; has {sorted(row)}.")
        if not self.format.without_rationale and "rationale" not in row:
            raise ValueError("Row lacks `rationale` (set without_rationale=True for the answer-only baseline).")
        out = []
        if "is_counterfactual" in row:
            cf = bool(row["is_counterfactual"])
            target, start = self.format.target(row.get("rationale"), row["answer"], cf)
            out.append((self.format.source(row["question"], row["choices"], cf), target, start, cf))
            return out
        target, start = self.format.target(row.get("rationale"), row["answer"], False)
        out.append((self.format.source(row["question"], row["choices"], False), target, start, False))
        if row.get("counterfactual_answer") and (row.get("counterfactual_rationale") or self.format.without_rationale):
            target, start = self.format.target(row.get("counterfactual_rationale"), row["counterfactual_answer"], True)
            out.append((self.format.source(row["question"], row["choices"], True), target, start, True))
        return out

    def _target_ids(self, target: str, answer_start: int) -> tuple[list[int], list[int]]:
        enc = self.tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"] + [self.tokenizer.eos_token_id]
        answer = [int(end > answer_start) for _, end in enc["offset_mapping"]] + [1]
        if len(ids) > self.max_target_length:  # keep the end: the answer and EOS must survive truncation
            ids, answer = ids[-self.max_target_length :], answer[-self.max_target_length :]
        return ids, answer

    def features(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        feats = []
        for source, target, start, cf in self.examples(row):
            tgt_ids, answer_mask = self._target_ids(target, start)
            src_ids = self.tokenizer(source, truncation=True, max_length=self.max_source_length)["input_ids"]
            if self.is_encoder_decoder:
                feat = {"input_ids": src_ids, "attention_mask": [1] * len(src_ids), "labels": tgt_ids}
                feat["loss_mask"] = answer_mask if cf else [1] * len(tgt_ids)
            else:
                sep = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
                prompt = src_ids + sep
                ids = prompt + tgt_ids
                keep = answer_mask if cf else [1] * len(tgt_ids)
                labels = [-100] * len(prompt) + [t if k else -100 for t, k in zip(tgt_ids, keep)]
                feat = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
            feat["is_counterfactual"] = cf
            feats.append(feat)
        return feats

    # -- batch --------------------------------------------------------------------------------------

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        feats = [f for row in rows for f in self.features(row)]
        is_cf = torch.tensor([f.pop("is_counterfactual") for f in feats], dtype=torch.bool)
        loss_masks = [f.pop("loss_mask", None) for f in feats]
        # training: right padding keeps positions 0..n-1 for every row
        with padding_side(self.tokenizer, "right"):
            batch = self._pad(feats)
        if self.is_encoder_decoder:
            # labels were the full targets so that decoder_input_ids teacher-force the whole target;
            # now hide the non-answer tokens of counterfactual rows from the loss.
            width = batch["labels"].shape[1]
            mask = torch.tensor([m + [0] * (width - len(m)) for m in loss_masks], dtype=torch.bool)
            batch["labels"] = batch["labels"].masked_fill(~mask, -100)
        batch["is_counterfactual"] = is_cf
        return dict(batch)
