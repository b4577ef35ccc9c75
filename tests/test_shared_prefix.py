"""Shared-prefix KV reuse: the same tokens as without it, token for token.

Reuse changes where the padding sits (``[prefix][pad][suffix]`` instead of ``[pad][prefix][suffix]``) and which
forward computes the prefix's keys and values (one batch-1 forward, copied to every row, instead of every row's
own prefill). Both must be invisible in the output: GPT-2 (absolute positions: a position off by the padding
changes the logits) and Llama (RoPE), greedy and seeded sampling, with counterfactual jobs, batch 1 and more,
rows of different suffix lengths in one batch; and the real SmolLM2 teacher (``real_model`` tier).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import make_gpt2, make_llama, make_t5, shared_data_or_skip

import scott_distill.teacher.rationalize as rationalize_module
from scott_distill import ContrastiveRationaleLogitsProcessor, contrastive_generate, generate_rationales
from scott_distill.tasks import load_task
from scott_distill.teacher._branch import SharedPrefix, common_prefix_length
from scott_distill.teacher.prompts import load_prompt

KW = dict(task="cose", max_new_tokens=8, show_progress=False)
# Llama with a larger init: at the default 0.02 the tiny model's attention is so flat that its tokens do not
# change when every suffix position is off by the prefix length (checked); at 0.2 they do.
MAKERS = {"gpt2": make_gpt2, "llama": lambda vocab: make_llama(vocab, initializer_range=0.2)}


@pytest.fixture(scope="module")
def cose_rows():
    return load_task("cose", str(shared_data_or_skip("cose_v1", "dev.csv"))).select(range(5))


@pytest.fixture
def cache_copies(monkeypatch):
    """Counts the copies of a shared prefix's cache (one per branch start), so a test can tell reuse happened."""
    calls = {"n": 0}
    real = SharedPrefix.cache_for

    def counting(self, rows):
        calls["n"] += 1
        return real(self, rows)

    monkeypatch.setattr(SharedPrefix, "cache_for", counting)
    return calls


def cose_prompts(rows, tokenizer, n: int = 3) -> tuple[list[str], list[str]]:
    prompt = load_prompt("cose")
    rows = rows.select(range(n))
    gold = [prompt.render(r["question"], r["choices"], r["answer"]) for r in rows]
    wrong = [prompt.render(r["question"], r["choices"], next(c for c in r["choices"] if c != r["answer"]))
             for r in rows]
    return gold, wrong


