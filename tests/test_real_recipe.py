"""`scott-distill run recipes/cose-smollm2.yaml` end to end on real models and real data, as a smoke run: the real
SmolLM2-135M-Instruct teacher and student, the real MiniLM simulator, the first rows of real CoS-E v1.

The recipe file itself is run (only sizes are overridden on the command line, as its header tells users), so a
key the configs do not know, a bundled name that does not resolve or a stage that breaks on a real tokenizer
fails here. The numbers of a 4-question smoke run mean nothing and are not checked; the artefacts are."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import MINILM, shared_data_or_skip, skip_without_bundled, skip_without_smollm2

from scott_distill.commands.run import main as run_main

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cose-smollm2.yaml"
SMOKE = ["--max_train_rows", "4", "--max_eval_rows", "4", "--rationalize.max_new_tokens", "16",
         "--rationalize.batch_size", "4", "--evaluate.max_new_tokens", "16", "--train.num_train_epochs", "1",
         "--train.per_device_train_batch_size", "4", "--las.num_train_epochs", "1", "--las.bootstrap", "200"]


def test_cose_smollm2_recipe_runs_end_to_end_on_real_models(tmp_path):
    skip_without_smollm2()
    skip_without_bundled(MINILM)
    train = shared_data_or_skip("cose_v1", "train.csv")
    dev = shared_data_or_skip("cose_v1", "dev.csv")
    out = tmp_path / "run"
    assert run_main([str(RECIPE), "--data", str(train), "--eval_data", str(dev), "--output_dir", str(out),
                     *SMOKE]) == 0

    import datasets

    rationales = datasets.load_from_disk(str(out / "rationales" / "train" / "dataset"))
    assert len(rationales) == 4
    assert all(isinstance(r, str) for r in rationales["rationale"]) and any(r.strip() for r in rationales["rationale"])
    assert all(a in c for a, c in zip(rationales["counterfactual_answer"], rationales["choices"]))
    student_format = json.loads((out / "student" / "scott_config.json").read_text())
    assert student_format["answer_prefix"]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # LAS is NaN exactly when the 1-step student never answered with a choice; otherwise a number with its counts
    assert math.isnan(metrics["las"]) == (metrics["n_leaked"] + metrics["n_nonleaked"] == 0)
