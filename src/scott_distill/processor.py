"""SCOTT's teacher-side contrastive decoding as a ``transformers`` logits processor."""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = [
    "ContrastiveRationaleLogitsProcessor",
    "check_alpha",
    "check_plausibility_threshold",
    "contrastive_scores",
    "decoder_position_ids",
    "end_token_ids",
    "forward_parameters",
    "input_device",
    "left_padded",
]

# Floor of ``alpha * log p_contrast``: a token the contrast rules out (-inf) gets a large finite bonus,
# never +inf, whatever alpha is (``gold_logp - floor`` stays below float32's max).
_PENALTY_FLOOR = torch.finfo(torch.float32).min / 4


def end_token_ids(model: PreTrainedModel, stop_token_ids: Iterable[int] | None = None) -> torch.LongTensor:
    """The model's ``generation_config.eos_token_id`` (int or list) plus ``stop_token_ids``, sorted."""
    ids: set[int] = {int(i) for i in (stop_token_ids or [])}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is not None:
        ids.update([eos] if isinstance(eos, int) else [int(i) for i in eos])
    return torch.tensor(sorted(ids), dtype=torch.long)


def decoder_position_ids(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Position ids for a left-padded decoder-only batch (the rule ``generate`` itself uses)."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def forward_parameters(model: PreTrainedModel) -> Mapping[str, inspect.Parameter]:
    """Parameters of the *base* model's ``forward``.

    A PEFT wrapper's ``forward`` takes ``**kwargs`` and passes them on, so its own signature hides
    ``position_ids`` / ``logits_to_keep``; deciding from it would silently drop the position ids.
    """
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    return inspect.signature(base.forward).parameters


def input_device(model: PreTrainedModel) -> torch.device:
    """The device that ``model``'s inputs belong on.

    ``model.device`` is the first parameter's device, which is ``meta`` for a teacher that accelerate
    offloads (``device_map="auto"`` with disk / CPU offload); the input embedding's hook knows where the
    forward really runs.
    """
    embeddings = model.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return embeddings.weight.device


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


@dataclass
class _ContrastState:
    """Per-``generate`` state of the contrast branch."""

    prompt_len: int  # length of ``input_ids`` at the first call (decoder-only prompt length)
    prev_input_ids: torch.LongTensor
    cache: object
    attention_mask: torch.LongTensor | None  # decoder-only: contrast prompt mask + generated ones
    encoder_outputs: object | None
    encoder_attention_mask: torch.LongTensor | None
    group_size: int


class ContrastiveRationaleLogitsProcessor(LogitsProcessor):
    r"""
    [`LogitsProcessor`] implementing SCOTT's contrastive decoding for rationale generation (Wang et al., ACL 2023).

    The teacher writes a rationale for a question *with the gold answer in its prompt*; every next token
    is scored against the same model prompted with a *perturbed* answer (a wrong one, or none):

    ``log p(t | gold prompt, prefix) - alpha * log p(t | perturbed prompt, prefix)``

    so tokens that are likely whatever the answer (vacuous rationales) are pushed down. The perturbed
    branch is run by this processor on the generating model with its own KV cache: one prefill, then
    one token per step (the tokens ``generate`` actually appended). Works with greedy search, sampling,
    ``num_return_sequences > 1`` and beam search (the beam reordering is rebuilt from ``input_ids``), for
    decoder-only and encoder-decoder models.

    **Stopping.** End tokens are the model's ``generation_config.eos_token_id`` plus ``stop_token_ids``.
    When the unmodified teacher's most likely token is an end token, that token is chosen (the
    reference's stop rule). Pass [`~ContrastiveRationaleLogitsProcessor.generate_kwargs`] to ``generate``
    so that ``generate`` stops at exactly the same ids; end ids given only to ``generate`` are unknown
    to the stop rule.

    **Order.** ``generate`` runs its own processors (repetition penalty, no-repeat-ngram, bad words, min
    length, ...) *before* custom ones: they shape the gold branch only. Its sampling warpers (temperature,
    top-k, top-p) run *after*: they act on the contrastive score.

    **Lifetime.** The contrast KV cache (and a seq2seq teacher's contrast encoder outputs) lives from the
    first step of a ``generate`` call until the ``with processor:`` block ends, [`reset`] is called, the
    next ``generate`` call starts, or the processor is dropped. Use the ``with`` block to free it as soon
    as generation ends.

    Args:
        model (`PreTrainedModel`):
            The model that ``generate`` runs (frozen teacher). The contrast branch uses the same weights.
            A PEFT-wrapped model is fine (the base model decides which inputs ``forward`` takes).
        contrast_input_ids (`torch.LongTensor` of shape `(batch_size, contrast_length)`):
            Prompts with the perturbed answer, one row per input row of ``generate`` (before beam /
            return-sequence expansion). Right-padded rows are moved to left padding for decoder-only models.
        contrast_attention_mask (`torch.LongTensor`, *optional*):
            Attention mask of ``contrast_input_ids``; all ones when omitted.
        alpha (`float`, *optional*, defaults to 0.5):
            Weight of the perturbed branch (SCOTT's reference code uses 0.5). ``alpha=0`` is plain decoding
            and skips the contrast branch. A finite real number >= 0 (NumPy / 0-d torch scalars accepted).
        stop_token_ids (`Iterable[int]`, *optional*):
            Extra end tokens (e.g. the ids of tokens containing the newline that ends a rationale) besides
            the model's ``generation_config.eos_token_id``.
        plausibility_threshold (`float`, *optional*):
            ``beta`` of Li et al.'s adaptive plausibility constraint: tokens with
            ``p(t | gold prompt) < beta * max_t p(t | gold prompt)`` are excluded. Off by default.

    Examples:

    ```python
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from scott_distill import ContrastiveRationaleLogitsProcessor
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> config = GPT2Config(vocab_size=32, n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=1)
    >>> teacher = GPT2LMHeadModel(config).eval()
    >>> gold = torch.tensor([[5, 6, 7, 8]])  # "... The answer is A. Because"
    >>> contrast = torch.tensor([[5, 6, 9, 8]])  # "... The answer is B. Because"
    >>> proc = ContrastiveRationaleLogitsProcessor(teacher, contrast_input_ids=contrast, alpha=0.5, stop_token_ids=[2])
    >>> proc.generate_kwargs()["eos_token_id"]  # what generate() must stop at: the model's eos + stop_token_ids
    [1, 2]
    >>> with proc:  # the contrast cache is freed when the block ends
    ...     out = teacher.generate(gold, **proc.generate_kwargs(), max_new_tokens=5, do_sample=False, pad_token_id=0)
    >>> out.shape[0], 5 <= out.shape[1] <= 9
    (1, True)
    >>> proc.holds_cache
    False

    ```
    """

    def __init__(
        self,
        model: PreTrainedModel,
        contrast_input_ids: torch.LongTensor,
        contrast_attention_mask: torch.LongTensor | None = None,
        alpha: float = 0.5,
        stop_token_ids: Iterable[int] | None = None,
        plausibility_threshold: float | None = None,
    ) -> None:
        plausibility_threshold = check_plausibility_threshold(plausibility_threshold)
        alpha = check_alpha(alpha, plausibility_threshold)
        if not isinstance(contrast_input_ids, torch.Tensor) or contrast_input_ids.dim() != 2:
            raise ValueError(
                "`contrast_input_ids` must be a 2-D LongTensor of shape (batch_size, length), "
                f"got {type(contrast_input_ids).__name__} {getattr(contrast_input_ids, 'shape', '')}."
            )
        if contrast_input_ids.is_floating_point() or contrast_input_ids.is_complex() or (
            contrast_input_ids.dtype == torch.bool
        ):
            raise ValueError(
                f"`contrast_input_ids` must hold integer token ids, got dtype {contrast_input_ids.dtype} "
                "(tokenize the prompts; do not pass embeddings or probabilities)."
            )
        if contrast_attention_mask is None:
            contrast_attention_mask = torch.ones_like(contrast_input_ids)
        elif not isinstance(contrast_attention_mask, torch.Tensor) or (
            contrast_attention_mask.shape != contrast_input_ids.shape
        ):
            raise ValueError(
                "`contrast_attention_mask` must be a tensor with the shape of `contrast_input_ids` "
                f"{tuple(contrast_input_ids.shape)}, got {tuple(getattr(contrast_attention_mask, 'shape', ()))}."
            )
        self.model = model
        self.alpha = alpha
        self.plausibility_threshold = plausibility_threshold
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        ids, mask = contrast_input_ids.long(), contrast_attention_mask.long()
        if not self.is_encoder_decoder:
            ids, mask = left_padded(ids, mask, "contrast_input_ids")
        self.contrast_input_ids = ids
        self.contrast_attention_mask = mask
        self.stop_token_ids = end_token_ids(model, stop_token_ids)
        params = forward_parameters(model)
        self._accepts_position_ids = "position_ids" in params
        # Only the last position's logits are needed; without this the prefill materialises
        # batch x length x vocab logits (hundreds of MB for a GPT-2-sized teacher).
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._state: _ContrastState | None = None
        self._encoder_hook: Any = None
        self._encoder_rows: int | None = None

    # -- lifetime --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Free the contrast cache (done automatically when a new ``generate`` call is detected)."""
        self._state = None

    @property
    def holds_cache(self) -> bool:
        """Whether a contrast KV cache from a ``generate`` call is alive."""
        return self._state is not None

    def __enter__(self) -> ContrastiveRationaleLogitsProcessor:
        self.reset()
        if self.is_encoder_decoder and self._encoder_hook is None:
            # generate() encodes the *unexpanded* inputs once before the first step: their row count
            # tells how many input rows there are, which the decoder ids (all start tokens) cannot.
            self._encoder_hook = self.model.get_encoder().register_forward_pre_hook(
                self._record_encoder_rows, with_kwargs=True
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.reset()
        if self._encoder_hook is not None:
            self._encoder_hook.remove()
            self._encoder_hook = None
        self._encoder_rows = None

    def _record_encoder_rows(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if isinstance(x, torch.Tensor):
            self._encoder_rows = x.shape[0]

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``generate``: this processor and the end ids its stop rule uses.

        ``model.generate(**inputs, **proc.generate_kwargs(), max_new_tokens=...)`` makes ``generate``
        stop at exactly the tokens the stop rule forces (the model's eos plus ``stop_token_ids``).
        """
        kwargs: dict[str, Any] = {"logits_processor": LogitsProcessorList([self])}
        if self.stop_token_ids.numel() > 0:
            kwargs["eos_token_id"] = self.stop_token_ids.tolist()
        return kwargs

    # -- contrast branch -------------------------------------------------------------------------

    def _check_rows(self, input_ids: torch.LongTensor) -> int:
        """The expansion factor of ``generate`` (num_beams x num_return_sequences), checked."""
        rows, n = input_ids.shape[0], self.contrast_input_ids.shape[0]
        wrong = (
            f"`contrast_input_ids` has {n} rows but generate() runs {rows} rows; it needs one contrast row per "
            "input row of generate() (generate expands them by num_beams / num_return_sequences itself)."
        )
        if rows % n != 0:
            raise ValueError(wrong)
        group = rows // n
        if self.is_encoder_decoder:
            seen, self._encoder_rows = self._encoder_rows, None
            if seen is not None and seen != n:
                raise ValueError(
                    wrong.replace("generate() runs", f"generate() encoded {seen} input rows ({rows} after expansion)")
                )
        elif group > 1:
            # an expansion group holds copies of one prompt; different prompts mean the rows do not match
            grouped = input_ids.view(n, group, -1)
            if not bool((grouped == grouped[:, :1]).all()):
                raise ValueError(f"{wrong} The {rows} input rows are not {n} prompts repeated {group} times each.")
        return group

    @torch.no_grad()
    def _start(self, input_ids: torch.LongTensor) -> torch.Tensor:
        group = self._check_rows(input_ids)
        device = input_ids.device
        ids = self.contrast_input_ids.to(device).repeat_interleave(group, dim=0)
        mask = self.contrast_attention_mask.to(device).repeat_interleave(group, dim=0)
        if self.is_encoder_decoder:
            encoder = self.model.get_encoder()
            encoder_outputs = encoder(input_ids=ids, attention_mask=mask, return_dict=True)
            self._encoder_rows = None  # our own call, not generate's
            out = self.model(
                encoder_outputs=encoder_outputs,
                attention_mask=mask,
                decoder_input_ids=input_ids,
                use_cache=True,
                return_dict=True,
                **self._last_logits_only,
            )
            self._state = _ContrastState(input_ids.shape[1], input_ids, out.cache, None, encoder_outputs, mask, group)
        else:
            kwargs = {"position_ids": decoder_position_ids(mask)} if self._accepts_position_ids else {}
            out = self.model(
                input_ids=ids, attention_mask=mask, use_cache=True, return_dict=True, **kwargs, **self._last_logits_only
            )
            self._state = _ContrastState(input_ids.shape[1], input_ids, out.cache, mask, None, None, group)
        return out.logits[:, -1, :]

    @torch.no_grad()
    def _step(self, input_ids: torch.LongTensor) -> torch.Tensor:
        state = self._state
        assert state is not None
        new_tokens = input_ids[:, -1:]
        if self.is_encoder_decoder:
            out = self.model(
                encoder_outputs=state.encoder_outputs,
                attention_mask=state.encoder_attention_mask,
                decoder_input_ids=new_tokens,
                cache=state.cache,
                use_cache=True,
                return_dict=True,
            )
        else:
            state.attention_mask = torch.cat([state.attention_mask, torch.ones_like(new_tokens)], dim=-1)
            kwargs = {}
            if self._accepts_position_ids:
                kwargs["position_ids"] = decoder_position_ids(state.attention_mask)[:, -1:]
            out = self.model(
                input_ids=new_tokens,
                attention_mask=state.attention_mask,
                cache=state.cache,
                use_cache=True,
                return_dict=True,
                **kwargs,
            )
        state.cache = out.cache
        state.prev_input_ids = input_ids
        return out.logits[:, -1, :]

    def _parent_rows(self, input_ids: torch.LongTensor) -> torch.LongTensor | None:
        """Which previous row each current row extends, or ``None`` if some row extends none.

        Beam search reorders rows every step without telling processors; the parent of a row is the
        previous row equal to its prefix. Matching is restricted to the row's own group (same input
        example, hence same contrast prompt), so a duplicate prefix may map to any equal row.
        """
        state = self._state
        assert state is not None
        prev = state.prev_input_ids
        if prev.shape[0] != input_ids.shape[0] or prev.shape[1] + 1 != input_ids.shape[1]:
            return None
        prefix = input_ids[:, :-1]
        if torch.equal(prefix, prev):
            return torch.arange(prev.shape[0], device=prev.device)
        g = state.group_size
        cur = prefix.view(-1, g, 1, prefix.shape[1])
        old = prev.view(-1, 1, g, prev.shape[1])
        match = (cur == old).all(dim=-1)  # (groups, g_cur, g_prev)
        if not bool(match.any(dim=-1).all()):
            return None
        parent_in_group = match.float().argmax(dim=-1)
        offsets = torch.arange(match.shape[0], device=prev.device).unsqueeze(1) * g
        return (parent_in_group + offsets).reshape(-1)

    def _contrast_logits(self, input_ids: torch.LongTensor) -> torch.Tensor:
        if self._state is not None:
            parents = self._parent_rows(input_ids)
            if parents is not None:
                if not torch.equal(parents, torch.arange(parents.numel(), device=parents.device)):
                    self._state.cache.reorder_cache(parents)
                return self._step(input_ids)
            state = self._state
            prev, cur_len = state.prev_input_ids, input_ids.shape[1]
            # Assisted / speculative decoding rolls the sequence back to a prefix of what was seen (and
            # re-scores it); a fresh generate() call starts from a prompt that is not such a prefix.
            rolled_back = (
                prev.shape[0] == input_ids.shape[0]
                and state.prompt_len < cur_len <= prev.shape[1]
                and torch.equal(input_ids[:, :-1], prev[:, : cur_len - 1])
            )
            if rolled_back:
                raise ValueError(
                    f"ContrastiveRationaleLogitsProcessor: the sequence moved back to an earlier prefix (length "
                    f"{cur_len - 1} of the {prev.shape[1]} tokens it last saw) plus one token. Either this is a "
                    "new generate() call whose prompt is a prefix of an earlier output plus one token: call "
                    "`proc.reset()` before it, or run each call inside `with proc:` (both fix it). Or it is "
                    "assisted / speculative generation (assistant_model, prompt_lookup_num_tokens), which rolls "
                    "sequences back and is not supported."
                )
            logger.debug("New generate() call detected: resetting the contrast cache.")
            self._state = None
        return self._start(input_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.alpha == 0:
            return contrastive_scores(scores, scores, 0.0)
        contrast_logits = self._contrast_logits(input_ids)
        if contrast_logits.shape[-1] != scores.shape[-1]:
            raise ValueError(
                f"The contrast model's vocabulary ({contrast_logits.shape[-1]}) differs from the scores of "
                f"generate() ({scores.shape[-1]}): `model` must be the model that is generating."
            )
        return contrastive_scores(
            scores,
            contrast_logits,
            self.alpha,
            stop_token_ids=self.stop_token_ids,
            plausibility_threshold=self.plausibility_threshold,
        ).to(scores.dtype)
