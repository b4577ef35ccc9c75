"""Loaders for CommonsenseQA, StrategyQA, CREAK, QASC and CoS-E v1.0 into the normalised schema."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ..files import load_table

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA", "TASKS", "TaskSpec", "get_task", "load_task", "normalize_rows", "repair_mojibake", "validate"]

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


# Windows-1252 characters of the bytes 0x80-0x9F, mapped to the Latin-1 character of the same byte: a wrong decoding
# as cp1252 gives "’" -> "â€™" where one as Latin-1 gives "â\x80\x99"; undoing either needs the byte back. (Bytes
# cp1252 leaves undefined, 0x81 0x8D 0x8F 0x90 0x9D, come out of lenient decoders as the Latin-1 C1 control.)
_CP1252_TO_LATIN1 = {ord(bytes([b]).decode("cp1252")): b for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}
_CONTINUATION = "[\u0080-\u00bf" + "".join(map(chr, _CP1252_TO_LATIN1)) + "]"  # a UTF-8 byte 0x80-0xBF, misread
# What a wrong decoding of UTF-8 leaves and real text practically never has: "Â"/"Ã"/"Ä"/"Å" + a continuation byte
# (U+0080-U+017F, "Ã©" = é, "Å‚" = ł, "Å’" = Œ); "â" + two ("â€™" = ’, U+2000-U+2FFF); any lead byte + a C1 control (a Latin-1 misreading; C1
# controls do not occur in text); two 2-byte or two 3-byte sequences in a row (a word of Greek, Cyrillic, Arabic,
# IPA: "Î»Î·", or CJK). One accented capital or "ß" before a curly quote is not enough: "CAFÉ’s" and "Fuß“" are
# valid UTF-8 when re-encoded ("CAFɒs", "Fuߓ"), so a round trip alone is no evidence of mojibake.
_MOJIBAKE_MARKER = re.compile(
    f"[\u00c2-\u00c5]{_CONTINUATION}|\u00e2{_CONTINUATION}{{2}}|[\u00c2-\u00f4][\u0080-\u009f]"
    f"|(?:[\u00c6-\u00df]{_CONTINUATION}){{2}}|(?:[\u00e0-\u00ef]{_CONTINUATION}{{2}}){{2}}")


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Latin-1 or Windows-1252, once or repeatedly ("Ã©" -> "é", "â€™" -> "’";
    CoS-E v1.0 has explanations decoded wrongly 8 times over, hundreds of characters for one apostrophe).

    One step re-encodes the whole string as Latin-1/cp1252 bytes and decodes them as UTF-8. It is applied while the
    text holds a mojibake marker (``_MOJIBAKE_MARKER``), the round trip is exact (every character is one such byte,
    the bytes are valid UTF-8) and the text gets shorter; it stops at the first step that fails any of these. Text
    without markers ("café", "naïve", "“quoted”") or that does not round-trip as a whole (mojibake next to a valid
    "ï", or next to a character outside Latin-1/cp1252) is returned unchanged.

    Examples:

    >>> repair_mojibake("itâ€™s a cafÃ©")
    'it’s a café'
    >>> repair_mojibake("ÃƒÂ©")  # decoded wrongly twice
    'é'
    >>> repair_mojibake("naïve “café”")
    'naïve “café”'
    """
    while _MOJIBAKE_MARKER.search(text):
        try:
            fixed = text.translate(_CP1252_TO_LATIN1).encode("latin-1").decode("utf-8")
        except UnicodeError:  # a character that is no single byte, or bytes that are no UTF-8: not (only) mojibake
            return text
        if len(fixed) >= len(text):
            return text
        text = fixed
    return text


def _repair_text_fields(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (normalised schema) with ``repair_mojibake`` applied to its question, choices, answer and rationale:
    the same function on choices and answer, so an answer that was one of the choices still is."""
    for key in ("question", "answer", "rationale"):
        if isinstance(row.get(key), str):
            row[key] = repair_mojibake(row[key])
    if isinstance(row.get("choices"), list):
        row["choices"] = [repair_mojibake(c) if isinstance(c, str) else c for c in row["choices"]]
    return row


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
        return validate(_repair_text_columns(dataset))
    if not any(set(layout) <= columns for layout in spec.layouts):
        missing = min(([c for c in layout if c not in columns] for layout in spec.layouts), key=len)
        expected = " or ".join(str(list(layout)) for layout in spec.layouts)
        raise ValueError(f"{task}: data lacks columns {missing}; it has {dataset.column_names} (expected {expected}).")
    rows = []
    for i, row in enumerate(dataset):
        try:
            norm = _repair_text_fields(spec.normalize(row))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            where = f"row {i}" + (f" (id {row['id']!r})" if row.get("id") is not None else "")
            raise ValueError(f"{task}: {where} cannot be normalised: {exc}") from None
        extra = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items() if k not in norm}
        rows.append({**norm, **{f"orig_{k}" if k in SCHEMA else k: v for k, v in extra.items()}})
    return validate(datasets.Dataset.from_list(rows))


def _repair_text_columns(dataset: datasets.Dataset) -> datasets.Dataset:
    """``_repair_text_fields`` over a dataset already in the schema; the same dataset object when nothing changes.

    Columns are rebuilt from Python lists rather than with ``Dataset.map``: ``map`` reuses a cache file keyed by a
    fingerprint that hashes module functions by name, so a changed repair could be served from an old cache."""
    columns = [c for c in ("question", "choices", "answer", "rationale") if c in dataset.column_names]
    old = {c: dataset[c] for c in columns}
    rows = [_repair_text_fields({c: old[c][i] for c in columns}) for i in range(len(dataset))]
    changed = [c for c in columns if any(row[c] != before for row, before in zip(rows, old[c]))]
    if not changed:
        return dataset
    logger.info("Repaired mojibake (UTF-8 decoded as Latin-1/cp1252) in columns %s.", changed)
    order = dataset.column_names
    for c in changed:
        dataset = dataset.remove_columns(c).add_column(c, [row[c] for row in rows], feature=dataset.features[c])
    return dataset.select_columns(order)


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
