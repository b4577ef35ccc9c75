"""TEST CODE run in a subprocess by test_hub.py, with HF_ENDPOINT pointing at the local test Hub server.

argv: MODE WORKDIR [EXTRA] (EXTRA: a token, or for "rationalize" the data file). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from scott_distill import RationaleStudent, StudentFormat
from scott_distill.hub import HubPushError, push_rationale_dataset, render_student_card

mode, work = sys.argv[1], Path(sys.argv[2])
token = sys.argv[3] if len(sys.argv) > 3 else None
if mode in ("roundtrip", "fail"):
    model = AutoModelForSeq2SeqLM.from_pretrained(work / "init")
    tok = AutoTokenizer.from_pretrained(work / "init")
fmt = StudentFormat(answer_prefix="Therefore the answer is")
metrics = {"accuracy": 0.75, "las": 0.05, "las_ci_low": 0.01, "las_ci_high": 0.09, "counterfactual_consistency": 0.8}
card = render_student_card("org/scott-t5-cose", fmt, metrics, task="cose", dataset_id="org/cose-rationales")
questions = ["Where would you keep milk cold?", "What tool cuts wood?"]
choices = [["fridge", "oven", "shelf"], ["saw", "towel"]]

if mode == "roundtrip":
    url = RationaleStudent(model, tok, fmt).push_to_hub("org/scott-t5-cose", work / "local_student", card, private=True,
                                                        token=token)
    pulled = RationaleStudent.from_pretrained("org/scott-t5-cose", token=token, max_new_tokens=8)
    local = RationaleStudent(model, tok, fmt, max_new_tokens=8)
    rows = datasets.Dataset.from_list([{"id": "1", "question": questions[0], "choices": choices[0],
                                        "answer": "fridge", "rationale": "cold", "counterfactual_answer": "oven",
                                        "counterfactual_rationale": "hot"}])
    ds_url = push_rationale_dataset(rows, "org/cose-rationales", work / "local_dataset",
                                    {"task": "cose", "teacher": "t", "alpha": 0.5}, token=token)
    # a second push, to a branch, with another format
    RationaleStudent(model, tok, StudentFormat(answer_prefix="Because the answer is")).push_to_hub(
        "org/scott-t5-cose", work / "v1", card, private=True, revision="v1", token=token)
    v1_student = RationaleStudent.from_pretrained("org/scott-t5-cose", revision="v1", token=token)
    print(json.dumps({"url": url, "dataset_url": ds_url, "pulled": pulled.explain_batch(questions, choices),
                      "v1_prefix": v1_student.format.answer_prefix,
                      "local": local.explain_batch(questions, choices), "prefix": pulled.format.answer_prefix,
                      "pulled_dir_has_card": (Path(pulled.model.name_or_path) / "README.md").exists(),
                      "pulled_card": str(Path(pulled.model.name_or_path) / "README.md")}))
elif mode == "fail":
    try:
        RationaleStudent(model, tok, fmt).push_to_hub("org/scott-t5-cose", work / "local_student", card, token=token)
        print(json.dumps({"raised": False}))
    except HubPushError as exc:
        print(json.dumps({"raised": True, "message": str(exc),
                          "local_files": sorted(p.name for p in (work / "local_student").iterdir())}))
elif mode == "recipe":
    from scott_distill.commands.run import main as run_main

    config = work / "recipe.yaml"
    run_main([str(config), "--stage", "push"])
    pulled = RationaleStudent.from_pretrained("org/scott-t5-cose", max_new_tokens=8)
    local = RationaleStudent.from_pretrained(str(work / "run" / "student"), max_new_tokens=8)
    card = Path(pulled.model.name_or_path) / "README.md"
    print(json.dumps({"pulled": pulled.explain_batch(questions, choices),
                      "local": local.explain_batch(questions, choices), "card": str(card)}))
elif mode == "rationalize":
    from scott_distill.commands.rationalize import main as rationalize_main

    rationalize_main(["--teacher", str(work / "teacher"), "--task", "cose", "--data", sys.argv[3],
                      "--max_rows", "4", "--max_new_tokens", "4", "--output", str(work / "rz"),
                      "--push_to_hub", "org/rz", "--private"])
    print(json.dumps({"ok": True}))
