"""SCOTT's contrastive score and the rules around it, shared by the processor, the fused path and rationalize.

``contrastive_scores`` combines the gold and contrast branches (with the reference's stop rule); the other
functions check its arguments and put prompts in the shape both decoding paths expect (left padding,
position ids counted over real tokens only).
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "check_alpha",
    "check_plausibility_threshold",
    "contrastive_scores",
    "decoder_position_ids",
    "described",
    "end_token_ids",
    "generation_config_value",
    "left_padded",
    "stop_token_ids_for",
]

# Floor of ``alpha * log p_contrast``: a token the contrast rules out (-inf) gets a large finite bonus,
# never +inf, whatever alpha is (``gold_logp - floor`` stays below float32's max).
_PENALTY_FLOOR = torch.finfo(torch.float32).min / 4


def end_token_ids(model: PreTrainedModel, stop_token_ids: Iterable[int] | None = None) -> torch.Tensor:
    """The model's ``generation_config.eos_token_id`` (int or list) plus ``stop_token_ids``, sorted."""
    ids: set[int] = {int(i) for i in (stop_token_ids or [])}
    eos = generation_config_value(model, "eos_token_id")
    if eos is not None:
        ids.update([eos] if isinstance(eos, int) else [int(i) for i in eos])
    return torch.tensor(sorted(ids), dtype=torch.long)


def stop_token_ids_for(tokenizer: PreTrainedTokenizerBase, stop: str = "\n") -> list[int]:
    """Ids of every token whose text contains ``stop`` (a BPE vocabulary has many newline tokens), plus EOS."""
    ids = [i for i in range(len(tokenizer)) if stop in tokenizer.decode([i])]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def decoder_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded decoder-only batch (the rule ``generate`` itself uses)."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def left_padded(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, name: str = "input_ids"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with all padding moved to the left, token order kept.

    Decoder-only prompts must be left-padded (the next token follows the last column). GPT-2 and
    Llama tokenizers pad on the right by default, so a right-padded batch is re-padded here instead
    of giving wrong rows. Batches without padding in the last column are returned unchanged.
    """
    mask = attention_mask.long()
    empty = (mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"`{name}` rows {empty[:10]} are all padding (attention mask all zeros).")
    if not bool((mask[:, -1] == 0).any()):
        return input_ids, mask
    logger.info("`%s` is right-padded: moving the padding to the left (decoder-only prompts).", name)
    order = mask.argsort(dim=-1, stable=True)  # pads (0) first, then the tokens in their order
    return input_ids.gather(-1, order), mask.gather(-1, order)


def generation_config_value(model: PreTrainedModel, name: str) -> Any:
    """``model.generation_config.<name>``, ``None`` when unset or when the model has no generation config (a
    teacher whose ``generation_config`` was cleared, or a model class that never had one)."""
    return getattr(getattr(model, "generation_config", None), name, None)


def described(value: object) -> str:
    """A wrong argument as an error message names it: its type, and its shape when it has one (a list has none,
    so no empty shape is printed as if the list were a 0-d tensor)."""
    shape = getattr(value, "shape", None)
    return type(value).__name__ if shape is None else f"{type(value).__name__} of shape {tuple(shape)}"


def check_alpha(alpha: Any, plausibility_threshold: float | None = None) -> float:
    """``alpha`` as a finite float >= 0; Python, NumPy and 0-d torch scalars are accepted.

    Warns when ``alpha >= 1`` without a plausibility threshold: the score then rewards tokens that are
    unlikely under the perturbed prompt more than it rewards likely ones under the gold prompt.
    """
    value = alpha
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"`alpha` must be a real scalar, got a tensor of shape {tuple(value.shape)} "
                             f"and dtype {value.dtype}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`alpha` must be a real number >= 0, got {type(alpha).__name__} {alpha!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`alpha` must be finite, got {value!r}.")
    if value < 0:
        raise ValueError(f"`alpha` must be >= 0, got {value!r}.")
    if value >= 1 and not plausibility_threshold:
        warnings.warn(
            f"alpha={value} >= 1 without `plausibility_threshold`: the contrastive score then favours tokens "
            "that are unlikely under both prompts. Set e.g. plausibility_threshold=0.1 (or alpha < 1).",
            UserWarning,
            stacklevel=3,
        )
    return value


def check_plausibility_threshold(plausibility_threshold: Any) -> float | None:
    """``None`` or a float in [0, 1]."""
    if plausibility_threshold is None:
        return None
    value = plausibility_threshold
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(
            f"`plausibility_threshold` must be a number in [0, 1] or None, got {plausibility_threshold!r}."
        )
    return float(value)


def contrastive_scores(
    scores: torch.Tensor,
    contrast_logits: torch.Tensor,
    alpha: float,
    stop_token_ids: torch.Tensor | None = None,
    plausibility_threshold: float | None = None,
) -> torch.Tensor:
    """Combine the two branches: ``log_softmax(scores) - alpha * log_softmax(contrast_logits)``.

    Shared by the processor and the fused loop so that both pick exactly the same tokens.

    - ``-inf`` in ``scores`` (from earlier processors) stays ``-inf``, for every alpha; rows whose scores
      are all ``-inf`` come back all ``-inf``. Nothing becomes ``NaN`` or ``+inf``.
    - ``alpha * log p_contrast`` is floored at a finite value, so a token the contrast rules out gets a
      large finite bonus, never ``+inf``.
    - A row whose contrast logits hold a ``NaN`` falls back to the gold branch alone (with a warning).
    - ``alpha == 0`` is plain decoding: ``log_softmax(scores)``, no stop rule, no plausibility constraint.
    """
    scores = scores.float()
    gold_logp = torch.log_softmax(scores, dim=-1)
    excluded = torch.isneginf(scores) | torch.isnan(gold_logp)
    if alpha == 0:
        return gold_logp.masked_fill(excluded, float("-inf"))
    contrast_logp = torch.log_softmax(contrast_logits.float(), dim=-1)
    out = gold_logp - (alpha * contrast_logp).clamp(min=_PENALTY_FLOOR)
    broken = torch.isnan(contrast_logp).any(dim=-1)
    if bool(broken.any()):
        warnings.warn(
            f"The contrast branch produced NaN logits in {int(broken.sum())} row(s); those rows use the gold "
            "branch alone at this step (check the teacher's dtype / the contrast prompts).",
            RuntimeWarning,
            stacklevel=2,
        )
        out = torch.where(broken.unsqueeze(-1), gold_logp, out)
    if plausibility_threshold is not None and plausibility_threshold > 0:
        cutoff = gold_logp.max(dim=-1, keepdim=True).values + math.log(plausibility_threshold)
        excluded = excluded | (gold_logp < cutoff)
    out = out.masked_fill(excluded, float("-inf"))
    if stop_token_ids is not None and stop_token_ids.numel() > 0:
        # The reference stops when the *unmodified* teacher would stop: the contrast would otherwise
        # push the end token down (it is likely whatever the answer) and rationales would never end.
        top = scores.argmax(dim=-1)
        stops = torch.isin(top, stop_token_ids.to(top.device)) & ~torch.isneginf(scores.max(dim=-1).values)
        if stops.any():
            forced = torch.full_like(out[stops], float("-inf"))
            forced.scatter_(1, top[stops].unsqueeze(1), 0.0)
            out[stops] = forced
    return out
