"""The student side of SCOTT: counterfactual training, the trained student, and its evaluation.

``encoding`` (the token ids of every prompt and target), ``collator`` (padded batches), ``trainer``
(``CounterfactualTrainer`` and its arguments), ``model`` (``RationaleStudent``), ``evaluation``
(accuracy, forced and perturbed rationales). Import from the modules, or the names from ``scott_distill``.
"""
