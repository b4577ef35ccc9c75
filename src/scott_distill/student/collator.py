"""Counterfactual data collator: factual and counterfactual training rows in one padded batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from ..formats import StudentFormat
from ..padding import padding_side
from .encoding import StudentEncoder

__all__ = ["CounterfactualDataCollator", "StudentExample"]


class StudentExample(NamedTuple):
    """One training example: a dataset row gives one (flat row) or up to two (rationale row)."""

    question: str
    choices: list[str]
    rationale: str | None
    answer: str
    counterfactual: bool


@dataclass
class CounterfactualDataCollator:
    """Tokenizes and pads factual and counterfactual rows for SCOTT's student training.

    Accepts either kind of row (both may be mixed in one dataset):

    * a **rationale row** from ``generate_rationales``: ``question``, ``choices``, ``answer``, ``rationale`` and
      optionally ``counterfactual_answer`` / ``counterfactual_rationale``; it becomes one factual example and,
      when the counterfactual part is present, one counterfactual example (so a batch of n such rows holds up
      to 2n examples);
    * a **flat row** with an ``is_counterfactual`` column: ``question``, ``choices``, ``answer``, ``rationale``,
      ``is_counterfactual`` — one example. A row whose ``is_counterfactual`` is ``None`` or NaN is a rationale row (a
      dataset holding both kinds fills the missing column with ``None``, or NaN through pandas).

    Encoder-decoder students get ``[factual] question \\n (a) c1 (b) c2 ...`` as the source and
    ``[factual] rationale So the answer is A`` as the target with loss on every target token (+ EOS).
    Counterfactual examples use the counterfactual tag, the counterfactual rationale and answer, and labels
    ``-100`` everywhere except the answer tokens and EOS; the decoder is still teacher-forced over the whole
    target (``decoder_input_ids`` are the shifted *full* target). Decoder-only students get the prompt
    ``source \\n`` followed by the target as one sequence, the prompt masked (and the rationale too on
    counterfactual rows). All token ids come from ``StudentEncoder``, the same code that builds the prompts
    of forced-rationale scoring and generation. Every batch carries an ``is_counterfactual`` bool tensor and a
    ``row_index`` tensor (the dataset row of each example within the batch). Padding is
    ``DataCollatorForSeq2Seq``'s.

    Truncation never removes the answer: a long target loses the end of its rationale, a long source its last
    choices (counted in ``truncation_counts``; the first cut is logged), and a source whose cut would hide
    the example's own answer among the choices raises ``ValueError`` naming the row.

    Args:
        tokenizer: a fast tokenizer (offsets locate the answer tokens exactly).
        model: the student; required for encoder-decoder students (builds ``decoder_input_ids``).
        format: the student's text format (tags, answer prefix, answer-only baseline).
        max_source_length: truncation length of the source in tokens (the decoder-only prompt includes its
            special tokens and the ``\\n`` separator); ``None``: no limit.
        max_target_length: truncation length of the target in tokens (it includes EOS); ``None``: no limit.
        pad_to_multiple_of: passed to ``DataCollatorForSeq2Seq``.

    Examples:

    ```python
    >>> from scott_distill import CounterfactualDataCollator, StudentFormat
    >>> from scott_distill.demo.tokenizer import train_bpe_tokenizer
    >>> tok = train_bpe_tokenizer(["Where would you keep milk cold? A fridge keeps food cold."] * 20)
    >>> collator = CounterfactualDataCollator(tok, format=StudentFormat(answer_prefix="So the answer is"))
    >>> batch = collator([{"question": "Where would you keep milk cold?", "choices": ["fridge", "oven"],
    ...                    "answer": "fridge", "rationale": "A fridge keeps food cold.",
    ...                    "counterfactual_answer": "oven", "counterfactual_rationale": "Ovens keep milk."}])
    >>> batch["is_counterfactual"].tolist(), batch["row_index"].tolist()
    ([False, True], [0, 0])

    ```
    """

    tokenizer: PreTrainedTokenizerBase
    model: Any = None  # a PreTrainedModel or a peft wrapper of one (as DataCollatorForSeq2Seq types it)
    format: StudentFormat = field(default_factory=StudentFormat)
    max_source_length: int | None = 512
    max_target_length: int | None = 256
    pad_to_multiple_of: int | None = None
    is_encoder_decoder: bool = field(init=False, repr=False)
    encoder: StudentEncoder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tokenizer = self.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("`tokenizer` must be a fast tokenizer (offset mappings locate the answer tokens).")
        if tokenizer.pad_token_id is None:
            raise ValueError("`tokenizer` has no pad token; set `tokenizer.pad_token` (e.g. to the eos token).")
        if tokenizer.eos_token_id is None:
            raise ValueError("`tokenizer` has no eos token; the student must learn where its output ends.")
        if not isinstance(self.format, StudentFormat):
            raise ValueError(f"`format` must be a StudentFormat, got {type(self.format).__name__}.")
        self.is_encoder_decoder = bool(self.model is not None and self.model.config.is_encoder_decoder)
        self.encoder = StudentEncoder(tokenizer, self.format, causal=not self.is_encoder_decoder,
                                      max_source_length=self.max_source_length,
                                      max_target_length=self.max_target_length)
        self._pad = DataCollatorForSeq2Seq(
            tokenizer, model=self.model if self.is_encoder_decoder else None, label_pad_token_id=-100,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )

    @property
    def truncation_counts(self) -> dict[str, int]:
        """How many sources / targets were encoded, and how many sources / rationales were cut."""
        return dict(self.encoder.truncation_counts)

    # -- rows -> examples -------------------------------------------------------------------------

    def examples(self, row: Mapping[str, Any]) -> list[StudentExample]:
        """The training examples of one dataset row."""
        missing = [c for c in ("question", "choices", "answer") if c not in row]
        if missing:
            raise ValueError(f"Row lacks columns {missing}; has {sorted(row)}.")
        if not self.format.without_rationale and "rationale" not in row:
            raise ValueError("Row lacks `rationale` (set without_rationale=True for the answer-only baseline).")
        choices = list(row["choices"])
        flag = row.get("is_counterfactual")
        # None / NaN: a rationale row in a dataset that also holds flat rows (JSON lines and `datasets` fill a
        # missing column with None, pandas with NaN)
        if flag is not None and flag == flag:
            return [StudentExample(row["question"], choices, row.get("rationale"), row["answer"],
                                   bool(row["is_counterfactual"]))]
        out = [StudentExample(row["question"], choices, row.get("rationale"), row["answer"], False)]
        if row.get("counterfactual_answer") and (row.get("counterfactual_rationale") or self.format.without_rationale):
            out.append(StudentExample(row["question"], choices, row.get("counterfactual_rationale"),
                                      row["counterfactual_answer"], True))
        return out

    def features(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        feats = []
        name = repr(row["id"]) if "id" in row else None
        for ex in self.examples(row):
            where = name or repr(ex.question[:60])
            src_ids = self.encoder.source_ids(ex.question, ex.choices, ex.counterfactual, answer=ex.answer, row=where)
            tgt = self.encoder.target(ex.rationale, ex.answer, ex.counterfactual, row=where)
            keep = tgt.answer_mask if ex.counterfactual else [True] * len(tgt.ids)
            feat: dict[str, Any]
            if self.is_encoder_decoder:
                feat = {"input_ids": src_ids, "attention_mask": [1] * len(src_ids), "labels": tgt.ids,
                        "loss_mask": [int(k) for k in keep]}
            else:
                ids = src_ids + tgt.ids
                labels = [-100] * len(src_ids) + [t if k else -100 for t, k in zip(tgt.ids, keep)]
                feat = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
            feat["is_counterfactual"] = ex.counterfactual
            feats.append(feat)
        return feats

    # -- batch --------------------------------------------------------------------------------------

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        per_row = [self.features(row) for row in rows]
        feats = [f for fs in per_row for f in fs]
        row_index = torch.tensor([i for i, fs in enumerate(per_row) for _ in fs], dtype=torch.long)
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
        batch["row_index"] = row_index
        return dict(batch)
