"""TEST CODE run in a subprocess by test_student_objective.py, with HF_ENDPOINT pointing at the local test Hub
server (tests/hub_server.py): ``CounterfactualTrainer.push_to_hub`` (the Trainer's own push) then a pull.

argv: WORKDIR. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
from transformers import AutoModelForCausalLM, AutoTokenizer

from scott_distill import CounterfactualTrainer, CounterfactualTrainingArguments, RationaleStudent

work = Path(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(work / "init")
tok = AutoTokenizer.from_pretrained(work / "init")
rows = datasets.Dataset.from_list(json.loads((work / "rows.json").read_text()))
args = CounterfactualTrainingArguments(output_dir=str(work / "out"), max_steps=1, report_to=[], save_strategy="no",
                                       answer_prefix="Therefore the answer is", push_to_hub=True,
                                       hub_model_id="org/cf-student", hub_token="hf_test_token")
trainer = CounterfactualTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)
trainer.train()
trainer.push_to_hub()
pulled = RationaleStudent.from_pretrained("org/cf-student", token="hf_test_token", max_new_tokens=4)
print(json.dumps({"prefix": pulled.format.answer_prefix}))
