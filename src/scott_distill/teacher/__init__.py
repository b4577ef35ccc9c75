"""The teacher side of SCOTT: contrastive decoding and dataset-scale rationalization.

* ``scoring``: the contrastive score, the stop rule and their argument checks.
* ``_branch``: the forward calls of one decoding branch (prefill, step, cache reorder), for both model kinds.
* ``processor``: ``ContrastiveRationaleLogitsProcessor``, the contrast branch inside any ``generate``.
* ``fused``: ``contrastive_generate``, both branches in one forward per step.
* ``prompts``: the few-shot rationalization prompts (``prompts/*.txt``).
* ``shards``: the resumable, sharded output of a run.
* ``rationalize``: ``RationalizeConfig`` and ``generate_rationales``.
"""
