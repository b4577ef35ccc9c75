"""Loaders for CommonsenseQA, StrategyQA, CREAK, QASC and CoS-E v1.0 into the normalised schema."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ..io import load_table

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "TaskSpec", "get_task", "load_task", "normalize_rows"]

SCHEMA = ("id", "question", "choices", "answer", "rationale")
Row = Mapping[str, Any]


def _mc_question(row: Row) -> tuple[str, list[str], list[str]]:
    """CommonsenseQA / QASC: question stem, choice texts and labels (file or Hub layout)."""
    q = row["question"]
    if isinstance(q, Mapping):  # published jsonl: {"stem", "choices": [{"label", "text"}]}
        return q["stem"], [c["text"] for c in q["choices"]], [c["label"] for c in q["choices"]]
    ch = row["choices"]  # Hub: {"label": [...], "text": [...]}
    return q, list(ch["text"]), list(ch["label"])


def _csqa(row: Row) -> dict[str, Any]:
    question, choices, labels = _mc_question(row)
    key = row.get("answerKey")
    if key not in labels:
        raise ValueError(f"answerKey {key!r} not among the labels {labels}")
    return {"id": str(row["id"]), "question": question, "choices": choices, "answer": choices[labels.index(key)],
            "rationale": None}


def _qasc(row: Row) -> dict[str, Any]:
    out = _csqa(row)
    facts = [row.get("fact1"), row.get("fact2")]
    out["rationale"] = " ".join(f.strip().rstrip(".") + "." for f in facts if f) or None
    return out


def _bool_answer(value: Any, names: tuple[str, str]) -> str:
    if isinstance(value, bool):
        return names[0] if value else names[1]
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return names[0]
    if text in ("false", "no", "0"):
        return names[1]
    raise ValueError(f"cannot read {value!r} as a boolean answer")


def _strategyqa(row: Row) -> dict[str, Any]:
    facts = row.get("facts")
    rationale = " ".join(facts) if isinstance(facts, list) and facts else (facts or None)
    return {"id": str(row.get("qid", row.get("id"))), "question": row["question"], "choices": ["yes", "no"],
            "answer": _bool_answer(row["answer"], ("yes", "no")), "rationale": rationale}


def _creak(row: Row) -> dict[str, Any]:
    return {"id": str(row.get("ex_id", row.get("id"))), "question": f"Claim: {row['sentence']}",
            "choices": ["true", "false"], "answer": _bool_answer(row["label"], ("true", "false")),
            "rationale": row.get("explanation") or None}


def _cose(row: Row) -> dict[str, Any]:
    if "choice_0" in row:  # LAS-NL-Explanations CSV: id, question, choice_0..2, label, human_exp
        choices = [row[f"choice_{i}"] for i in range(3)]
        return {"id": str(row["id"]), "question": row["question"], "choices": choices,
                "answer": choices[int(row["label"])], "rationale": row.get("human_exp") or None}
    # Hub `cos_e` (v1.0 config): choices, answer, abstractive_explanation
    return {"id": str(row["id"]), "question": row["question"], "choices": list(row["choices"]),
            "answer": row["answer"], "rationale": row.get("abstractive_explanation") or None}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    normalize: Callable[[Row], dict[str, Any]]
    required_columns: tuple[str, ...]
    hub_id: str
    hub_config: str | None = None


TASKS: dict[str, TaskSpec] = {
    "csqa": TaskSpec("csqa", _csqa, ("id", "question", "answerKey"), "tau/commonsense_qa"),
    "strategyqa": TaskSpec("strategyqa", _strategyqa, ("question", "answer"), "ChilleD/StrategyQA"),
    "creak": TaskSpec("creak", _creak, ("sentence", "label"), "amydeng2000/CREAK"),
    "qasc": TaskSpec("qasc", _qasc, ("id", "question", "answerKey"), "allenai/qasc"),
    "cose": TaskSpec("cose", _cose, ("id", "question"), "cos_e", "v1.0"),
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; expected one of {sorted(TASKS)}.") from None


def normalize_rows(dataset: datasets.Dataset, task: str) -> datasets.Dataset:
    """Map a dataset in its published (or Hub) format to the normalised schema, keeping other fields."""
    spec = get_task(task)
    if set(SCHEMA[:4]) <= set(dataset.column_names) and isinstance(dataset[0]["choices"], list):
        return validate(dataset)
    missing = [c for c in spec.required_columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{task}: data lacks columns {missing}; it has {dataset.column_names}.")
    rows = []
    for i, row in enumerate(dataset):
        try:
            norm = spec.normalize(row)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{task}: row {i} cannot be normalised: {exc}") from exc
        extra = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items() if k not in norm}
        rows.append({**norm, **{f"orig_{k}" if k in SCHEMA else k: v for k, v in extra.items()}})
    return validate(datasets.Dataset.from_list(rows))


def validate(dataset: datasets.Dataset) -> datasets.Dataset:
    for i, (choices, answer) in enumerate(zip(dataset["choices"], dataset["answer"])):
        if answer not in choices:
            raise ValueError(f"row {i}: answer {answer!r} is not among the choices {choices}.")
        if len(choices) < 2:
            raise ValueError(f"row {i}: needs at least two choices, got {choices}.")
    if "id" not in dataset.column_names:
        dataset = dataset.add_column("id", [str(i) for i in range(len(dataset))])
    if "rationale" not in dataset.column_names:
        dataset = dataset.add_column("rationale", [None] * len(dataset))
    return dataset


def load_task(task: str, data: str | None = None, split: str = "train", **kwargs: Any) -> datasets.Dataset:
    """Load ``task`` from a local file/folder in its published format, or from the Hub.

    ``data=None`` uses the task's Hub dataset id (see ``TASKS``; these ids could not be checked offline).
    A ``.json`` file holding one JSON array (StrategyQA's published format) is read too.
    """
    spec = get_task(task)
    if data is None:
        args = (spec.hub_id, spec.hub_config) if spec.hub_config else (spec.hub_id,)
        raw = datasets.load_dataset(*args, split=split, **kwargs)
    else:
        path = Path(data)
        if path.is_file() and path.suffix == ".json" and path.read_text()[:1].lstrip() == "[":
            raw = datasets.Dataset.from_list(json.loads(path.read_text()))
        else:
            raw = load_table(data, split=split, **kwargs)
    return normalize_rows(raw, task)
