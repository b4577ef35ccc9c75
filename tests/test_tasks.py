"""Task loaders (published formats, real CoS-E / CREAK files) and rationalization prompts."""

from __future__ import annotations

import json

import datasets
import pytest
from conftest import shared_data_or_skip

from scott_distill.tasks import TASKS, load_task, normalize_rows
from scott_distill.teacher.prompts import load_prompt


def test_cose_real_file():
    path = shared_data_or_skip("cose_v1", "dev.csv")
    data = load_task("cose", str(path))
    assert len(data) == 950
    row = data[0]
    assert row["question"] == "Why do people who are dying receive social security payments?"
    assert row["choices"] == ["born again", "unable to work", "no longer exist"]
    assert row["answer"] == "unable to work" and row["rationale"].startswith("unable to work people")
    assert all(a in c for a, c in zip(data["answer"], data["choices"]))


def test_creak_real_file():
    path = shared_data_or_skip("creak", "dev.json")
    data = load_task("creak", str(path))
    assert len(data) > 1000
    assert set(data["answer"]) == {"true", "false"} and data[0]["choices"] == ["true", "false"]
    assert data[0]["question"].startswith("Claim: ") and data[0]["rationale"]
    assert "entity" in data.column_names  # original fields are kept


def test_published_formats_of_csqa_qasc_strategyqa(tmp_path):
    csqa = {"id": "q1", "question": {"stem": "Where is milk kept?", "choices": [
        {"label": "A", "text": "fridge"}, {"label": "B", "text": "oven"}]}, "answerKey": "A"}
    (tmp_path / "csqa.jsonl").write_text(json.dumps(csqa) + "\n")
    row = load_task("csqa", str(tmp_path / "csqa.jsonl"))[0]
    assert (row["question"], row["choices"], row["answer"]) == ("Where is milk kept?", ["fridge", "oven"], "fridge")

    qasc = {**csqa, "fact1": "fridges are cold", "fact2": "milk needs cold"}
    (tmp_path / "qasc.jsonl").write_text(json.dumps(qasc) + "\n")
    assert load_task("qasc", str(tmp_path / "qasc.jsonl"))[0]["rationale"] == "fridges are cold. milk needs cold."

    sqa = [{"qid": "s1", "question": "Can fish fly?", "answer": False, "facts": ["Fish swim.", "Fish lack wings."]}]
    (tmp_path / "strategyqa.json").write_text(json.dumps(sqa))
    row = load_task("strategyqa", str(tmp_path / "strategyqa.json"))[0]
    assert (row["choices"], row["answer"], row["rationale"]) == (["yes", "no"], "no", "Fish swim. Fish lack wings.")

    hub_style = datasets.Dataset.from_list([{"id": "h", "question": "Q?", "question_concept": "x",
                                             "choices": {"label": ["A", "B"], "text": ["a", "b"]},
                                             "answerKey": "B"}])
    assert normalize_rows(hub_style, "csqa")[0]["answer"] == "b"


