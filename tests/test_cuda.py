"""The model on a GPU, the inputs where users leave them: on the CPU.

Every other test runs on one device, where a tensor made on the default device (the CPU) is always on the model's
device, so a forgotten ``.to(device)`` cannot fail there (docs/testing.md lists those mutants as equivalent on a
one-device machine). Here the model is on CUDA and the prompts, contrast ids, labels and stop ids are given on the
CPU, as a user's tokenizer makes them; each result must equal the same call with everything on the GPU already (the
same kernels, so equal token for token), and training must equal the same run on the CPU.

Skipped without CUDA (the CI machine has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import make_llama, make_t5
from test_processor import CONTRAST, GOLD, MAX_NEW, encode, make_positional_gpt2
from test_student_objective import RATIONALE_ROWS, SGD, as_dataset, flat, make_model
from transformers import LogitsProcessorList

from scott_distill import (
    ContrastiveRationaleLogitsProcessor,
    CounterfactualTrainer,
    CounterfactualTrainingArguments,
    contrastive_generate,
)
from scott_distill.student.evaluation import ChoiceSequences, _sequence_scores, _shared_prefix_scores

# SCOTT_CUDA_TEST_DEVICE=cpu runs the same tests on the CPU: a check of the tests themselves, not of device moves
CUDA = torch.device(os.environ.get("SCOTT_CUDA_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")

FACTORIES = [make_positional_gpt2, make_llama, make_t5]
FACTORY_IDS = ["gpt2", "llama", "t5"]


def _processor_tokens(model, tokenizer, contrast_device, **gen):
    side = "right" if model.config.is_encoder_decoder else "left"
    gold = encode(tokenizer, GOLD, side).to(CUDA)
    con = encode(tokenizer, CONTRAST, side).to(contrast_device)
    stop = [tokenizer.convert_tokens_to_ids(".")]  # a Python list: the processor makes the stop ids on the CPU
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3,
                                               stop_token_ids=stop)
    return model.generate(**gold, logits_processor=LogitsProcessorList([proc]), max_new_tokens=MAX_NEW,
                          pad_token_id=tokenizer.pad_token_id, **gen).cpu()


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
@pytest.mark.parametrize("gen", [{"do_sample": False}, {"do_sample": False, "num_beams": 3,
                                                          "num_return_sequences": 2}], ids=["greedy", "beams"])
def test_processor_with_contrast_ids_on_the_cpu_equals_them_on_the_gpu(tokenizer, factory, gen):
    model = factory(len(tokenizer)).to(CUDA)
    assert torch.equal(_processor_tokens(model, tokenizer, "cpu", **gen),
                       _processor_tokens(model, tokenizer, CUDA, **gen))


def _fused_kw(tokenizer):
    return dict(alpha=0.3, max_new_tokens=MAX_NEW, stop_token_ids=[tokenizer.convert_tokens_to_ids(".")],
                pad_token_id=tokenizer.pad_token_id)


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
def test_fused_path_with_prompts_on_the_cpu_runs_on_the_gpu(tokenizer, factory):
    """String prompts (tokenized on the CPU) and CPU tensors both reach a GPU teacher: the same tokens as prompts
    given on the GPU, returned on the GPU."""
    model = factory(len(tokenizer)).to(CUDA)
    side = "right" if model.config.is_encoder_decoder else "left"
    from_text = contrastive_generate(model, tokenizer, GOLD, CONTRAST, **_fused_kw(tokenizer))
    gold, con = encode(tokenizer, GOLD, side), encode(tokenizer, CONTRAST, side)
    from_cpu = contrastive_generate(model, None, dict(gold), dict(con), **_fused_kw(tokenizer))
    from_gpu = contrastive_generate(model, None, dict(gold.to(CUDA)), dict(con.to(CUDA)), **_fused_kw(tokenizer))
    assert from_text.device == from_cpu.device == next(model.parameters()).device
    assert torch.equal(from_text, from_gpu) and torch.equal(from_cpu, from_gpu)


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
def test_fused_path_on_the_gpu_picks_the_processors_tokens(tokenizer, factory):
    """The greedy parity of the two paths, on the GPU (one fused forward of 2 x batch rows there, two forwards of
    batch rows in the processor: other kernels, so a near-tie could split them; none does on these models)."""
    model = factory(len(tokenizer)).to(CUDA)
    fused = contrastive_generate(model, tokenizer, GOLD, CONTRAST, **_fused_kw(tokenizer)).cpu()
    gold = encode(tokenizer, GOLD, "right" if model.config.is_encoder_decoder else "left")
    processor = _processor_tokens(model, tokenizer, "cpu", do_sample=False)
    processor = processor[:, 1:] if model.config.is_encoder_decoder else processor[:, gold.input_ids.shape[1]:]
    end = {1, *_fused_kw(tokenizer)["stop_token_ids"]}
    for fused_row, processor_row in zip(fused.tolist(), processor.tolist()):
        cut = next((i + 1 for i, t in enumerate(processor_row) if t in end), len(processor_row))
        assert fused_row[:cut] == processor_row[:cut]


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_answer_scores_of_a_gpu_student_equal_the_cpu_ones(tokenizer, kind):
    """The student's answer scoring builds its padded ids and labels itself (from Python lists): on the model's
    device, and equal to the same scores on the CPU."""
    model = make_model(kind, len(tokenizer))
    prompts = [tokenizer(t)["input_ids"] for t in GOLD]
    targets = [tokenizer(t)["input_ids"] for t in CONTRAST]
    if kind == "t5":
        ids, labels = list(zip(prompts, targets)), targets
    else:
        ids = [p + t for p, t in zip(prompts, targets)]
        labels = [[-100] * len(p) + t for p, t in zip(prompts, targets)]
    with torch.no_grad():
        on_cpu = _sequence_scores(model, tokenizer, ids, labels, causal=kind != "t5")
        on_gpu = _sequence_scores(model.to(CUDA), tokenizer, ids, labels, causal=kind != "t5")
    torch.testing.assert_close(torch.tensor(on_gpu), torch.tensor(on_cpu), rtol=1e-4, atol=1e-4)


def test_shared_prefix_answer_scores_of_a_gpu_student_equal_the_cpu_ones(tokenizer):
    """The shared-prefix scoring of a decoder-only student builds its prefix, positions, continuation and labels
    itself: on the model's device, and equal to the same scores on the CPU."""
    model = make_model("gpt2", len(tokenizer))
    rows = [ChoiceSequences(tokenizer(g)["input_ids"], [tokenizer(c)["input_ids"] for c in CONTRAST],
                            [tokenizer(c)["input_ids"] for c in CONTRAST]) for g in GOLD]
    shared = [len(row.source) for row in rows]  # the prompt once, every target on its cache
    with torch.no_grad():
        on_cpu = _shared_prefix_scores(model, tokenizer, rows, shared)
        on_gpu = _shared_prefix_scores(model.to(CUDA), tokenizer, rows, shared)
    torch.testing.assert_close(torch.tensor(on_gpu), torch.tensor(on_cpu), rtol=1e-4, atol=1e-4)


