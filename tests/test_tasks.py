"""Task loaders (published formats, real CoS-E / CREAK files) and rationalization prompts."""

from __future__ import annotations

import json

import datasets
import pytest
from conftest import shared_data_or_skip

from scott_distill.tasks import TASKS, load_prompt, load_task, normalize_rows


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