def test_bad_input_messages(tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        load_task("nope", "x")
    with pytest.raises(ValueError, match="lacks columns"):
        normalize_rows(datasets.Dataset.from_list([{"foo": 1}]), "creak")
    bad = datasets.Dataset.from_list([{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "c"}])
    with pytest.raises(ValueError, match="not among the choices"):
        normalize_rows(bad, "csqa")
    assert set(TASKS) == {"csqa", "strategyqa", "creak", "qasc", "cose"}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_default_prompts_have_six_to_eight_answer_first_shots(task):
    prompt = load_prompt(task)
    shots = prompt.exemplars.strip().split("\n\n")
    assert 6 <= len(shots) <= 8
    for shot in shots:
        q, choices, a = shot.split("\n")
        assert q.startswith("Q: ") and choices.startswith("Answer Choices: (a) ") and a.startswith("A: The answer is ")


def test_prompt_render_override_and_clean(tmp_path, tokenizer):
    prompt = load_prompt("cose")
    text = prompt.render("Where is ice?", ["freezer", "oven"], "freezer")
    assert text.endswith("Q: Where is ice?\nAnswer Choices: (a) freezer (b) oven\nA: The answer is freezer.")
    assert prompt.render("Where is ice?", ["freezer", "oven"], None).endswith("(b) oven\nA:")
    custom = load_prompt("Question: {question} Options: {choices} Gold: {answer}. Why:")
    assert custom.render("Q?", ["x", "y"], "x") == "Question: Q? Options: (a) x (b) y Gold: x. Why:"
    zero_shot = load_prompt("Q: {question}\nAnswer Choices: {choices}\nA: {answer_sentence}")
    assert zero_shot.render("Q?", ["x", "y"], "x") == "Q: Q?\nAnswer Choices: (a) x (b) y\nA: The answer is x."
    with_shots = load_prompt("Q: a\nA: b\n\nQ: {question}\nA: {answer_sentence}")
    assert with_shots.render("Q?", ["x"], None) == "Q: a\nA: b\n\nQ: Q?\nA:"
    (tmp_path / "p.txt").write_text("Q: a\nAnswer Choices: (a) b\nA: The answer is b. c\n")
    assert load_prompt(str(tmp_path / "p.txt")).exemplars.startswith("Q: a")
    assert prompt.clean(" Ice is cold.\nQ: next") == "Ice is cold."
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    try:
        chat = prompt.render("Where is ice?", ["freezer", "oven"], "freezer", tokenizer, use_chat_template=True)
    finally:
        tokenizer.chat_template = None
    assert chat.startswith("<user>Q: Where would") and chat.endswith("<assistant>The answer is freezer.")
    with pytest.raises(ValueError, match="chat template"):
        prompt.render("q", ["a", "b"], "a", tokenizer, use_chat_template=True)


def _cose_with_label(tmp_path, row: int, label: str):
    """The real CoS-E dev file with one row's label replaced."""
    import csv

    with open(shared_data_or_skip("cose_v1", "dev.csv"), newline="") as f:
        rows = list(csv.DictReader(f))[:20]
    rows[row]["label"] = label
    path = tmp_path / f"dev_label_{label or 'missing'}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, rows[row]["id"]


@pytest.mark.parametrize("label", ["3", "-1", "", "1.5"])
def test_cose_bad_label_names_file_and_row(tmp_path, label):
    """Label 3 was a bare IndexError, -1 silently the last choice, a missing one an int() TypeError."""
    path, row_id = _cose_with_label(tmp_path, 7, label)
    with pytest.raises(ValueError, match=rf"{path.name}: cose: row 7 \(id '{row_id}'\) cannot be normalised: "
                                         r"(label .* is not a choice index in 0\.\.2|it has no label)"):
        load_task("cose", str(path))


def test_cose_test_split_without_labels_is_refused_clearly():
    path = shared_data_or_skip("cose_v1", "test.csv")
    with pytest.raises(ValueError, match=r"test.csv: cose: data lacks columns \['label'\]"):
        load_task("cose", str(path))


@pytest.mark.parametrize("name, content, message", [
    ("creak.jsonl", "", "is empty"),
    ("creak.json", "\n  \n", "is empty"),
    ("creak_array.json", "[]", "creak: the data has no rows"),
    ("cose.csv", "id,question,choice_0,choice_1,choice_2,label,human_exp\n", r"holds no rows \(a header at most\)"),
])
def test_empty_files_give_a_clear_error(tmp_path, name, content, message):
    """An empty JSONL was a StopIteration from deep inside `datasets`."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{name}.*{message}"):
        load_task(name.split(".")[0].split("_")[0], str(path))


def test_hub_cose_layout_keeps_the_abstractive_explanation():
    """The Hub `cos_e` rows already have id/question/choices/answer: the explanation must not be dropped."""
    import csv

    with open(shared_data_or_skip("cose_v1", "dev.csv"), newline="") as f:
        rows = list(csv.DictReader(f))[:5]
    hub = datasets.Dataset.from_list([
        {"id": r["id"], "question": r["question"], "choices": [r[f"choice_{i}"] for i in range(3)],
         "answer": r[f"choice_{r['label']}"], "abstractive_explanation": r["human_exp"], "extractive_explanation": ""}
        for r in rows
    ])
    out = normalize_rows(hub, "cose")
    assert out["rationale"] == [r["human_exp"] for r in rows]
    assert out["rationale"] == load_task("cose", str(shared_data_or_skip("cose_v1", "dev.csv")))["rationale"][:5]


def test_creak_contrast_set_has_no_placeholder_explanations():
    """Its explanation is "n/a" on every row: that is no explanation (None), not a rationale 'n/a'."""
    data = load_task("creak", str(shared_data_or_skip("creak", "contrast_set.json")))
    assert len(data) == 500 and set(data["answer"]) == {"true", "false"}
    assert set(data["rationale"]) == {None} and "pair_id" in data.column_names
    dev = load_task("creak", str(shared_data_or_skip("creak", "dev.json")))
    assert None not in dev["rationale"] and "n/a" not in dev["rationale"]
