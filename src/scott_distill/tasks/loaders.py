"""Loaders for CommonsenseQA, StrategyQA, CREAK, QASC and CoS-E v1.0 into the normalised schema."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ..files import load_table

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA", "TASKS", "TaskSpec", "get_task", "load_task", "normalize_rows", "validate"]

SCHEMA = ("id", "question", "choices", "answer", "rationale")
Row = Mapping[str, Any]


# Markers datasets use for "no explanation" (CREAK's contrast set has explanation "n/a" on every row).
_NO_EXPLANATION = {"", "n/a", "na", "none", "null"}


def _explanation(value: Any) -> str | None:
    """A human explanation, or ``None`` where the data has none (missing, empty or a placeholder like "n/a")."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _NO_EXPLANATION else text


def _choice_index(label: Any, n_choices: int) -> int:
    """A 0-based answer index, checked: a missing label (an unlabelled test split) or one out of range is an error,
    never a silent wrap-around (``choices[-1]``)."""
    if label is None or (isinstance(label, float) and label != label) or str(label).strip() == "":
        raise ValueError("it has no label (an unlabelled split, such as CoS-E's test.csv, cannot be used)")
    try:
        value = float(label)
    except (TypeError, ValueError):
        raise ValueError(f"label {label!r} is not a choice index") from None
    if not value.is_integer() or not 0 <= value < n_choices:
        raise ValueError(f"label {label!r} is not a choice index in 0..{n_choices - 1}")
    return int(value)


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
    out["rationale"] = " ".join(f.rstrip(".") + "." for f in map(_explanation, facts) if f) or None
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
    rationale = _explanation(" ".join(facts) if isinstance(facts, list) else facts)
    return {"id": str(row.get("qid", row.get("id"))), "question": row["question"], "choices": ["yes", "no"],
            "answer": _bool_answer(row["answer"], ("yes", "no")), "rationale": rationale}


def _creak(row: Row) -> dict[str, Any]:
    return {"id": str(row.get("ex_id", row.get("id"))), "question": f"Claim: {row['sentence']}",
            "choices": ["true", "false"], "answer": _bool_answer(row["label"], ("true", "false")),
            "rationale": _explanation(row.get("explanation"))}


def _cose(row: Row) -> dict[str, Any]:
    if "choice_0" in row:  # LAS-NL-Explanations CSV: id, question, choice_0..2, label, human_exp
        choices = [row[f"choice_{i}"] for i in range(3)]
        return {"id": str(row["id"]), "question": row["question"], "choices": choices,
                "answer": choices[_choice_index(row.get("label"), len(choices))],
                "rationale": _explanation(row.get("human_exp"))}
    # Hub `cos_e` (v1.0 config): choices, answer, abstractive_explanation
    return {"id": str(row["id"]), "question": row["question"], "choices": list(row["choices"]),
            "answer": row["answer"], "rationale": _explanation(row.get("abstractive_explanation"))}


@dataclass(frozen=True)
class TaskSpec:
    """A task: its normaliser, the column sets of the layouts it reads (one must be present), its Hub id, and the
    column that carries human explanations in a layout that is otherwise already normalised (Hub ``cos_e``)."""

    name: str
    normalize: Callable[[Row], dict[str, Any]]
    layouts: tuple[tuple[str, ...], ...]
    hub_id: str
    hub_config: str | None = None
    explanation_column: str | None = None


TASKS: dict[str, TaskSpec] = {
    "csqa": TaskSpec("csqa", _csqa, (("id", "question", "answerKey"),), "tau/commonsense_qa"),
    "strategyqa": TaskSpec("strategyqa", _strategyqa, (("question", "answer"),), "ChilleD/StrategyQA"),
    "creak": TaskSpec("creak", _creak, (("sentence", "label"),), "amydeng2000/CREAK"),
    "qasc": TaskSpec("qasc", _qasc, (("id", "question", "answerKey"),), "allenai/qasc"),
    "cose": TaskSpec("cose", _cose, (("id", "question", "choice_0", "choice_1", "choice_2", "label"),
                                     ("id", "question", "choices", "answer")), "cos_e", "v1.0",
                     explanation_column="abstractive_explanation"),
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; expected one of {sorted(TASKS)}.") from None


def normalize_rows(dataset: datasets.Dataset, task: str) -> datasets.Dataset:
    """Map a dataset in its published (or Hub) format to the normalised schema, keeping other fields."""
    spec = get_task(task)
    if len(dataset) == 0:
        raise ValueError(f"{task}: the data has no rows.")
    columns = set(dataset.column_names)
    if set(SCHEMA[:4]) <= columns and isinstance(dataset[0]["choices"], list):
        if "rationale" not in columns and spec.explanation_column in columns:
            # e.g. Hub `cos_e`: already id/question/choices/answer, its human explanation under another name
            dataset = dataset.add_column("rationale", [_explanation(v) for v in dataset[spec.explanation_column]])
        return validate(dataset)
    if not any(set(layout) <= columns for layout in spec.layouts):
        missing = min(([c for c in layout if c not in columns] for layout in spec.layouts), key=len)
        expected = " or ".join(str(list(layout)) for layout in spec.layouts)
        raise ValueError(f"{task}: data lacks columns {missing}; it has {dataset.column_names} (expected {expected}).")
    rows = []
    for i, row in enumerate(dataset):
        try:
            norm = spec.normalize(row)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            where = f"row {i}" + (f" (id {row['id']!r})" if row.get("id") is not None else "")
            raise ValueError(f"{task}: {where} cannot be normalised: {exc}") from None
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
        source = spec.hub_id
    else:
        path = Path(data)
        if path.is_file() and path.suffix == ".json" and _first_character(path) == "[":
            raw = datasets.Dataset.from_list(json.loads(path.read_text()))
        else:
            raw = load_table(data, split=split, **kwargs)
        source = data
    try:
        return normalize_rows(raw, task)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _first_character(path: Path) -> str:
    """The first non-whitespace character of a file, read in chunks (a JSON array starts with '[')."""
    with open(path, encoding="utf-8") as f:
        while chunk := f.read(1 << 16):
            if stripped := chunk.lstrip():
                return stripped[0]
    return ""
