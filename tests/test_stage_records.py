"""Stage records (stage_records.py): what decided a recipe stage's cached result, compared before it is read back.

The recipe-level behaviour (a re-run with other settings refused, stage by stage) is in test_recipes.py.
"""

from __future__ import annotations

import dataclasses
import enum
import logging

import pytest

from scott_distill.stage_records import STAGE_RECORD_NAME, check_stage_record, settings_of, write_stage_record


class Schedule(str, enum.Enum):
    LINEAR = "linear"


@dataclasses.dataclass
class Settings:
    rate: float = 0.5
    schedule: Schedule = Schedule.LINEAR
    tags: tuple[str, ...] = ("a", "b")
    batch_size: int = 8


def test_settings_of_reads_as_json_reads_back():
    assert settings_of(Settings()) == {"rate": 0.5, "schedule": "linear", "tags": ["a", "b"], "batch_size": 8}
    assert settings_of(Settings(), ("rate", "tags")) == {"rate": 0.5, "tags": ["a", "b"]}
    assert settings_of(Settings(), leave_out=("batch_size",)) == {"rate": 0.5, "schedule": "linear",
                                                                  "tags": ["a", "b"]}
    with pytest.raises(ValueError, match=r"Settings has no fields \['learning_rate'\]"):
        settings_of(Settings(), ("rate", "learning_rate"))


def test_a_record_that_matches_passes_and_one_that_differs_is_refused_naming_each_difference(tmp_path):
    record = {"teacher": "t", "rows": {"train": "abc", "eval": "def"}, "train": settings_of(Settings())}
    write_stage_record(tmp_path, record)
    check_stage_record(tmp_path, {**record, "train": settings_of(Settings())}, "train")  # equal: no error
    changed = {"teacher": "t2", "rows": {"train": "abc", "eval": "xyz"}, "train": settings_of(Settings(rate=0.25)),
               "simulator": "s"}
    with pytest.raises(ValueError) as err:
        check_stage_record(tmp_path, changed, "train")
    message = str(err.value)
    assert f"{tmp_path} holds the train stage's result, made with other settings (" in message
    for part in ("rows.eval: 'def' -> 'xyz'", "simulator: (not recorded) -> 's'", "teacher: 't' -> 't2'",
                 "train.rate: 0.5 -> 0.25"):
        assert part in message
    with pytest.raises(ValueError, match=r"teacher: 't' -> \(not a setting now\)"):
        check_stage_record(tmp_path, {k: v for k, v in record.items() if k != "teacher"}, "train")


def test_many_differences_are_shown_in_part(tmp_path):
    write_stage_record(tmp_path, {f"k{i:02d}": i for i in range(1, 13)})
    with pytest.raises(ValueError, match=r"k08: 8 -> -8; and 4 more\)"):
        check_stage_record(tmp_path, {f"k{i:02d}": -i for i in range(1, 13)}, "evaluate")


def test_no_record_is_used_with_a_warning_and_an_unreadable_one_is_refused(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="scott_distill.stage_records"):
        check_stage_record(tmp_path, {"a": 1}, "rationalize")
    assert "rationalize: the cached result in" in caplog.text and "made before stage records" in caplog.text
    (tmp_path / STAGE_RECORD_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=rf"{STAGE_RECORD_NAME} is unreadable .*cached rationalize result"):
        check_stage_record(tmp_path, {"a": 1}, "rationalize")


def test_the_recorded_setting_names_are_fields_of_the_argument_classes():
    # a name transformers dropped (warmup_ratio in 5.x) would be read by no record and compared by none
    from scott_distill.las.pipeline import LASConfig
    from scott_distill.recipes import LAS_SETTINGS
    from scott_distill.student.run_record import LENGTH_SETTINGS, RUN_SETTINGS
    from scott_distill.student.trainer import CounterfactualTrainingArguments

    assert set(RUN_SETTINGS) | set(LENGTH_SETTINGS) <= {f.name for f in dataclasses.fields(
        CounterfactualTrainingArguments)}
    assert set(LAS_SETTINGS) <= {f.name for f in dataclasses.fields(LASConfig)}
