"""generate_rationales: schema, wiring against contrastive_generate, crash/resume, torchrun sharding."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import datasets
import pytest
from conftest import make_gpt2, make_t5, shared_data_or_skip

import scott_distill.rationalize as rationalize_module
from scott_distill import contrastive_generate, generate_rationales
from scott_distill.rationalize_cli import main as rationalize_main
from scott_distill.tasks import load_prompt, load_task

KW = dict(task="cose", batch_size=4, max_new_tokens=6, show_progress=False)


@pytest.fixture
def cose_rows():
    return load_task("cose", str(shared_data_or_skip("cose_v1", "dev.csv"))).select(range(10))


@pytest.fixture
def teacher(tokenizer):
    return make_gpt2(len(tokenizer))


def test_schema_and_counterfactuals(cose_rows, teacher, tokenizer):
    out = generate_rationales(cose_rows, teacher, tokenizer, perturbation="wrong", **KW)
    assert len(out) == 10
    for col in ("id", "question", "choices", "answer", "rationale", "human_rationale", "contrast_answer",
                "counterfactual_answer", "counterfactual_rationale"):
        assert col in out.column_names
    for row in out:
        assert row["counterfactual_answer"] in row["choices"] and row["counterfactual_answer"] != row["answer"]
        assert row["contrast_answer"] in row["choices"] and row["contrast_answer"] != row["answer"]
        assert isinstance(row["rationale"], str) and "\n" not in row["rationale"]
    assert out["human_rationale"] == cose_rows["rationale"]


def test_rows_equal_direct_contrastive_generate(cose_rows, teacher, tokenizer):
    """The pipeline's factual rationale of a row == contrastive_generate on that row's two prompts, cleaned."""
    out = generate_rationales(cose_rows, teacher, tokenizer, perturbation="wrong", counterfactual=False, **KW)
    prompt = load_prompt("cose")
    stop = rationalize_module.stop_token_ids_for(tokenizer)
    for i in (0, 7):
        row = out[i]
        gold = prompt.render(row["question"], row["choices"], row["answer"])
        con = prompt.render(row["question"], row["choices"], row["contrast_answer"])
        ids = contrastive_generate(teacher, tokenizer, [gold], [con], alpha=0.5, max_new_tokens=6, stop_token_ids=stop)
        assert prompt.clean(tokenizer.decode(ids[0], skip_special_tokens=True)) == row["rationale"]


def test_fused_and_processor_paths_agree_and_empty_and_none_modes(cose_rows, teacher, tokenizer):
    rows = cose_rows.select(range(6))
    a = generate_rationales(rows, teacher, tokenizer, perturbation="empty", use_fused=True, **KW)
    b = generate_rationales(rows, teacher, tokenizer, perturbation="empty", use_fused=False, **KW)
    assert a["rationale"] == b["rationale"] and a["counterfactual_rationale"] == b["counterfactual_rationale"]
    assert a["contrast_answer"] == [None] * 6
    plain = generate_rationales(rows, teacher, tokenizer, perturbation="none", **KW)
    assert len(plain) == 6 and plain["contrast_answer"] == [None] * 6


def test_encoder_decoder_teacher(cose_rows, tokenizer):
    out = generate_rationales(cose_rows.select(range(3)), make_t5(len(tokenizer)), tokenizer, **KW)
    assert len(out) == 3 and all(isinstance(r, str) for r in out["rationale"])


def test_crash_then_resume_equals_uninterrupted(cose_rows, teacher, tokenizer, tmp_path, monkeypatch):
    full = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "full", **KW)
    real = rationalize_module._generate
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(rationalize_module, "_generate", crashing)
    with pytest.raises(KeyboardInterrupt):
        generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    shard = tmp_path / "run" / "shards" / "rank0.jsonl"
    assert len(shard.read_text().splitlines()) == 2
    with open(shard, "a") as f:  # a write cut short by the crash
        f.write('{"batch": 9, "texts": ["partial')
    calls["n"] = -100
    resumed = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    n_batches = -(-20 // 4)  # 10 rows x (factual + counterfactual) / batch 4
    assert calls["n"] == -100 + n_batches - 2  # only the missing batches were generated
    assert resumed.to_list() == full.to_list()
    # a finished run is loaded, not regenerated
    calls["n"] = -1000
    again = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    assert calls["n"] == -1000 and again.to_list() == full.to_list()


def test_changed_settings_are_refused(cose_rows, teacher, tokenizer, tmp_path):
    generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, output_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="alpha: stored 0.5 vs now 0.7"):
        generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, output_dir=tmp_path, alpha=0.7, **KW)


def test_bad_inputs(cose_rows, teacher, tokenizer, caplog):
    with pytest.raises(ValueError, match="perturbation"):
        generate_rationales(cose_rows, teacher, tokenizer, perturbation="random", **KW)
    with pytest.raises(ValueError, match="Unknown task"):
        generate_rationales(cose_rows, teacher, tokenizer, **{**KW, "task": "mmlu"})
    bad = datasets.Dataset.from_list([{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "z"}])
    with pytest.raises(ValueError, match="not among the choices"):
        generate_rationales(bad, teacher, tokenizer, **KW)
    tok = tokenizer.__class__.from_pretrained  # fresh copy without pad token, right padding
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        fresh = tok(d)
    fresh.pad_token = None
    fresh.padding_side = "right"
    with caplog.at_level(logging.WARNING):
        generate_rationales(cose_rows.select(range(2)), teacher, fresh, **KW)
    assert fresh.pad_token == fresh.eos_token and fresh.padding_side == "left"
    assert "no pad token" in caplog.text and "left padding" in caplog.text


@pytest.mark.distributed
def test_torchrun_two_ranks_merge_equals_single_process(tokenizer, tmp_path):
    data = shared_data_or_skip("cose_v1", "dev.csv")
    teacher_dir = tmp_path / "teacher"
    make_gpt2(len(tokenizer)).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    args = ["rationalize", "--teacher", str(teacher_dir), "--task", "cose", "--data", str(data), "--max_rows", "9",
            "--batch_size", "3", "--max_new_tokens", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29534", "-m", "scott_distill.cli", *args, "--output", str(tmp_path / "ddp")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(p.name for p in (tmp_path / "ddp" / "shards").iterdir())
    assert shards == ["rank0.jsonl", "rank1.jsonl"]  # both ranks did work
    rationalize_main(args[1:] + ["--output", str(tmp_path / "single")])
    ddp = datasets.load_from_disk(str(tmp_path / "ddp" / "dataset"))
    single = datasets.load_from_disk(str(tmp_path / "single" / "dataset"))
    assert ddp.to_list() == single.to_list() and len(single) == 9


def test_cli_push_to_hub_uploads_dataset_and_card(tokenizer, tmp_path):
    from hub_server import FakeHub, files_at
    from huggingface_hub import DatasetCard
    from test_hub import run_client

    data = shared_data_or_skip("cose_v1", "dev.csv")
    make_gpt2(len(tokenizer)).save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    with FakeHub() as hub:
        run_client(hub, "rationalize", tmp_path, token=str(data))
        repo = hub.state.repos[("dataset", "org/rz")]
        files = files_at(repo, "main")
    assert repo["private"] and "data/train-00000-of-00001.parquet" in files
    card = (tmp_path / "card.md")
    card.write_bytes(files["README.md"])
    text = DatasetCard.load(card).text
    assert "| rows | 4 |" in text and "| perturbation | `wrong` |" in text
    assert (tmp_path / "rz" / "dataset" / "dataset_info.json").exists()