def test_docstring_example_runs():
    import doctest

    from scott_distill.teacher import _branch

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(_branch.SharedPrefix, "SharedPrefix", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 5 and runner.failures == 0


def test_common_prefix_length_compares_ids_and_leaves_a_token():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # every row keeps a token to predict from
    assert common_prefix_length([[7], [7, 8]]) == 0
    assert common_prefix_length([[1, 2], [3, 2]]) == 0


def test_prefix_is_a_token_prefix_not_a_string_prefix(tokenizer):
    """The common *string* prefix of two prompts need not tokenize to a prefix of both: ids are compared."""
    texts = ["Q: is it the", "Q: is it there"]  # common string prefix: "Q: is it the"
    ids = tokenizer(texts)["input_ids"]
    string_prefix = tokenizer(texts[0])["input_ids"]
    assert ids[1][: len(string_prefix)] != string_prefix  # BPE merges "there" differently from "the" + "re"
    n = common_prefix_length(ids)
    assert 0 < n < len(string_prefix) and ids[0][:n] == ids[1][:n]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(("path", "batch_size", "copies_per_batch"), [
    ("fused", 3, 1), ("fused", 1, 1), ("processor", 4, 2), ("none", 3, 1)])
def test_generate_rationales_same_rows_with_and_without_reuse(cose_rows, tokenizer, caplog, cache_copies, arch, path,
                                                              batch_size, copies_per_batch):
    model = MAKERS[arch](len(tokenizer))
    settings = dict(KW, batch_size=batch_size, counterfactual=True, use_fused=path != "processor",
                    perturbation="none" if path == "none" else "wrong")
    off = generate_rationales(cose_rows, model, tokenizer, reuse_prefix=False, **settings)
    assert cache_copies["n"] == 0
    with caplog.at_level(logging.INFO, logger=rationalize_module.__name__):
        on = generate_rationales(cose_rows, model, tokenizer, **settings)  # on by default
    batches = -(-2 * len(cose_rows) // batch_size)
    assert cache_copies["n"] == copies_per_batch * batches
    reused = [r.getMessage() for r in caplog.records if "Reusing the KV cache" in r.getMessage()]
    assert reused and int(reused[0].split("of the ")[1].split("-token")[0]) > 300  # the 6-shot block
    assert on.to_list() == off.to_list()
    written = list(off["rationale"]) + list(off["counterfactual_rationale"])
    assert sum(len(r.split()) for r in written) >= 2 * len(written)  # not rows cut at their first token
    # the batches hold prompts of different lengths: the padding between prefix and suffix is exercised
    prompts = load_prompt("cose")
    lengths = {len(tokenizer(prompts.render(r["question"], r["choices"], r["answer"]))["input_ids"])
               for r in cose_rows}
    assert len(lengths) > 1


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_contrastive_generate_same_tokens_greedy_and_seeded_sampling(cose_rows, tokenizer, cache_copies, arch):
    model = MAKERS[arch](len(tokenizer))
    gold, wrong = cose_prompts(cose_rows, tokenizer)
    prefix = SharedPrefix.of(model, tokenizer(gold + wrong)["input_ids"])
    assert prefix is not None and len(prefix) > 300
    for sample in (False, True):
        outs = []
        for shared in (None, prefix, "auto"):  # "auto" (the default) finds the same prefix in the call's prompts
            generator = torch.Generator().manual_seed(7)
            outs.append(contrastive_generate(model, tokenizer, gold, wrong, max_new_tokens=10, do_sample=sample,
                                             generator=generator, shared_prefix=shared))
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2]), f"sample={sample}"
    assert cache_copies["n"] == 4
    with pytest.raises(ValueError, match="`shared_prefix` must be a SharedPrefix, 'auto' or None"):
        contrastive_generate(model, tokenizer, gold, wrong, max_new_tokens=1, shared_prefix="yes")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_processor_with_prefix_in_both_branches_same_tokens_greedy_and_seeded_sampling(cose_rows, tokenizer,
                                                                                        cache_copies, arch):
    model = MAKERS[arch](len(tokenizer))
    gold, wrong = cose_prompts(cose_rows, tokenizer)
    enc = tokenizer(gold, return_tensors="pt", padding=True)
    con = tokenizer(wrong, return_tensors="pt", padding=True)
    prefix = SharedPrefix.of(model, tokenizer(gold + wrong)["input_ids"])
    assert prefix is not None
    for sample in (False, True):
        outs = []
        for shared in (None, prefix):
            proc = ContrastiveRationaleLogitsProcessor(model, con["input_ids"], con["attention_mask"],
                                                       shared_prefix=shared)
            inputs = dict(enc) if shared is None else shared.generate_inputs(enc["input_ids"], enc["attention_mask"])
            torch.manual_seed(11)
            with proc:
                out = model.generate(**inputs, **proc.generate_kwargs(), max_new_tokens=10, do_sample=sample,
                                     pad_token_id=tokenizer.pad_token_id)
            outs.append(out[:, enc["input_ids"].shape[1]:])
        assert torch.equal(outs[0], outs[1]), f"sample={sample}"
    assert cache_copies["n"] == 4  # gold and contrast branch, twice


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_processor_beam_search_with_prefix_same_tokens(cose_rows, tokenizer, arch):
    """generate expands the ids to num_beams rows, not a given cache: ``expand`` sizes the gold cache; the processor
    expands its own contrast rows and reorders its cache (prefix included) with the beams."""
    model = MAKERS[arch](len(tokenizer))
    gold, wrong = cose_prompts(cose_rows, tokenizer, n=2)
    enc = tokenizer(gold, return_tensors="pt", padding=True)
    con = tokenizer(wrong, return_tensors="pt", padding=True)
    prefix = SharedPrefix.of(model, tokenizer(gold + wrong)["input_ids"])
    outs = []
    for shared in (None, prefix):
        proc = ContrastiveRationaleLogitsProcessor(model, con["input_ids"], con["attention_mask"], shared_prefix=shared)
        inputs = dict(enc) if shared is None else shared.generate_inputs(enc["input_ids"], enc["attention_mask"],
                                                                         expand=3)
        with proc:
            out = model.generate(**inputs, **proc.generate_kwargs(), max_new_tokens=6, num_beams=3,
                                 num_return_sequences=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outs.append(out[:, enc["input_ids"].shape[1]:])
    assert torch.equal(outs[0], outs[1])


def test_rows_without_the_prefix_or_encoder_decoder_are_refused(tokenizer):
    model = make_gpt2(len(tokenizer))
    ids = tokenizer(["Q: where is the cat now", "Q: where is the dog now"])["input_ids"]
    prefix = SharedPrefix.of(model, ids)
    assert prefix is not None
    other = tokenizer(["A: something else entirely"], return_tensors="pt")
    with pytest.raises(ValueError, match=r"`contrast_prompts` rows \[0\] do not start with the shared prefix"):
        contrastive_generate(model, tokenizer, ["Q: where is the cat now"], ["A: something else entirely"],
                             max_new_tokens=2, shared_prefix=prefix)
    with pytest.raises(ValueError, match="no token after"):
        prefix.split(other["input_ids"][:, :2], other["attention_mask"][:, :2])
    with pytest.raises(ValueError, match="encoder-decoder"):
        SharedPrefix(make_t5(len(tokenizer)), ids[0][:3])


def test_encoder_decoder_teacher_keeps_the_whole_prompt_path(cose_rows, tokenizer, cache_copies):
    model = make_t5(len(tokenizer))
    on = generate_rationales(cose_rows.select(range(2)), model, tokenizer, batch_size=2, **KW)
    off = generate_rationales(cose_rows.select(range(2)), model, tokenizer, batch_size=2, reuse_prefix=False, **KW)
    assert cache_copies["n"] == 0 and on.to_list() == off.to_list()


def test_reuse_switch_is_not_part_of_the_resume_fingerprint(cose_rows, tokenizer, tmp_path, monkeypatch):
    """A run started without reuse resumes with it (same rows), and run_config.json does not record the switch."""
    model = make_gpt2(len(tokenizer))
    settings = dict(KW, batch_size=4)
    full = generate_rationales(cose_rows, model, tokenizer, reuse_prefix=False, **settings)
    real = rationalize_module._generate
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(rationalize_module, "_generate", crashing)
    with pytest.raises(KeyboardInterrupt):
        generate_rationales(cose_rows, model, tokenizer, output_dir=tmp_path, reuse_prefix=False, **settings)
    calls["n"] = -100
    resumed = generate_rationales(cose_rows, model, tokenizer, output_dir=tmp_path, reuse_prefix=True, **settings)
    assert calls["n"] == -100 + 2  # 3 batches, one written before the crash
    assert resumed.to_list() == full.to_list()
    assert "reuse_prefix" not in json.loads((tmp_path / "run_config.json").read_text())


@pytest.mark.real_model
@pytest.mark.parametrize(("use_fused", "chat"), [(True, False), (False, True)])
def test_real_smollm2_same_rows_with_and_without_reuse(smollm2, cose_rows, cache_copies, use_fused, chat):
    model, tok = smollm2
    settings = dict(task="cose", max_new_tokens=16, show_progress=False, batch_size=3, counterfactual=True,
                    use_fused=use_fused, use_chat_template=chat)
    rows = cose_rows.select(range(3))
    off = generate_rationales(rows, model, tok, reuse_prefix=False, **settings)
    on = generate_rationales(rows, model, tok, **settings)
    assert cache_copies["n"] > 0
    assert on.to_list() == off.to_list()