def _trained(tmp_path, kind, tokenizer, rows, use_cpu, rows_per_forward=None):
    model = make_model(kind, len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path / f"{kind}-{use_cpu}-{rows_per_forward}"),
                                           counterfactual_alpha=0.3, per_device_train_batch_size=2,
                                           gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=1,
                                           use_cpu=use_cpu, **SGD)
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=as_dataset(rows), processing_class=tokenizer)
    trainer.rows_per_forward = rows_per_forward  # what an out-of-memory back-off sets: one row per forward
    trainer.train()
    assert next(model.parameters()).device.type == ("cpu" if use_cpu else CUDA.type)
    losses = [(h["loss_factual"], h["loss_counterfactual"]) for h in trainer.state.log_history
              if "loss_factual" in h]
    return {n: p.detach().cpu() for n, p in model.named_parameters()}, losses


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
@pytest.mark.parametrize("rows_per_forward", [None, 1], ids=["whole", "pieces"])
def test_training_on_the_gpu_equals_the_same_run_on_the_cpu(tokenizer, tmp_path, kind, rows_per_forward):
    """Rationale rows and flat rows, windows of two micro-batches, the per-part losses logged each step: the weights
    and the logged parts equal the CPU run's; with one row per forward (the out-of-memory back-off) as well."""
    rows = RATIONALE_ROWS[:2] + [flat(RATIONALE_ROWS[2], False), flat(RATIONALE_ROWS[3], True)]
    gpu_weights, gpu_losses = _trained(tmp_path, kind, tokenizer, rows, use_cpu=False,
                                       rows_per_forward=rows_per_forward)
    cpu_weights, cpu_losses = _trained(tmp_path, kind, tokenizer, rows, use_cpu=True)
    assert len(gpu_losses) == len(cpu_losses) > 0
    torch.testing.assert_close(torch.tensor(gpu_losses), torch.tensor(cpu_losses), rtol=1e-4, atol=1e-5)
    for name, weight in cpu_weights.items():
        torch.testing.assert_close(gpu_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)


