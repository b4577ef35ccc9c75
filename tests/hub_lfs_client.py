"""TEST CODE run in a subprocess by test_hub_lfs.py (and benchmarks/hub_lfs.py), with HF_ENDPOINT pointing at the
local test Hub server (tests/hub_server.py). Pushes go through the project's push functions, pulls through
``RationaleStudent.from_pretrained`` / ``snapshot_download``: the real ``huggingface_hub`` client code throughout.

argv: MODE WORKDIR REPO_ID [--token T]. Prints one JSON line.
  push_student   load WORKDIR/init, save a reference copy to WORKDIR/reference, RationaleStudent.push_to_hub to REPO_ID from
                 WORKDIR/local_student
  pull_student   RationaleStudent.from_pretrained(REPO_ID) and from WORKDIR/local_student: their outputs
  push_dataset   push_rationale_dataset of WORKDIR/rows.json from WORKDIR/local_dataset
  pull_snapshot  snapshot_download of REPO_ID (--repo-type model or dataset)
Pushes and pull_snapshot report the seconds their call took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from huggingface_hub import snapshot_download

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["push_student", "pull_student", "push_dataset", "pull_snapshot"])
parser.add_argument("work", type=Path)
parser.add_argument("repo_id")
parser.add_argument("--token")
parser.add_argument("--repo-type", default="model")
args = parser.parse_args()
work, repo_id, token = args.work, args.repo_id, args.token
questions = ["Where would you keep milk cold?", "What tool cuts wood?"]
choices = [["fridge", "oven", "shelf"], ["saw", "towel"]]
if args.mode != "pull_snapshot":  # a snapshot needs only huggingface_hub: skip importing torch for it
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scott_distill import RationaleStudent, StudentFormat
    from scott_distill.hub import HubPushError, push_rationale_dataset

    fmt = StudentFormat(factual_tag="<f>", answer_prefix="Therefore the answer is")


def pushed(push) -> dict:
    start = time.perf_counter()
    try:
        return {"raised": False, "url": push(), "seconds": time.perf_counter() - start}
    except HubPushError as exc:
        return {"raised": True, "message": str(exc)}


if args.mode == "push_student":
    model = AutoModelForCausalLM.from_pretrained(work / "init")
    tok = AutoTokenizer.from_pretrained(work / "init")
    student = RationaleStudent(model, tok, fmt)
    student.save_pretrained(work / "reference")  # what the pushed folder must still hold after a failure
    out = pushed(lambda: student.push_to_hub(repo_id, work / "local_student", private=True, token=token))
elif args.mode == "pull_student":
    pulled = RationaleStudent.from_pretrained(repo_id, token=token, max_new_tokens=6)
    local = RationaleStudent.from_pretrained(work / "local_student", max_new_tokens=6)
    out = {"dir": str(pulled.model.name_or_path), "pulled": pulled.explain_batch(questions, choices),
           "local": local.explain_batch(questions, choices)}
elif args.mode == "push_dataset":
    rows = datasets.Dataset.from_list(json.loads((work / "rows.json").read_text()))
    out = pushed(lambda: push_rationale_dataset(rows, repo_id, work / "local_dataset", {"task": "cose", "alpha": 0.5},
                                                token=token))
else:
    start = time.perf_counter()
    out = {"dir": snapshot_download(repo_id, repo_type=args.repo_type, token=token),
           "seconds": time.perf_counter() - start}
print(json.dumps(out))
