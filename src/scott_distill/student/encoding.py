"""A student's token ids: the one place training, scoring and generation get them.

``StudentFormat`` (``scott_distill.formats``) says what the student reads and writes; ``StudentEncoder``
turns it into token ids for one tokenizer. The collator (training), forced-rationale
scoring and ``predict`` (generation) all call the same ``StudentEncoder`` methods, so a decoder-only student
sees token-for-token the same prompt at inference as in training, whatever the tokenizer does with
spaces, newlines or special tokens.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..formats import DECODER_PROMPT_SEPARATOR, StudentFormat, TargetText

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["EncodedTarget", "StudentEncoder", "answer_token_mask"]


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def answer_token_mask(offsets: Sequence[tuple[int, int]], text: str, answer_start: int) -> list[bool]:
    """Which tokens of ``text`` belong to the answer that starts at character ``answer_start``.

    A token belongs to the answer when it ends after ``answer_start``, or when it covers only the whitespace
    right before the answer: tokenizers that keep the space apart (``▁`` before Llama digits, ``Ġ`` before
    some byte-level pieces) put the first token where two choices differ there. The counterfactual loss
    (training) and the choice ranking (evaluation) both use this rule; the reference code trains on that token.
    """
    prefix = text[:answer_start]
    space_start = len(prefix.rstrip())
    return [end > answer_start or (space_start <= start < end <= answer_start) for start, end in offsets]


@dataclass(frozen=True)
class EncodedTarget:
    """Target token ids (ending with EOS) and, per token, whether it is the answer (or EOS) / the rationale."""

    ids: list[int]
    answer_mask: list[bool]
    rationale_mask: list[bool]
    rationale_cut: bool = False


class StudentEncoder:
    """Token ids of a student's source (prompt) and target for one tokenizer and format.

    * Encoder-decoder students: the source is ``tokenizer(source)`` with the tokenizer's special tokens
      (T5 appends ``</s>``).
    * Decoder-only students: the prompt is ``source + "\\n"`` tokenized as **one** string, keeping the special
      tokens the tokenizer puts in front (Llama's ``<s>``) and dropping any it appends (``</s>`` would end
      the prompt). The target follows it in training and scoring, and is what ``generate`` continues.
    * Targets: ``{tag} {rationale} {answer_prefix} {answer}`` tokenized without special tokens, plus EOS.

    Truncation never removes the answer: a target longer than ``max_target_length`` loses the end of its
    rationale (the tag, the answer prefix, the answer and EOS stay); a source longer than
    ``max_source_length`` loses its end (the last choices) and is counted in ``truncation_counts``; a
    cut that would remove the example's own answer among the choices raises ``ValueError``.

    Args:
        tokenizer: a fast tokenizer (offset mappings locate the answer and rationale tokens).
        fmt: the text format.
        causal: ``True`` for decoder-only students.
        max_source_length / max_target_length: token limits (``None``: no limit).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, fmt: StudentFormat, causal: bool,
                 max_source_length: int | None = None, max_target_length: int | None = None) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("`tokenizer` must be a fast tokenizer (offset mappings locate the answer tokens).")
        if tokenizer.eos_token_id is None:
            raise ValueError("`tokenizer` has no eos token; the student must learn where its output ends.")
        for name, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be a positive number of tokens or None, got {value!r}.")
        self.tokenizer = tokenizer
        self.format = fmt
        self.causal = causal
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.truncation_counts: Counter[str] = Counter()

    # -- source / prompt ----------------------------------------------------------------------------

    def _source_text(self, source: str) -> str:
        return source + DECODER_PROMPT_SEPARATOR if self.causal else source

    def _encode_source(self, source: str) -> dict[str, list]:
        enc = self.tokenizer(self._source_text(source), return_offsets_mapping=True,
                             return_special_tokens_mask=True)
        ids, special, offsets = enc["input_ids"], enc["special_tokens_mask"], enc["offset_mapping"]
        if self.causal:  # keep leading special tokens (BOS), drop appended ones (EOS)
            last = max((i for i, s in enumerate(special) if not s), default=-1)
            ids, special, offsets = ids[: last + 1], special[: last + 1], offsets[: last + 1]
        return {"ids": ids, "special": special, "offsets": offsets}

    def source_ids(self, question: str, choices: Sequence[str], counterfactual: bool = False,
                   answer: str | None = None, row: str | None = None) -> list[int]:
        """Token ids of the source (encoder-decoder) or prompt (decoder-only).

        ``answer``: the example's answer; when the source must be cut, it must stay among the visible
        choices (else ``ValueError``; ``row`` names the row in the message).
        """
        source = self.format.source(question, choices, counterfactual)
        enc = self._encode_source(source)
        limit = self.max_source_length
        self.truncation_counts["sources"] += 1
        if limit is None or len(enc["ids"]) <= limit:
            return enc["ids"]
        full = len(enc["ids"])
        # content tokens of the source text (not the separator nor special tokens), in order
        content = [i for i, (s, (a, b)) in enumerate(zip(enc["special"], enc["offsets"]))
                   if not s and b <= len(source) and b > a]
        keep = len(content) - (full - limit)
        gold_end = self.format.choice_end(question, choices, answer, counterfactual) if answer is not None else -1
        while keep > 0:
            cut = enc["offsets"][content[keep - 1]][1]
            if gold_end > cut:
                break
            trial = self._encode_source(source[:cut])
            if len(trial["ids"]) <= limit:
                self.truncation_counts["sources_cut"] += 1
                if self.truncation_counts["sources_cut"] == 1:
                    logger.warning(
                        "Source of row %s has %d tokens > max_source_length=%d: its end is cut (%d tokens left; "
                        "the example's answer stays among the choices). Further cuts are counted in "
                        "`truncation_counts`.",
                        row or _short(question), full, limit, len(trial["ids"]))
                return trial["ids"]
            keep -= 1
        if gold_end > 0:  # any cut that fits would remove the example's answer from the choices
            assert answer is not None  # gold_end > 0 only for a given answer
            inside = [i for i in content if enc["offsets"][i][0] < gold_end]
            raise ValueError(
                f"Row {row or _short(question)}: the source has {full} tokens but max_source_length={limit}, and "
                f"cutting it would drop the answer {_short(answer)} from the choices (keeping it needs "
                f"{len(inside) + full - len(content)} tokens). Raise `max_source_length`, or fix or drop the row."
            )
        raise ValueError(
            f"Row {row or _short(question)}: the source has {full} tokens and max_source_length={limit} cannot hold "
            f"its start. Raise `max_source_length`."
        )

    # -- target -------------------------------------------------------------------------------------

    def target(self, rationale: str | None, answer: str, counterfactual: bool = False,
               row: str | None = None) -> EncodedTarget:
        """Target ids (``+ EOS``) with the answer and rationale masks; the rationale's end is cut if too long."""
        parts = self.format.target_parts(rationale, answer, counterfactual)
        enc = self._encode_target(parts)
        limit = self.max_target_length
        self.truncation_counts["targets"] += 1
        if limit is None or len(enc.ids) <= limit:
            return enc
        rationale_text = (rationale or "").strip()
        positions = [i for i, r in enumerate(enc.rationale_mask) if r]
        offsets = self.tokenizer(parts.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        keep = len(positions) - (len(enc.ids) - limit)
        while keep >= 0:
            cut = offsets[positions[keep - 1]][1] - parts.rationale_start if keep > 0 else 0
            trial = self._encode_target(self.format.target_parts(rationale_text[:cut], answer, counterfactual))
            if len(trial.ids) <= limit:
                self.truncation_counts["rationales_cut"] += 1
                return EncodedTarget(trial.ids, trial.answer_mask, trial.rationale_mask, rationale_cut=True)
            keep -= 1
        bare = self._encode_target(self.format.target_parts("", answer, counterfactual))
        raise ValueError(
            f"Row {row or _short(answer)}: max_target_length={limit} cannot hold the answer: the tag, answer prefix, "
            f"answer {_short(answer)} and EOS alone take {len(bare.ids)} tokens. Raise `max_target_length`."
        )

    def _encode_target(self, parts: TargetText) -> EncodedTarget:
        enc = self.tokenizer(parts.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        answer = answer_token_mask(offsets, parts.text, parts.answer_start)
        rationale = [end > parts.rationale_start and start < parts.rationale_end for start, end in offsets]
        eos = self.tokenizer.eos_token_id
        return EncodedTarget(enc["input_ids"] + [eos], answer + [True], rationale + [False])