def _evaluated(tmp_path, kind, tokenizer, rows, use_cpu, collator=None):
    model = make_model(kind, len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path / f"eval-{kind}-{use_cpu}"), use_cpu=use_cpu,
                                           per_device_eval_batch_size=2, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, data_collator=collator, processing_class=tokenizer)
    metrics = trainer.evaluate(rows)
    return metrics["eval_loss_factual"], metrics["eval_loss_counterfactual"]


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_evaluation_part_losses_on_the_gpu_equal_the_cpu_ones(tokenizer, tmp_path, kind):
    """``evaluate``'s per-part losses are summed per dataset row (``row_index``, made by the collator and moved
    with the batch): the same on the GPU as on the CPU; 3 rows in eval batches of 2, so the last one is partial."""
    rows = as_dataset(RATIONALE_ROWS[:2] + [flat(RATIONALE_ROWS[3], True)])
    torch.testing.assert_close(torch.tensor(_evaluated(tmp_path, kind, tokenizer, rows, use_cpu=False)),
                               torch.tensor(_evaluated(tmp_path, kind, tokenizer, rows, use_cpu=True)),
                               rtol=1e-5, atol=1e-6)


def test_evaluation_part_losses_with_a_collator_without_row_index_on_the_gpu(tokenizer, tmp_path):
    """A user's collator without ``row_index``: the trainer makes one itself (on the CPU) and must bring it to the
    losses' device."""
    from test_student_objective import WholeSequenceCollator

    rows = [{"text": RATIONALE_ROWS[0]["rationale"]}, {"text": RATIONALE_ROWS[1]["rationale"], "cf": True},
            {"text": RATIONALE_ROWS[2]["counterfactual_rationale"]}]
    collator = WholeSequenceCollator(tokenizer)
    torch.testing.assert_close(
        torch.tensor(_evaluated(tmp_path, "gpt2", tokenizer, rows, use_cpu=False, collator=collator)),
        torch.tensor(_evaluated(tmp_path, "gpt2", tokenizer, rows, use_cpu=True, collator=collator)),
        rtol=1e-5, atol=1e-6)


def test_a_student_loaded_for_evaluation_is_on_the_gpu(tokenizer, tmp_path):
    from scott_distill import RationaleStudent
    from scott_distill.student.model import load_student_for_inference

    RationaleStudent(make_t5(len(tokenizer)), tokenizer).save_pretrained(tmp_path / "student")
    model, _ = load_student_for_inference(str(tmp_path / "student"))
    assert next(model.parameters()).device.type == CUDA.type and not model.training
