"""Stage records (stage_records.py): what decided a recipe stage's cached result, compared before it is read back.

The recipe-level behaviour (a re-run with other settings refused, stage by stage) is in test_recipes.py.
"""

from __future__ import annotations

import dataclasses
import enum

import pytest

from scott_distill.stage_records import (
    STAGE_RECORD_NAME,
    check_stage_record,
    model_name,
    settings_of,
    write_stage_record,
)


class Schedule(str, enum.Enum):
    LINEAR = "linear"


@dataclasses.dataclass
class Settings:
    rate: float = 0.5
    schedule: Schedule = Schedule.LINEAR
    tags: tuple[str, ...] = ("a", "b")
    batch_size: int = 8


def test_settings_of_reads_as_json_reads_back_keyed_by_the_flag():
    assert settings_of(Settings()) == {"rate": 0.5, "schedule": "linear", "tags": ["a", "b"], "batch_size": 8}
    assert settings_of(Settings(), ("rate", "tags"), prefix="train.") == {"train.rate": 0.5, "train.tags": ["a", "b"]}
    assert settings_of(Settings(), leave_out=("batch_size",)) == {"rate": 0.5, "schedule": "linear",
                                                                  "tags": ["a", "b"]}
    with pytest.raises(ValueError, match=r"Settings has no fields \['learning_rate'\]"):
        settings_of(Settings(), ("rate", "learning_rate"))


def test_model_name_is_one_name_for_one_local_folder(tmp_path, monkeypatch):
    (tmp_path / "student").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_name("student") == model_name("./student/") == model_name(str(tmp_path / "student")) == str(
        tmp_path / "student")
    assert model_name("org/some-model") == "org/some-model"  # not a local path: a Hub id or short name, as given


def test_a_record_that_matches_passes_and_one_that_differs_is_refused_naming_each_difference(tmp_path):
    record = {"teacher": "t", "rows": "abc", **settings_of(Settings(), prefix="train.")}
    write_stage_record(tmp_path, record)
    check_stage_record(tmp_path, dict(record), "train", lambda keys: "delete X")  # equal: no error
    changed = {"teacher": "t2", "rows": "abc", **settings_of(Settings(rate=0.25), prefix="train."), "simulator": "s"}
    asked = []
    with pytest.raises(ValueError) as err:
        check_stage_record(tmp_path, changed, "train", lambda keys: asked.append(keys) or "delete X and Y")
    assert asked == [{"teacher", "train.rate", "simulator"}]  # what to delete depends on what differs
    message = str(err.value)
    assert message.startswith(f"{tmp_path} holds the train stage's result, made with other settings (")
    for part in ("simulator: (not recorded) -> 's'", "teacher: 't' -> 't2'", "train.rate: 0.5 -> 0.25",
                 "Run with the settings it was made with, use another output_dir, or delete X and Y to make it again"):
        assert part in message
    assert "rows" not in message
    with pytest.raises(ValueError, match=r"teacher: 't' -> \(not a setting now\)"):
        check_stage_record(tmp_path, {k: v for k, v in record.items() if k != "teacher"}, "train", lambda keys: "X")


def test_many_differences_are_shown_in_part(tmp_path):
    write_stage_record(tmp_path, {f"k{i:02d}": i for i in range(1, 13)})
    with pytest.raises(ValueError, match=r"k08: 8 -> -8; and 4 more\)"):
        check_stage_record(tmp_path, {f"k{i:02d}": -i for i in range(1, 13)}, "evaluate", lambda keys: "delete X")


def test_a_result_without_a_record_and_one_with_an_unreadable_record_are_refused(tmp_path):
    # a record written later, from that later run's flags, would vouch for settings that never made the result
    with pytest.raises(ValueError, match=rf"holds a rationalize result without {STAGE_RECORD_NAME} .* cannot be "
                                         r"checked\. Use another output_dir, or delete R to make it again"):
        check_stage_record(tmp_path, {"a": 1}, "rationalize", lambda keys: "delete R" if keys is None else "?")
    (tmp_path / STAGE_RECORD_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=rf"{STAGE_RECORD_NAME} is unreadable .*cached rationalize result"):
        check_stage_record(tmp_path, {"a": 1}, "rationalize", lambda keys: "delete R")


def test_the_recorded_setting_names_are_fields_of_the_argument_classes():
    # a name transformers dropped (warmup_ratio in 5.x) would be read by no record and compared by none
    from scott_distill.las.pipeline import LASConfig
    from scott_distill.recipes import LAS_SETTINGS
    from scott_distill.student.run_record import LENGTH_SETTINGS, RUN_SETTINGS
    from scott_distill.student.trainer import CounterfactualTrainingArguments

    assert set(RUN_SETTINGS) | set(LENGTH_SETTINGS) <= {f.name for f in dataclasses.fields(
        CounterfactualTrainingArguments)}
    assert set(LAS_SETTINGS) <= {f.name for f in dataclasses.fields(LASConfig)}


def test_a_training_record_from_before_a_setting_was_recorded_still_resumes():
    # RUN_SETTINGS grew (lr_scheduler_kwargs, optim_args, ...): a train_run.json written before cannot say what they
    # were, so they are not compared; the settings it has still are
    from scott_distill.student.run_record import _differences

    fingerprints = {"student_config": "c", "student_weights": "w", "train_dataset": "d"}
    old = {"settings": {"learning_rate": 5e-5}, **fingerprints}
    now = {"settings": {"learning_rate": 5e-5, "dataloader_drop_last": False}, **fingerprints}
    assert _differences(old, now) == []
    assert _differences(old, {**now, "settings": {"learning_rate": 1e-4, "dataloader_drop_last": False}}) == [
        "learning_rate: 5e-05 -> 0.0001"]
