"""Hub round trip against a local test server on 127.0.0.1 (tests/hub_server.py, test code).

No Hub is reachable from the machines this project is built on: the real `huggingface_hub` client code
(`create_repo`, `upload_folder`, `snapshot_download`) runs in a subprocess with HF_ENDPOINT set to a small
local HTTP server that speaks the endpoints those calls use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_t5
from hub_server import FakeHub, files_at
from huggingface_hub import ModelCard

from scott_distill import StudentFormat
from scott_distill.hub import render_student_card

TESTS = Path(__file__).parent


def run_client(hub: FakeHub, mode: str, work: Path, token: str | None = None) -> dict:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(work / "hf_home"),
           "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(TESTS)}
    env.pop("HF_TOKEN", None)
    args = [sys.executable, str(TESTS / "hub_client.py"), mode, str(work)] + ([token] if token else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def init_student(tmp_path, tokenizer):
    make_t5(len(tokenizer)).save_pretrained(tmp_path / "init")
    tokenizer.save_pretrained(tmp_path / "init")


def test_card_renders_metrics_into_model_index(tmp_path):
    metrics = {"accuracy": 0.7, "las": 0.04, "las_ci_low": -0.01, "las_ci_high": 0.1,
               "counterfactual_consistency": 0.9}
    card = render_student_card("org/s", StudentFormat(), metrics, task="csqa", dataset_id="org/r")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert results == {"accuracy": 0.7, "las": 0.04, "counterfactual_consistency": 0.9}
    assert "model-index" in loaded.content and "RationaleStudent.from_pretrained(\"org/s\")" in loaded.text
    assert "LAS (95% CI -0.010 to 0.100)" in loaded.content


def test_push_then_pull_student_gives_same_outputs(tmp_path, tokenizer):
    init_student(tmp_path, tokenizer)
    with FakeHub(required_token="hf_test_token") as hub:
        out = run_client(hub, "roundtrip", tmp_path, token="hf_test_token")
        repo = hub.state.repos[("model", "org/scott-t5-cose")]
        assert repo["private"]
        assert {"config.json", "model.safetensors", "scott_config.json", "README.md",
                "tokenizer.json"} <= set(files_at(repo, "main"))
        main, v1 = files_at(repo, "main"), files_at(repo, "v1")
        assert set(main) == set(v1) and main["scott_config.json"] != v1["scott_config.json"]  # branch only
        dataset = hub.state.repos[("dataset", "org/cose-rationales")]
        assert "data/train-00000-of-00001.parquet" in files_at(dataset, "main")
    assert out["pulled"] == out["local"]  # same weights, same format from scott_config.json
    assert out["prefix"] == "Therefore the answer is"
    assert out["v1_prefix"] == "Because the answer is"  # pulled from the branch with revision="v1"
    card = ModelCard.load(out["pulled_card"])
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "las", "counterfactual_consistency"}


def test_failed_push_keeps_local_files_and_says_how_to_retry(tmp_path, tokenizer):
    init_student(tmp_path, tokenizer)
    with FakeHub(fail_commits=True) as hub:
        out = run_client(hub, "fail", tmp_path)
    assert out["raised"] and "Retry: hf upload org/scott-t5-cose" in out["message"]
    assert {"config.json", "model.safetensors", "scott_config.json", "README.md"} <= set(out["local_files"])
    with FakeHub(required_token="right") as hub:
        out = run_client(hub, "fail", tmp_path, token="wrong")
    assert out["raised"] and "401" in out["message"]


def test_rationale_student_decoder_only_from_local_folder(tmp_path, tokenizer):
    import datasets
    from conftest import make_gpt2

    from scott_distill import RationaleStudent
    from scott_distill.student.evaluation import predict

    model = make_gpt2(len(tokenizer))
    fmt = StudentFormat(factual_tag="<f>")
    RationaleStudent(model, tokenizer, fmt).save_pretrained(tmp_path / "gpt2-student")
    student = RationaleStudent.from_pretrained(tmp_path / "gpt2-student", max_new_tokens=6)
    assert student.format == fmt and not student.model.config.is_encoder_decoder
    rationale, answer = student.explain("Where is milk kept?", ["fridge", "oven"])
    rows = datasets.Dataset.from_dict({"question": ["Where is milk kept?"], "choices": [["fridge", "oven"]]})
    direct = predict(model, tokenizer, rows, fmt, max_new_tokens=6, show_progress=False)[0]
    assert (rationale, answer) == (direct["rationale"], direct["answer"])
