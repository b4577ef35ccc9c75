"""The Hub: model and dataset cards, and uploads.

Everything is written locally first; the push only uploads. A failed push (network, auth) leaves the local
artefacts intact and logs the command that retries it. A student is pushed with
``RationaleStudent.push_to_hub`` (``scott_distill.student.model``), a rationale dataset with
`push_rationale_dataset`.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData

from .formats import StudentFormat

logger = logging.getLogger(__name__)

__all__ = ["HubPushError", "push_rationale_dataset", "render_dataset_card", "render_student_card", "upload_folder"]

# metric key -> (EvalResult metric_type, display name)
CARD_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "las": ("las", "LAS"),
    "counterfactual_consistency": ("counterfactual_consistency", "Counterfactual consistency"),
    "accuracy_gold_rationale": ("accuracy_gold_rationale", "Accuracy (gold rationale forced)"),
    "accuracy_perturbed_rationale": ("accuracy_perturbed_rationale", "Accuracy (rationale perturbed)"),
}


class HubPushError(RuntimeError):
    """The upload failed; the local folder is intact and the message says how to retry."""


def _template(name: str) -> str:
    return str(resources.files("scott_distill.model_cards") / name)


def render_student_card(
    repo_id: str,
    fmt: StudentFormat,
    metrics: dict[str, float],
    task: str,
    dataset_id: str | None = None,
    base_model: str | None = None,
    teacher: str | None = None,
    perturbation: str = "wrong",
    decoding_alpha: float = 0.5,
    counterfactual_alpha: float = 0.5,
    n_train: int | None = None,
    example: tuple[str, list[str]] = ("Where would you keep milk cold?", ["fridge", "oven", "shelf"]),
) -> ModelCard:
    """Model card from ``model_cards/student.md`` with ``model-index`` results built from ``EvalResult``s.

    ``metrics`` may hold ``accuracy``, ``las`` (+ ``las_ci_low`` / ``las_ci_high``), ``counterfactual_consistency``,
    ``accuracy_gold_rationale`` and ``accuracy_perturbed_rationale``.
    """
    results = []
    for key, (metric_type, name) in CARD_METRICS.items():
        if key in metrics:
            if key == "las" and "las_ci_low" in metrics:
                name = f"LAS (95% CI {metrics['las_ci_low']:.3f} to {metrics['las_ci_high']:.3f})"
            results.append(EvalResult(
                task_type="multiple-choice", task_name=task, dataset_type=dataset_id or task,
                dataset_name=dataset_id or task, metric_type=metric_type, metric_name=name,
                metric_value=float(metrics[key]),
            ))
    data = ModelCardData(
        language="en", license="apache-2.0", library_name="transformers", base_model=base_model,
        tags=["scott-distill", "chain-of-thought", "rationale", "distillation"],
        datasets=[dataset_id] if dataset_id else None, model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )
    source = fmt.source("{question}", ["{c1}", "{c2}"])
    target, _ = fmt.target("{rationale}", "{answer}")
    return ModelCard.from_template(
        data, template_path=_template("student.md"), repo_id=repo_id, model_name=repo_id.split("/")[-1],
        example_question=example[0], example_choices=json.dumps(example[1]),
        source_template=source.replace("\n", "\\n"), target_template=target, answer_prefix=fmt.answer_prefix,
        base_model=base_model or "unknown", task=task, teacher=teacher or "unknown", perturbation=perturbation,
        decoding_alpha=decoding_alpha, counterfactual_alpha=counterfactual_alpha, n_train=n_train or "unknown",
        metrics={CARD_METRICS[k][1] if k in CARD_METRICS else k: f"{v:.4f}" for k, v in metrics.items()},
    )


def upload_folder(folder: Path, repo_id: str, repo_type: str, private: bool, revision: str | None,
                  token: str | None, message: str) -> str:
    """Create ``repo_id`` (and branch ``revision``) if needed and upload ``folder``; returns the commit URL.

    On failure the local folder stays and ``HubPushError`` says how to retry (``hf upload ...``).
    """
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                 revision=revision, commit_message=message)
    except Exception as exc:  # network, auth, server: the local folder stays, say how to retry
        retry = (f"hf upload {repo_id} {folder} . --repo-type {repo_type}"
                 + (f" --revision {revision}" if revision else "") + (" --private" if private else ""))
        reason = _failure_reason(exc)
        logger.error("Push to %s failed (%s). Local files are intact in %s. Retry with:\n  %s",
                     repo_id, reason, folder, retry)
        raise HubPushError(f"push to {repo_id} failed: {reason}. Local files: {folder}. Retry: {retry}") from exc
    return str(getattr(info, "commit_url", info))


def _failure_reason(exc: BaseException) -> str:
    """The error and what caused it: huggingface_hub wraps a failed LFS transfer in "Error while uploading 'x'",
    and the HTTP status that says why (an expired URL, a server error) is only in its ``__cause__``."""
    reasons: list[str] = []
    link: BaseException | None = exc
    while link is not None and len(reasons) < 4:
        text = str(link).strip().rstrip(".")
        if text and text not in reasons:
            reasons.append(text)
        link = link.__cause__
    return "; caused by: ".join(reasons)


def render_dataset_card(dataset: datasets.Dataset, repo_id: str, settings: dict[str, Any]) -> DatasetCard:
    n_cf = sum(1 for x in dataset["counterfactual_rationale"] if x) if "counterfactual_rationale" in \
        dataset.column_names else 0
    data = DatasetCardData(language="en", license="other", task_categories=["question-answering"],
                           tags=["scott-distill", "rationales", "chain-of-thought"], pretty_name=repo_id)
    return DatasetCard.from_template(
        data, template_path=_template("rationale_dataset.md"), dataset_name=repo_id.split("/")[-1],
        task=settings.get("task"), teacher=settings.get("teacher"), prompt=settings.get("prompt"),
        perturbation=settings.get("perturbation"), alpha=settings.get("alpha"),
        max_new_tokens=settings.get("max_new_tokens"), seed=settings.get("seed"), n_rows=len(dataset),
        n_counterfactual=n_cf, n_empty=sum(1 for x in dataset["rationale"] if not x),
    )


def push_rationale_dataset(
    dataset: datasets.Dataset,
    repo_id: str,
    local_dir: str | os.PathLike,
    settings: dict[str, Any],
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Write the dataset as parquet plus a dataset card to ``local_dir`` and upload that folder."""
    folder = Path(local_dir)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    render_dataset_card(dataset, repo_id, settings).save(folder / "README.md")
    return upload_folder(folder, repo_id, "dataset", private, revision, token, "Upload SCOTT rationales")
