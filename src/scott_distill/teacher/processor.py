"""SCOTT's teacher-side contrastive decoding as a ``transformers`` logits processor."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from ._branch import DecodingBranch, SharedPrefix
from .scoring import (
    check_alpha,
    check_plausibility_threshold,
    contrastive_scores,
    described,
    end_token_ids,
    left_padded,
)

logger = logging.getLogger(__name__)

__all__ = ["ContrastiveRationaleLogitsProcessor"]


@dataclass
class _ContrastState:
    """Per-``generate`` state of the contrast branch."""

    prompt_len: int  # length of ``input_ids`` at the first call (decoder-only prompt length)
    prev_input_ids: torch.Tensor
    branch: DecodingBranch
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
        shared_prefix (`SharedPrefix`, *optional*):
            A token prefix every contrast prompt starts with (decoder-only): the contrast branch starts from a
            copy of its cache and prefills only the suffixes. Give ``generate`` the same prefix's cache with
            ``**shared_prefix.generate_inputs(input_ids, attention_mask)`` to reuse it in the gold branch too.

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
        contrast_input_ids: torch.Tensor,
        contrast_attention_mask: torch.Tensor | None = None,
        alpha: float = 0.5,
        stop_token_ids: Iterable[int] | None = None,
        plausibility_threshold: float | None = None,
        shared_prefix: SharedPrefix | None = None,
    ) -> None:
        plausibility_threshold = check_plausibility_threshold(plausibility_threshold)
        alpha = check_alpha(alpha, plausibility_threshold)
        if not isinstance(contrast_input_ids, torch.Tensor) or contrast_input_ids.dim() != 2:
            raise ValueError(
                "`contrast_input_ids` must be a 2-D LongTensor of shape (batch_size, length), "
                f"got {described(contrast_input_ids)}."
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
                f"{tuple(contrast_input_ids.shape)}, got {described(contrast_attention_mask)}."
            )
        self.model = model
        self.alpha = alpha
        self.plausibility_threshold = plausibility_threshold
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        ids, mask = contrast_input_ids.long(), contrast_attention_mask.long()
        if not self.is_encoder_decoder:
            ids, mask = left_padded(ids, mask, "contrast_input_ids")
        elif shared_prefix is not None:
            raise ValueError("`shared_prefix` needs a decoder-only model: an encoder is bidirectional.")
        if shared_prefix is not None:
            ids, mask = shared_prefix.split(ids, mask, "contrast_input_ids")
        self.shared_prefix = shared_prefix
        self.contrast_input_ids = ids
        self.contrast_attention_mask = mask
        self.stop_token_ids = end_token_ids(model, stop_token_ids)
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

    def _check_rows(self, input_ids: torch.Tensor) -> int:
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
                    wrong.replace(f"generate() runs {rows} rows",
                                  f"generate() encoded {seen} input rows ({rows} after expansion)")
                )
        elif group > 1:
            # an expansion group holds copies of one prompt; different prompts mean the rows do not match
            grouped = input_ids.view(n, group, -1)
            if not bool((grouped == grouped[:, :1]).all()):
                raise ValueError(f"{wrong} The {rows} input rows are not {n} prompts repeated {group} times each.")
        return group

    def _start(self, input_ids: torch.Tensor) -> torch.Tensor:
        group = self._check_rows(input_ids)
        device = input_ids.device
        ids = self.contrast_input_ids.to(device).repeat_interleave(group, dim=0)
        mask = self.contrast_attention_mask.to(device).repeat_interleave(group, dim=0)
        branch = DecodingBranch(self.model)
        # encoder-decoder: the contrast branch continues generate's decoder ids (its start token)
        logits = branch.prefill(ids, mask, decoder_input_ids=input_ids if self.is_encoder_decoder else None,
                                prefix=self.shared_prefix)
        self._encoder_rows = None  # the branch's own encoder call, not generate's
        self._state = _ContrastState(input_ids.shape[1], input_ids, branch, group)
        return logits

    def _step(self, input_ids: torch.Tensor) -> torch.Tensor:
        state = self._state
        assert state is not None
        logits = state.branch.step(input_ids[:, -1:])
        state.prev_input_ids = input_ids
        return logits

    def _parent_rows(self, input_ids: torch.Tensor) -> torch.Tensor | None:
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

    def _contrast_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self._state is not None:
            parents = self._parent_rows(input_ids)
            if parents is not None:
                if not torch.equal(parents, torch.arange(parents.numel(), device=parents.device)):
                    self._state.branch.reorder(parents)
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
            return cast(torch.FloatTensor, contrastive_scores(scores, scores, 0.0))
        contrast_logits = self._contrast_logits(input_ids)
        if contrast_logits.shape[-1] != scores.shape[-1]:
            raise ValueError(
                f"The contrast model's vocabulary ({contrast_logits.shape[-1]}) differs from the scores of "
                f"generate() ({scores.shape[-1]}): `model` must be the model that is generating."
            )
        combined = contrastive_scores(
            scores,
            contrast_logits,
            self.alpha,
            stop_token_ids=self.stop_token_ids,
            plausibility_threshold=self.plausibility_threshold,
        )
        return cast(torch.FloatTensor, combined.to(scores.dtype))
