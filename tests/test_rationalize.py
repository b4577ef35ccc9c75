"""generate_rationales: schema, wiring against contrastive_generate, crash/resume, torchrun sharding."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import pytest
import torch
from conftest import make_gpt2, make_t5, shared_data_or_skip, smollm2_tokenizer

import scott_distill.teacher.rationalize as rationalize_module
import scott_distill.teacher.shards as shards_module
from scott_distill import contrastive_generate, generate_rationales
from scott_distill.commands.rationalize import main as rationalize_main
from scott_distill.teacher.prompts import load_prompt

KW = dict(task="cose", batch_size=4, max_new_tokens=6, show_progress=False)


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


def test_resume_refuses_changed_choices_prompts_tokenizer_or_teacher_weights(cose_rows, teacher, tokenizer, tmp_path):
    """Everything that changes the generations is in the fingerprint: old and new generations are never mixed."""
    rows = cose_rows.select(range(4))
    generate_rationales(rows, teacher, tokenizer, output_dir=tmp_path, **KW)
    # the same settings resume (here: load the finished dataset), in the same process after padded calls
    assert len(generate_rationales(rows, teacher, tokenizer, output_dir=tmp_path, **KW)) == 4

    def other_choices(row):
        if row["id"] == rows[1]["id"]:
            row["choices"] = [c if c == row["answer"] else c + " indeed" for c in row["choices"]]
        return row

    with pytest.raises(ValueError, match="data: stored"):
        generate_rationales(rows.map(other_choices), teacher, tokenizer, output_dir=tmp_path, **KW)
    same_config = make_gpt2(len(tokenizer), seed=99)  # identical config and name: only the weights differ
    assert same_config.config.to_json_string() == teacher.config.to_json_string()
    with pytest.raises(ValueError, match="teacher_weights: stored"):
        generate_rationales(rows, same_config, tokenizer, output_dir=tmp_path, **KW)
    from scott_distill.demo.tokenizer import train_bpe_tokenizer

    lines = (Path(__file__).parent / "data" / "corpus.txt").read_text().splitlines()
    other_tok = train_bpe_tokenizer(lines[: len(lines) // 2] * 3, vocab_size=len(tokenizer), padding_side="left")
    assert len(other_tok) == len(tokenizer) and other_tok.get_vocab() != tokenizer.get_vocab()
    with pytest.raises(ValueError, match="tokenizer: stored"):
        generate_rationales(rows, teacher, other_tok, output_dir=tmp_path, **KW)


def test_resume_accepts_the_same_teacher_loaded_from_another_folder(cose_rows, teacher, tokenizer, tmp_path):
    """Only what changes the generations is fingerprinted: the folder a checkpoint was read from is not."""
    from transformers import GPT2LMHeadModel

    rows = cose_rows.select(range(4))
    for name in ("a", "b"):
        teacher.save_pretrained(tmp_path / name)
    first = GPT2LMHeadModel.from_pretrained(tmp_path / "a").eval()
    moved = GPT2LMHeadModel.from_pretrained(tmp_path / "b").eval()
    assert first.config.name_or_path != moved.config.name_or_path
    expected = generate_rationales(rows, first, tokenizer, output_dir=tmp_path / "run", **KW)
    resumed = generate_rationales(rows, moved, tokenizer, output_dir=tmp_path / "run", **KW)
    assert resumed.to_list() == expected.to_list()


def test_resume_refuses_a_changed_chat_template(cose_rows, teacher, tokenizer, tmp_path):
    """Same prompt file, another chat template: the rendered prompts differ, so the run is refused."""
    tok = _fresh_copy(tokenizer)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    kw = {**KW, "use_chat_template": True}
    generate_rationales(cose_rows.select(range(2)), teacher, tok, output_dir=tmp_path, **kw)
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
    with pytest.raises(ValueError, match="prompts: stored"):
        generate_rationales(cose_rows.select(range(2)), teacher, tok, output_dir=tmp_path, **kw)


def test_corrupted_settings_or_orphan_shards_are_reported(cose_rows, teacher, tokenizer, tmp_path):
    generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, output_dir=tmp_path / "a", **KW)
    (tmp_path / "a" / "run_config.json").write_text('{"task": "cose", "alp')  # cut short
    with pytest.raises(ValueError, match=r"run_config.json is corrupted .* Delete"):
        generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, output_dir=tmp_path / "a", **KW)
    assert (tmp_path / "a" / "run_config.json").read_text() == '{"task": "cose", "alp'  # not overwritten
    shards = tmp_path / "b" / "shards"
    shards.mkdir(parents=True)
    (shards / "rank0.jsonl").write_text(json.dumps({"batch": 0, "texts": ["old"]}) + "\n")
    with pytest.raises(ValueError, match="holds shards but no run_config.json"):
        generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, output_dir=tmp_path / "b", **KW)


def test_real_tokenizer_resume_context_check_and_untouched_tokenizer(cose_rows, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer()
    side, pad = tok.padding_side, tok.pad_token

    def teacher(positions):
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=positions, eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id)).eval()

    rows = cose_rows.select(range(3))
    kw = {**KW, "max_new_tokens": 4, "use_chat_template": True}
    first = generate_rationales(rows, teacher(2048), tok, output_dir=tmp_path, **kw)
    assert tok.padding_side == side and tok.pad_token == pad  # right padding: the caller's, restored
    again = generate_rationales(rows, teacher(2048), tok, output_dir=tmp_path, **kw)  # fingerprints stable
    assert again.to_list() == first.to_list()
    with pytest.raises(ValueError, match=r"accepts at most 256 positions \(config.max_position_embeddings\)"):
        generate_rationales(rows, teacher(256), tok, **kw)
    original = tok.chat_template
    tok.chat_template = original.replace("<|im_start|>", "<|im_start|> ")
    try:
        with pytest.raises(ValueError, match="prompts: stored"):
            generate_rationales(rows, teacher(2048), tok, output_dir=tmp_path, **kw)
    finally:
        tok.chat_template = original


def test_fingerprints_are_stable_and_cheap_to_compare(teacher, tokenizer):
    tok = _fresh_copy(tokenizer)
    before = shards_module.tokenizer_fingerprint(tok)
    tok(["a", "bb ccc"], padding=True, truncation=True, max_length=3)  # changes the backend's padding state
    assert shards_module.tokenizer_fingerprint(tok) == before
    tok.add_tokens(["<new>"])
    assert shards_module.tokenizer_fingerprint(tok) != before
    w = shards_module.weights_fingerprint(teacher)
    assert shards_module.weights_fingerprint(teacher) == w
    changed = make_gpt2(len(tokenizer))
    with torch.no_grad():
        changed.transformer.h[1].mlp.c_fc.weight.mul_(1.001)  # one tensor of a later layer, slightly
    assert shards_module.weights_fingerprint(changed) != w


def test_bad_inputs(cose_rows, teacher, tokenizer):
    with pytest.raises(ValueError, match="perturbation"):
        generate_rationales(cose_rows, teacher, tokenizer, perturbation="random", **KW)
    with pytest.raises(ValueError, match="Unknown task"):
        generate_rationales(cose_rows, teacher, tokenizer, **{**KW, "task": "mmlu"})
    bad = datasets.Dataset.from_list([{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "z"}])
    with pytest.raises(ValueError, match="not among the choices"):
        generate_rationales(bad, teacher, tokenizer, **KW)


def _fresh_copy(tokenizer):
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        return tokenizer.__class__.from_pretrained(d)


def test_caller_tokenizer_is_left_as_it_was(cose_rows, teacher, tokenizer, monkeypatch):
    """generate_rationales pads with eos on the left for a decoder-only teacher, then restores the caller's
    tokenizer: no pad token, right padding, as before (also after a crash)."""
    fresh = _fresh_copy(tokenizer)
    fresh.pad_token = None
    fresh.padding_side = "right"
    out = generate_rationales(cose_rows.select(range(2)), teacher, fresh, **KW)
    assert fresh.pad_token is None and fresh.padding_side == "right"
    assert out["rationale"] == generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, **KW)["rationale"]

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(rationalize_module, "_generate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_rationales(cose_rows.select(range(2)), teacher, fresh, **KW)
    assert fresh.pad_token is None and fresh.padding_side == "right"


def test_counterfactual_and_contrast_answers_do_not_depend_on_row_order(cose_rows, teacher, tokenizer):
    """The wrong answers are seeded by (seed, example id), never by position: shuffling the rows gives every id
    the same contrast and counterfactual answers."""
    kw = {**KW, "max_new_tokens": 1}
    a = generate_rationales(cose_rows, teacher, tokenizer, **kw)
    b = generate_rationales(cose_rows.shuffle(seed=3), teacher, tokenizer, **kw)
    assert a["id"] != b["id"]  # really shuffled
    for column in ("contrast_answer", "counterfactual_answer"):
        assert dict(zip(a["id"], a[column])) == dict(zip(b["id"], b[column]))
    assert len(set(a["counterfactual_answer"])) > 3  # not one fixed answer


def test_prompt_longer_than_the_teacher_context_is_refused_up_front(cose_rows, tokenizer, tmp_path):
    """A GPT-2 teacher with 256 positions and the 6-shot CoS-E prompt: a clear error before any generation (it
    was an IndexError inside the position embedding), nothing written; fewer shots run."""
    from transformers import GPT2Config, GPT2LMHeadModel

    short = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=3, eos_token_id=1, pad_token_id=0)).eval()
    length = len(tokenizer(load_prompt("cose").render(cose_rows[0]["question"], cose_rows[0]["choices"],
                                                      cose_rows[0]["answer"]))["input_ids"])
    assert length > 256
    pattern = (r"Row \d+ \(id '\w+'\): the (factual|counterfactual) prompt is \d+ tokens \+ max_new_tokens=6 = "
               r"\d+ positions, but the teacher accepts at most 256 positions \(config.n_positions\); \d+ of 20 "
               r"prompts do not fit. Use fewer exemplars")
    with pytest.raises(ValueError, match=pattern):
        generate_rationales(cose_rows, short, tokenizer, output_dir=tmp_path / "run", **KW)
    assert not (tmp_path / "run").exists()
    zero_shot = "Q: {question}\nAnswer Choices: {choices}\nA: {answer_sentence}"
    out = generate_rationales(cose_rows, short, tokenizer, prompt=zero_shot, **KW)
    assert len(out) == 10
    # the prompt alone fits, but not with the generation budget
    with pytest.raises(ValueError, match=r"max_new_tokens=250 = \d+ positions"):
        generate_rationales(cose_rows, short, tokenizer, prompt=zero_shot, **{**KW, "max_new_tokens": 250})


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
                           "29534", "-m", "scott_distill", *args, "--output", str(tmp_path / "ddp")],
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


def test_shard_store_on_disk_format_and_what_it_fsyncs(tmp_path, monkeypatch, caplog):
    """The ShardStore contract at file level, checked by hand: a shard line is
    ``{"sha256": sha256(json([batch, texts]))[:16], "batch": ..., "texts": [...]}\\n`` (a later run must read what
    an earlier one wrote); each write is fsync'ed before it returns, the new shard's folder once, and at the merge
    every file of the staged dataset and the output folder (a power cut cannot undo a rename)."""
    import hashlib
    import logging

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(shards_module.os, "fsync", spy)
    out = tmp_path / "run"
    store = shards_module.ShardStore(out, shards_module.ProcessGroup())
    assert (store.shard_dir, store.dataset_dir) == (out / "shards", out / "dataset")
    store.check_settings({"alpha": 0.5})
    assert json.loads((out / "run_config.json").read_text()) == {"alpha": 0.5}
    assert store.resume() == {}
    shard = out / "shards" / "rank0.jsonl"
    synced.clear()
    with store.writer() as write:
        assert synced == [str(out / "shards")]  # the new file's folder entry
        write(1, ["b \u00e9", "c"])
        write(0, ["a"])
    assert synced == [str(out / "shards"), str(shard), str(shard)]

    def line(batch, texts):
        digest = hashlib.sha256(json.dumps([batch, texts]).encode()).hexdigest()[:16]
        return json.dumps({"sha256": digest, "batch": batch, "texts": texts}) + "\n"

    assert shard.read_text() == line(1, ["b \u00e9", "c"]) + line(0, ["a"])
    assert store.read() == {1: ["b \u00e9", "c"], 0: ["a"]}
    # a record written by hand in the same format (an earlier run) is read; one whose checksum is off is not
    with open(shard, "a") as f:
        f.write(line(2, ["d"]) + line(3, ["e"]).replace('"batch": 3', '"batch": 4') + "\n" + '{"batch": 5\n')
    with caplog.at_level(logging.WARNING, logger=shards_module.__name__):
        assert store.read() == {0: ["a"], 1: ["b \u00e9", "c"], 2: ["d"]}
    # the checksum failure and the torn line are counted, the blank line is not
    assert [r.getMessage() for r in caplog.records] == [
        f"{shard}: 2 damaged record(s) dropped (torn or failed checksum); their batches are generated again."]

    synced.clear()
    merged = store.merge(3, lambda texts: datasets.Dataset.from_dict({"t": [t for b in sorted(texts) for t in texts[b]]}))
    assert merged["t"] == ["a", "b \u00e9", "c", "d"]
    staging = out / ".dataset.tmp"
    staged_files = sorted(str(staging / p.relative_to(out / "dataset")) for p in (out / "dataset").rglob("*")
                          if p.is_file())
    assert staged_files and set(staged_files) <= set(synced)
    assert str(staging) in synced and synced[-1] == str(out)
    assert not staging.exists() and store.finished


def test_tokenizer_fingerprint_sees_the_normalizer_and_works_without_a_backend(tokenizer):
    """The fingerprint covers the backend's whole spec, not only the vocabulary (a lowercasing normalizer changes
    every id of a capitalised word), and a tokenizer without a Rust backend is fingerprinted by its vocabulary."""
    from tokenizers import normalizers

    tok = _fresh_copy(tokenizer)
    before = shards_module.tokenizer_fingerprint(tok)
    tok.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert tok.get_vocab() == tokenizer.get_vocab()
    assert tok("Milk")["input_ids"] != tokenizer("Milk")["input_ids"]
    assert shards_module.tokenizer_fingerprint(tok) != before

    class VocabOnly:  # a tokenizer without backend_tokenizer (a Python-only one)
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return dict(self.vocab)

    a = shards_module.tokenizer_fingerprint(VocabOnly({"a": 0, "b": 1}))
    assert a == shards_module.tokenizer_fingerprint(VocabOnly({"b": 1, "a": 0}))
    assert a != shards_module.tokenizer_fingerprint(VocabOnly({"a": 1, "b": 0}))


def test_process_group_join_initialises_torch_distributed_only_under_a_launcher(monkeypatch):
    """``WORLD_SIZE`` > 1 (torchrun's variable) initialises the default group (gloo without CUDA); without it, or
    once initialised, nothing is initialised; the tensor-parallel size is the model's ``tp_size``. The launcher
    itself is tested by the torchrun test; this one runs in-process (where a mutant can be seen)."""
    from types import SimpleNamespace

    teacher, sliced = SimpleNamespace(tp_size=None), SimpleNamespace(tp_size=2)  # join reads only tp_size
    calls = []
    monkeypatch.setattr(shards_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(shards_module.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert shards_module.ProcessGroup.join(teacher) == shards_module.ProcessGroup(0, 1, 1) and calls == []
    # a model object without `tp_size` at all (a wrapper, another library's model) is one tensor-parallel rank
    assert shards_module.ProcessGroup.join(SimpleNamespace()) == shards_module.ProcessGroup(0, 1, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert shards_module.ProcessGroup.join(teacher) == shards_module.ProcessGroup(0, 1, 1) and calls == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    shards_module.ProcessGroup.join(teacher)
    on_gpu = torch.cuda.is_available()
    assert calls == ["nccl" if on_gpu else "gloo"]
    # the other branch on this machine too: nccl exactly when CUDA is available (so a CPU-only run sees both)
    monkeypatch.setattr(shards_module.torch.cuda, "is_available", lambda: not on_gpu)
    shards_module.ProcessGroup.join(teacher)
    assert calls == ["nccl" if on_gpu else "gloo", "gloo" if on_gpu else "nccl"]
    monkeypatch.setattr(shards_module.torch.cuda, "is_available", lambda: on_gpu)
    group = shards_module.ProcessGroup.join(sliced)
    assert (group.tensor_parallel, group.part, group.parts, group.writer) == (2, 0, 0, True)
    monkeypatch.setattr(shards_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(shards_module.dist, "get_rank", lambda: 3)
    monkeypatch.setattr(shards_module.dist, "get_world_size", lambda: 4)
    calls.clear()
    group = shards_module.ProcessGroup.join(sliced)
    assert calls == [] and group == shards_module.ProcessGroup(3, 4, 2)
    assert (group.part, group.parts, group.writer) == (1, 2, False)


# -- the shard store's edges (the full mutation set of teacher.shards found them untested) ------------------------


def test_shard_lines_with_wrong_field_types_are_damaged_even_with_a_matching_checksum():
    line = shards_module._record(3, ["a", "b"]).decode()
    assert shards_module._parse_record(line) == (3, ["a", "b"])
    for batch, texts in (("3", ["a"]), (3, "ab"), (3, ["a", 7]), (None, ["a"]), (3, None)):
        forged = json.dumps({"sha256": shards_module._checksum(batch, texts), "batch": batch, "texts": texts})
        assert shards_module._parse_record(forged) is None, (batch, texts)


def test_repair_leaves_an_intact_or_empty_shard_alone_and_silent(tmp_path, caplog):
    import logging

    intact = tmp_path / "rank0.jsonl"
    intact.write_bytes(shards_module._record(0, ["a"]) + shards_module._record(1, ["b"]))
    empty = tmp_path / "rank1.jsonl"
    empty.write_bytes(b"")
    before = intact.read_bytes()
    with caplog.at_level(logging.WARNING, logger="scott_distill.teacher.shards"):
        shards_module._repair(intact)
        shards_module._repair(empty)
    assert intact.read_bytes() == before and empty.read_bytes() == b"" and not caplog.records
    torn = tmp_path / "rank2.jsonl"
    torn.write_bytes(before + b'{"sha256": "ab')
    with caplog.at_level(logging.WARNING, logger="scott_distill.teacher.shards"):
        shards_module._repair(torn)
    assert torn.read_bytes() == before and len(caplog.records) == 1 and "(14 bytes)" in caplog.records[0].getMessage()


def test_settings_refusals_say_what_differs_and_what_to_do(tmp_path):
    out = tmp_path / "run"
    store = shards_module.ShardStore(out, shards_module.ProcessGroup())
    store.check_settings({"alpha": 0.5, "teacher": "t"})
    expected = (f"{out} holds a run with different settings (alpha: stored 0.5 vs now 0.3, teacher: stored 't' vs "
                "now 'u'). Use another output_dir, or delete it to start over.")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        store.check_settings({"alpha": 0.3, "teacher": "u"})
    (out / "run_config.json").write_text("[1, 2]")
    expected = f"{out / 'run_config.json'} is corrupted (not a JSON object). Delete {out} to start over."
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        store.check_settings({"alpha": 0.5})
    (out / "run_config.json").unlink()
    (out / "shards").mkdir(exist_ok=True)
    (out / "shards" / "rank0.jsonl").write_bytes(shards_module._record(0, ["a"]))
    expected = (f"{out} holds shards but no run_config.json: they cannot be matched to these settings. Delete the "
                "folder to start over.")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        store.check_settings({"alpha": 0.5})


def test_merge_names_the_first_ten_missing_batches_and_replaces_leftovers(tmp_path):
    out = tmp_path / "run"
    store = shards_module.ShardStore(out, shards_module.ProcessGroup())
    store.check_settings({"alpha": 0.5})
    store.resume()
    with store.writer() as write:
        write(0, ["a"])
    expected = "Shards lack batches [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]...; re-run to fill them in."
    with pytest.raises(RuntimeError, match=f"^{re.escape(expected)}$"):
        store.merge(13, lambda texts: datasets.Dataset.from_dict({"t": [t for b in sorted(texts) for t in texts[b]]}))
    # leftovers of a merge that crashed: a staging folder and an incomplete dataset folder are replaced
    (out / ".dataset.tmp").mkdir()
    (out / ".dataset.tmp" / "junk").write_text("x")
    (out / "dataset").mkdir()
    (out / "dataset" / "junk").write_text("x")
    merged = store.merge(1, lambda texts: datasets.Dataset.from_dict({"t": texts[0]}))
    assert merged["t"] == ["a"] and not (out / ".dataset.tmp").exists() and not (out / "dataset" / "junk").exists()


def test_a_second_rank_checks_the_settings_rank_0_recorded(tmp_path):
    """Rank 1 of a job (here without torch.distributed: its barrier is a no-op) reads rank 0's run_config.json and
    refuses other settings with the same message."""
    out = tmp_path / "run"
    shards_module.ShardStore(out, shards_module.ProcessGroup(0, 2)).check_settings({"alpha": 0.5})
    second = shards_module.ShardStore(out, shards_module.ProcessGroup(1, 2))
    second.check_settings({"alpha": 0.5})
    with pytest.raises(ValueError, match=r"holds a run with different settings \(alpha: stored 0.5 vs now 0.3\)"):
        second.check_settings({"alpha": 0.3})


def test_resume_makes_missing_folders_and_read_skips_undecodable_lines(tmp_path):
    store = shards_module.ShardStore(tmp_path / "new" / "run", shards_module.ProcessGroup())
    assert store.resume() == {} and store.shard_dir.is_dir()
    shard = store.shard_dir / "rank0.jsonl"
    shard.write_bytes(shards_module._record(0, ["a"]) + b"\xff\xfe not utf-8\n" + shards_module._record(1, ["b"]))
    assert store.read() == {0: ["a"], 1: ["b"]}


def test_tokenizer_fingerprint_is_the_documented_hash_and_sees_the_class(tokenizer):
    """The fingerprint is stored in run_config.json and compared on resume, so its formula is an on-disk contract (a
    later version must accept what an earlier one wrote): sha256 over the JSON of [class name] and of [the backend's
    spec without its padding/truncation state, keys sorted], first 16 hex digits. The class is part of it: two
    classes over one backend can add special tokens differently."""
    import copy
    import hashlib

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    del spec["padding"], spec["truncation"]
    digest = hashlib.sha256()
    digest.update(json.dumps([type(tokenizer).__name__]).encode())
    digest.update(json.dumps([json.dumps(spec, sort_keys=True)]).encode())
    assert shards_module.tokenizer_fingerprint(tokenizer) == digest.hexdigest()[:16]
    other = copy.copy(tokenizer)
    other.__class__ = type("LlamaTokenizerFast", (type(tokenizer),), {})
    assert shards_module.tokenizer_fingerprint(other) != shards_module.tokenizer_fingerprint(tokenizer)
