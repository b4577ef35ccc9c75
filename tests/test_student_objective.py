"""The counterfactual objective on the real training path (``Trainer.train`` with accumulation), checked against
``Seq2SeqTrainer`` and against an independent hand-written loop; alpha in one-kind batches; label smoothing;
per-part metrics; the student format on every save.

All comparisons run plain SGD with a constant learning rate and no clipping: weights after k steps are then
a linear read-out of the summed gradients, so a wrong token weight or normaliser shows up in the weights
(Adam's per-parameter scaling or clipping could hide a uniform scale error).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import make_gpt2, make_t5
from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

from scott_distill import (
    CounterfactualDataCollator,
    CounterfactualTrainer,
    CounterfactualTrainingArguments,
    RationaleStudent,
    StudentFormat,
)

RATIONALE_ROWS = [
    {"question": "Where would you keep milk cold?", "choices": ["fridge", "oven", "shelf"], "answer": "fridge",
     "rationale": "A fridge keeps food cold.", "counterfactual_answer": "oven",
     "counterfactual_rationale": "An oven is where milk is kept."},
    {"question": "What tool cuts wood?", "choices": ["saw", "towel"], "answer": "saw",
     "rationale": "A saw has sharp teeth that cut through wood.", "counterfactual_answer": "towel",
     "counterfactual_rationale": "A towel cuts wood well."},
    {"question": "What do people use to write on paper?", "choices": ["pen", "spoon", "hammer"], "answer": "pen",
     "rationale": "A pen leaves ink.", "counterfactual_answer": "hammer",
     "counterfactual_rationale": "People write on paper with a hammer because it leaves marks on the page."},
    {"question": "Where do fish live?", "choices": ["water", "desert"], "answer": "water",
     "rationale": "Fish breathe with gills in water.", "counterfactual_answer": "desert",
     "counterfactual_rationale": "Fish live in the desert."},
]
BOOKKEEPING = ("is_counterfactual", "row_index")


def flat(row: dict, counterfactual: bool) -> dict:
    if counterfactual:
        return {"question": row["question"], "choices": row["choices"], "answer": row["counterfactual_answer"],
                "rationale": row["counterfactual_rationale"], "is_counterfactual": True}
    return {"question": row["question"], "choices": row["choices"], "answer": row["answer"],
            "rationale": row["rationale"], "is_counterfactual": False}


def factual_only(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("counterfactual")} for r in rows]


def as_dataset(rows: list[dict]) -> datasets.Dataset:
    """All keys on every row (missing ones None, as JSON lines load): ``Dataset.from_list`` would take the
    first row's keys only and silently drop the others' columns."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return datasets.Dataset.from_list([{k: r.get(k) for k in keys} for r in rows])


def make_model(kind: str, vocab: int):
    if kind == "t5":
        return make_t5(vocab, dropout_rate=0.0)
    return make_gpt2(vocab, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


SGD = dict(optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
           report_to=[], save_strategy="no", disable_tqdm=True, train_sampling_strategy="sequential", seed=0,
           dataloader_drop_last=False)


def ours(tmp_path, kind, tokenizer, rows, alpha, bs=2, ga=2, epochs=1, **kw):
    model = make_model(kind, len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path / f"ours-{alpha}"), counterfactual_alpha=alpha,
                                           per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                                           num_train_epochs=epochs, **{**SGD, **kw})
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=as_dataset(rows),
                                    processing_class=tokenizer)
    trainer.train()
    return model, trainer


class PlainCollator:
    """Our collator's batches for ``Seq2SeqTrainer``: bookkeeping dropped, counterfactual rows' labels hidden."""

    def __init__(self, inner: CounterfactualDataCollator):
        self.inner = inner

    def __call__(self, rows):
        batch = self.inner(rows)
        cf = batch.pop("is_counterfactual")
        batch.pop("row_index", None)  # (absent in collators before row_index existed)
        batch["labels"] = batch["labels"].masked_fill(cf.unsqueeze(1), -100)
        return batch


def plain(tmp_path, kind, tokenizer, rows, bs=2, ga=2, epochs=1, **kw):
    model = make_model(kind, len(tokenizer))
    collator = CounterfactualDataCollator(tokenizer, model=model if kind == "t5" else None)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "plain"), per_device_train_batch_size=bs,
                                    gradient_accumulation_steps=ga, num_train_epochs=epochs,
                                    remove_unused_columns=False, **{**SGD, **kw})
    Seq2SeqTrainer(model=model, args=args, train_dataset=as_dataset(rows),
                   data_collator=PlainCollator(collator)).train()
    return model


def assert_same_weights(a, b, rtol=1e-4, atol=1e-6):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=name)


# -- the independent reference --------------------------------------------------------------------------------


def _token_ce(model, batch, causal, eps):
    """Hand-written token cross-entropy (with label smoothing as in transformers' LabelSmoother)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", *BOOKKEEPING)}
    logits, labels = model(**inputs).logits, batch["labels"]
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ce = (1 - eps) * nll + eps * (-logp.mean(-1))
    mask = labels != -100
    cf = batch["is_counterfactual"].unsqueeze(1)
    return ce, mask & ~cf, mask & cf


def reference_training(kind, tokenizer, rows, alpha, bs, ga, epochs, lr=0.5, eps=0.0, per_part_means=False,
                       collator=None, world=1, average_tokens=True):
    """SGD over windows of ``ga`` micro-batches of ``bs`` rows, in order; no scott_distill loss code.

    ``per_part_means=True``: each window's loss is (1 - alpha) * mean over its factual label tokens +
    alpha * mean over its counterfactual ones. Otherwise the documented token weights:
    ((1 - alpha) / pi_f or alpha / pi_cf) / (label tokens in the window), pi the dataset's token shares.
    ``collator``: another collator than ours (it must give ``is_counterfactual``).

    ``world`` > 1: DDP as written in its documentation, in one process. Micro-batch i goes to process i % world
    (accelerate's batch sharding); each process's loss is normalised by the label tokens of the window on all
    processes (``average_tokens``) or on its own, and the processes' gradients are averaged (DDP) after scaling
    the first kind by ``world`` (transformers' ``average_tokens_across_devices``).
    """
    model = make_model(kind, len(tokenizer)).train()
    causal = kind != "t5"
    if collator is None:
        collator = CounterfactualDataCollator(tokenizer, model=model if not causal else None)
    batches = [collator(rows[i : i + bs]) for i in range(0, len(rows), bs)]

    def counts(batch):
        labels = batch["labels"][:, 1:] if causal else batch["labels"]
        cf = batch["is_counterfactual"].unsqueeze(1)
        return int(((labels != -100) & ~cf).sum()), int(((labels != -100) & cf).sum())

    n_f = sum(counts(b)[0] for b in batches)
    n_cf = sum(counts(b)[1] for b in batches)
    pi_f, pi_cf = n_f / (n_f + n_cf), n_cf / (n_f + n_cf)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    per_process = [batches[r::world] for r in range(world)]
    steps = [[mine[i : i + ga] for mine in per_process] for i in range(0, len(per_process[0]), ga)]
    for _ in range(epochs):
        for windows in steps:  # one optimizer step: each process's window of micro-batches
            everywhere = sum(sum(counts(b)) for window in windows for b in window)
            opt.zero_grad()
            for window in windows:
                w_f = sum(counts(b)[0] for b in window)
                w_cf = sum(counts(b)[1] for b in window)
                for b in window:
                    ce, fact, cf = _token_ce(model, b, causal, eps)
                    if per_part_means:
                        loss = (1 - alpha) * (ce * fact).sum() / max(w_f, 1) + alpha * (ce * cf).sum() / max(w_cf, 1)
                    else:
                        c_f = (1 - alpha) / pi_f if pi_f else 0.0
                        c_cf = alpha / pi_cf if pi_cf else 0.0
                        loss = (c_f * (ce * fact).sum() + c_cf * (ce * cf).sum()) / (
                            everywhere / world if average_tokens else w_f + w_cf)
                    (loss / world).backward()
            opt.step()
    return model


# -- #17: the training path against Seq2SeqTrainer and the reference ---------------------------------------


# transformers' T5 computes a per-micro-batch mean loss yet tells the Trainer it normalises by the window's
# token count (its forward accepts **kwargs), so Seq2SeqTrainer + T5 + accumulation is not token-normalised:
# T5 is compared without accumulation, GPT-2 (whose loss does use num_items_in_batch) with it.
PLAIN_SHAPES = [("t5", 2, 1), ("gpt2", 2, 2)]


@pytest.mark.parametrize(("kind", "bs", "ga"), PLAIN_SHAPES)
def test_alpha_zero_training_equals_seq2seq_trainer_on_factual_data(tokenizer, tmp_path, kind, bs, ga):
    """k optimizer steps (GPT-2: windows of 4 rows then 2), data without counterfactual rows."""
    rows = factual_only(RATIONALE_ROWS) + factual_only(RATIONALE_ROWS[:2])
    a, _ = ours(tmp_path, kind, tokenizer, rows, alpha=0.0, bs=bs, ga=ga, epochs=2)
    b = plain(tmp_path, kind, tokenizer, rows, bs=bs, ga=ga, epochs=2)
    assert_same_weights(a, b)


@pytest.mark.parametrize(("kind", "bs", "ga"), [("t5", 4, 1), ("gpt2", 2, 2)])
def test_alpha_zero_training_equals_seq2seq_trainer_with_counterfactual_rows_masked(tokenizer, tmp_path, kind, bs,
                                                                                    ga):
    """With counterfactual rows, alpha=0 is plain fine-tuning on the factual tokens. Each window here is the
    whole dataset (3 epochs = 3 steps), the case where the per-window token normalisations of both trainers
    coincide exactly (docs/training.md)."""
    a, _ = ours(tmp_path, kind, tokenizer, RATIONALE_ROWS, alpha=0.0, bs=bs, ga=ga, epochs=3)
    b = plain(tmp_path, kind, tokenizer, RATIONALE_ROWS, bs=bs, ga=ga, epochs=3)
    assert_same_weights(a, b)


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_alpha_half_training_equals_reference_per_part_token_means(tokenizer, tmp_path, kind):
    """Windows holding the whole data (rationale rows and flat rows): every step minimises
    0.5 * mean_factual + 0.5 * mean_counterfactual over the window's tokens, written here by hand."""
    rows = RATIONALE_ROWS[:2] + [flat(RATIONALE_ROWS[2], False), flat(RATIONALE_ROWS[3], True)]
    a, _ = ours(tmp_path, kind, tokenizer, rows, alpha=0.5, epochs=3)
    b = reference_training(kind, tokenizer, rows, alpha=0.5, bs=2, ga=2, epochs=3, per_part_means=True)
    assert_same_weights(a, b)


@pytest.mark.parametrize("alpha", [0.3, 0.5])
def test_training_with_uneven_windows_equals_reference_token_weights(tokenizer, tmp_path, alpha):
    """Windows whose composition differs from the data's (flat and rationale rows, 2 x 2 then 1 x 2 rows,
    2 epochs) against the documented token weights, written by hand."""
    rows = [RATIONALE_ROWS[0], flat(RATIONALE_ROWS[1], False), flat(RATIONALE_ROWS[2], True), RATIONALE_ROWS[3],
            flat(RATIONALE_ROWS[1], True), flat(RATIONALE_ROWS[2], False)]
    a, _ = ours(tmp_path, "t5", tokenizer, rows, alpha=alpha, epochs=2)
    b = reference_training("t5", tokenizer, rows, alpha=alpha, bs=2, ga=2, epochs=2)
    assert_same_weights(a, b)


DDP_WORKER = Path(__file__).parent / "ddp_objective_worker.py"


def _all_keys(rows: list[dict]) -> list[dict]:
    return as_dataset(rows).to_list()


@pytest.mark.distributed
@pytest.mark.parametrize(("average_tokens", "compiled"), [(False, False), (True, False), (False, True)],
                         ids=["per-process-tokens", "average-tokens", "torch-compile"])
def test_torchrun_training_and_evaluation_equal_one_process_references(tokenizer, tmp_path, average_tokens, compiled):
    """Two processes through the Python API against one-process references written by hand.

    Training: 6 rows, one per process and micro-batch, windows of 2 then 1 micro-batch, alpha=0.5, with
    ``average_tokens_across_devices`` on (the window's tokens on both processes normalise the loss) and off (each
    process its own, as transformers does; DDP averages the gradients). Evaluation: 7 rows in per-process batches
    of 2, so that the last step holds 3 rows and ``gather_for_metrics`` drops the row that evened it out; the
    per-part losses equal the token means over the 7 rows. With ``torch_compile`` (eager backend) the evaluation
    leaves the compiled module as the trainer's wrapped model, which training must not keep."""
    init = tmp_path / "init"
    make_model("t5", len(tokenizer)).save_pretrained(init)
    tokenizer.save_pretrained(init)
    train_rows = [RATIONALE_ROWS[0], flat(RATIONALE_ROWS[1], False), RATIONALE_ROWS[2], flat(RATIONALE_ROWS[3], True),
                  RATIONALE_ROWS[1], flat(RATIONALE_ROWS[0], True)]
    eval_rows = [RATIONALE_ROWS[3], flat(RATIONALE_ROWS[2], True), RATIONALE_ROWS[0], flat(RATIONALE_ROWS[1], False),
                 RATIONALE_ROWS[2], flat(RATIONALE_ROWS[0], True), RATIONALE_ROWS[1]]
    (tmp_path / "train.json").write_text(json.dumps(_all_keys(train_rows)))
    (tmp_path / "eval.json").write_text(json.dumps(_all_keys(eval_rows)))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29541 + average_tokens + 2 * compiled), str(DDP_WORKER), str(init), str(tmp_path / "train.json"),
         str(tmp_path / "eval.json"), str(out), "--average_tokens_across_devices", str(average_tokens).lower(),
         "--gradient_accumulation_steps", "2", *(["--torch_compile"] if compiled else [])],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = reference_training("t5", tokenizer, train_rows, alpha=0.5, bs=1, ga=2, epochs=1, world=2,
                                   average_tokens=average_tokens)
    assert_same_weights(AutoModelForSeq2SeqLM.from_pretrained(out), reference)
    metrics = json.loads((out / "eval.json").read_text())
    f, cf = exact_part_means(AutoModelForSeq2SeqLM.from_pretrained(init), tokenizer, eval_rows)
    assert metrics["eval_loss_factual"] == pytest.approx(f, rel=1e-5)
    assert metrics["eval_loss_counterfactual"] == pytest.approx(cf, rel=1e-5)


@pytest.mark.parametrize("bf16", [False, True])
def test_train_undoes_an_evaluation_only_prepare_under_several_processes(tokenizer, tmp_path, monkeypatch, bf16):
    """In process, the state ``train`` needs (the torchrun test above shows the effect on the weights): after
    ``evaluate``, accelerate's evaluation-mode mark, the mixed-precision forward wrapper and the registered model are
    undone when the run has several processes, and left alone with one."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=bf16,
                                           per_device_eval_batch_size=2)
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    trainer.evaluate(as_dataset(RATIONALE_ROWS[:2]))
    assert model._is_accelerate_prepared and trainer.accelerator._models == [model]
    assert ("_original_forward" in model.__dict__) == bf16
    trainer._unprepare_evaluation_only_model()  # one process: nothing to undo
    assert model._is_accelerate_prepared and trainer.accelerator._models == [model]
    monkeypatch.setattr(type(args), "world_size", property(lambda self: 2))
    trainer._unprepare_evaluation_only_model()
    assert "_is_accelerate_prepared" not in model.__dict__ and trainer.accelerator._models == []
    assert "_original_forward" not in model.__dict__
    # the forward is the model's own again: no autocast wrapper left for a second prepare to stack another on
    assert getattr(model.forward, "__func__", None) is type(model).forward
    trainer._unprepare_evaluation_only_model()  # nothing left to undo: no error
    wrapped = torch.nn.Linear(2, 2)
    trainer.model_wrapped = wrapped  # a wrapped model (DDP, FSDP, DeepSpeed) is left to the Trainer
    model._is_accelerate_prepared = True
    trainer._unprepare_evaluation_only_model()
    assert model._is_accelerate_prepared


def test_train_undoes_an_evaluation_only_prepare_of_a_compiled_model(tokenizer, tmp_path, monkeypatch):
    """With ``torch_compile`` the evaluation also leaves the compiled module as ``model_wrapped``: under several
    processes the undo drops it with the mark, so ``train`` compiles and wraps the model again (the torchrun test's
    ``torch-compile`` case shows the weights); with one process it is left alone."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                                           per_device_eval_batch_size=2, torch_compile=True,
                                           torch_compile_backend="eager")
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    trainer.evaluate(as_dataset(RATIONALE_ROWS[:2]))
    compiled = trainer.model_wrapped
    assert compiled is not model and compiled._orig_mod is model and model._is_accelerate_prepared
    trainer._unprepare_evaluation_only_model()  # one process: nothing to undo
    assert trainer.model_wrapped is compiled and model._is_accelerate_prepared
    monkeypatch.setattr(type(args), "world_size", property(lambda self: 2))
    trainer.is_distributed_loading_by_transformers = True  # transformers placed a tensor-parallel model itself
    trainer._unprepare_evaluation_only_model()
    assert trainer.model_wrapped is compiled and model._is_accelerate_prepared
    trainer.is_distributed_loading_by_transformers = False
    other = torch.nn.Linear(2, 2)  # a second model prepared on the same accelerator (a subclass's reference model)
    trainer.accelerator._models.append(other)
    trainer._unprepare_evaluation_only_model()
    assert trainer.model_wrapped is model and "_is_accelerate_prepared" not in model.__dict__
    assert trainer.accelerator._models == [other]


class WholeSequenceCollator:
    """A user's own decoder-only collator that trains on every token (labels = input ids, right padding -100):
    unlike ours, its first label is a real token, which a causal LM never predicts; no ``row_index``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows):
        ids = [self.tokenizer(r["text"])["input_ids"] for r in rows]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100),
                "is_counterfactual": torch.tensor([bool(r.get("cf")) for r in rows])}


def test_decoder_only_window_count_skips_the_first_label_of_a_collator_that_scores_it(tokenizer, tmp_path):
    """Windows of 2 rows then 1 (one row per micro-batch, rows of different lengths) against the
    hand-written loop: the window's token count must skip each row's first label (token t predicts t+1), or every
    step's scale is off. (Seq2SeqTrainer is no reference here: for a GPT-2 built from a config its model has no
    ``loss_type``, so transformers 5.x counts ``labels`` unshifted; one step of its logged loss is 8/9 of the
    hand-computed token mean on a 9-token row.)"""
    rows = [{"text": r["rationale"]} for r in RATIONALE_ROWS[:3]]
    assert len({len(tokenizer(r["text"])["input_ids"]) for r in rows}) == 3
    model = make_model("gpt2", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path / "ours"), counterfactual_alpha=0.0,
                                           per_device_train_batch_size=1, gradient_accumulation_steps=2,
                                           num_train_epochs=1, **SGD)
    CounterfactualTrainer(model=model, args=args, train_dataset=rows, data_collator=WholeSequenceCollator(tokenizer),
                          processing_class=tokenizer).train()
    reference = reference_training("gpt2", tokenizer, rows, alpha=0.0, bs=1, ga=2, epochs=1,
                                   collator=WholeSequenceCollator(tokenizer))
    assert_same_weights(model, reference)


def test_window_token_count_is_none_without_batches_or_labels_as_in_transformers(tokenizer, tmp_path):
    """``_get_num_items_in_batch`` keeps transformers' contract: ``None`` for an empty window (an iterable dataset
    that ends inside a window) and for batches without labels."""
    from transformers import Trainer

    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    trainer = CounterfactualTrainer(model=make_model("gpt2", len(tokenizer)), args=args, processing_class=tokenizer)
    no_labels = [{"input_ids": torch.ones(1, 3, dtype=torch.long), "is_counterfactual": torch.zeros(1)}]
    for samples in ([], no_labels):
        assert Trainer._get_num_items_in_batch(trainer, samples, torch.device("cpu")) is None
        assert trainer._get_num_items_in_batch(samples, torch.device("cpu")) is None


# -- alpha whatever the batch holds -------------------------------------------------------------------------

FLAT_ROWS = [flat(RATIONALE_ROWS[0], False), flat(RATIONALE_ROWS[0], True),
             flat(RATIONALE_ROWS[1], True), flat(RATIONALE_ROWS[1], False)]


def test_alpha_matters_with_flat_rows_and_batch_size_one(tokenizer, tmp_path):
    """Flat rows, one row per step, no accumulation: every batch holds one kind of row."""
    a, _ = ours(tmp_path, "t5", tokenizer, FLAT_ROWS, alpha=0.2, bs=1, ga=1)
    b, _ = ours(tmp_path, "t5", tokenizer, FLAT_ROWS, alpha=0.8, bs=1, ga=1)
    diff = max(float((pa - pb).abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))
    assert diff > 1e-4, diff


@pytest.mark.parametrize(("alpha", "first"), [(0.0, True), (1.0, False)])
def test_alpha_zero_or_one_leaves_the_other_part_without_gradient(tokenizer, tmp_path, alpha, first):
    """alpha=0: steps on counterfactual rows change nothing; alpha=1: the same for factual rows."""
    kind_rows = [r for r in FLAT_ROWS if r["is_counterfactual"] == first]
    other = [r for r in FLAT_ROWS if r["is_counterfactual"] != first]
    model, _ = ours(tmp_path, "t5", tokenizer, kind_rows + other, alpha=alpha, bs=1, ga=1, max_steps=2)
    start = make_model("t5", len(tokenizer))
    for (name, p), q in zip(model.named_parameters(), start.parameters()):
        assert torch.equal(p, q), name


def test_token_weights_do_not_depend_on_the_rest_of_the_batch(tokenizer, tmp_path):
    """The loss is a sum of per-token terms with batch-independent weights over the window's token count:
    N_mixed * grad(mixed window) == N_f * grad(factual row alone) + N_cf * grad(counterfactual row alone)."""
    f_row, cf_row = flat(RATIONALE_ROWS[0], False), flat(RATIONALE_ROWS[1], True)
    collator = CounterfactualDataCollator(tokenizer, model=make_t5(len(tokenizer)))
    n = {k: int((collator(rows)["labels"] != -100).sum()) for k, rows in
         (("mixed", [f_row, cf_row]), ("f", [f_row]), ("cf", [cf_row]))}
    start = [p.detach().clone() for p in make_model("t5", len(tokenizer)).parameters()]
    steps = {}
    for key, rows in (("mixed", [f_row, cf_row]), ("f", [f_row]), ("cf", [cf_row])):
        model, _ = ours(tmp_path / key, "t5", tokenizer, rows, alpha=0.3, bs=2, ga=1, max_steps=1, learning_rate=1.0,
                        counterfactual_token_share=0.25)
        steps[key] = [s - p.detach() for s, p in zip(start, model.parameters())]  # lr=1 SGD: the gradient
    lhs = torch.cat([n["mixed"] * m.flatten() for m in steps["mixed"]])
    rhs = torch.cat([(n["f"] * f + n["cf"] * cf).flatten() for f, cf in zip(steps["f"], steps["cf"])])
    # float32 round-off only (a weight off by a few per cent, as alpha overridden per batch gives, is ~1e-2)
    assert float((lhs - rhs).norm() / rhs.norm()) < 1e-4


def test_iterable_dataset_needs_the_token_share(tokenizer, tmp_path):
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no")
    stream = as_dataset(FLAT_ROWS).to_iterable_dataset()
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=stream, processing_class=tokenizer)
    with pytest.raises(ValueError, match="counterfactual_token_share"):
        trainer.train()
    with pytest.raises(ValueError, match="counterfactual_token_share"):
        CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_token_share=1.0)



def test_counting_refuses_a_torch_iterable_dataset_and_an_object_without_length(tokenizer, tmp_path):
    """The token count indexes the dataset: a torch ``IterableDataset`` (even one with ``__len__``) and an object
    without a length (a generator) are refused with the exact message, not a TypeError from ``len`` or indexing."""
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    trainer = CounterfactualTrainer(model=make_model("gpt2", len(tokenizer)), args=args, processing_class=tokenizer)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(RATIONALE_ROWS)

        def __len__(self):
            return len(RATIONALE_ROWS)

    for dataset in (Stream(), (row for row in RATIONALE_ROWS)):
        with pytest.raises(ValueError) as err:
            trainer.count_label_tokens(dataset)
        assert str(err.value) == ("train_dataset has no length, so the share of counterfactual label tokens cannot be "
                                  "counted; pass `counterfactual_token_share` in CounterfactualTrainingArguments.")


class LengthCollator:
    """A user's own collator: row ``n`` becomes ``n`` label tokens (all scored, padding -100), no prompt masking,
    so a decoder-only student's first label token is a real token that no logit predicts."""

    def __call__(self, rows):
        width = max(r["n"] for r in rows)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, :r["n"]] = 7
        return {"input_ids": labels.clamp(min=0), "labels": labels,
                "is_counterfactual": torch.tensor([r["cf"] for r in rows])}


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_count_label_tokens_sums_every_chunk_of_a_list_and_of_a_dataset(tokenizer, tmp_path, kind):
    """Hand count: a row of ``n`` label tokens is ``n`` loss tokens for T5 and ``n - 1`` for a decoder-only student
    (token t predicts t+1: the first label is never a target). 8 rows in chunks of 3 (the last one short), as a
    plain list (indexed row by row) and as a ``datasets.Dataset`` (sliced)."""
    rows = [{"n": n, "cf": cf} for n, cf in [(3, False), (5, True), (2, False), (4, False), (6, True), (1, True),
                                              (7, False), (9, True)]]
    shift = 1 if kind == "gpt2" else 0
    want = [sum(r["n"] - shift for r in rows if not r["cf"]), sum(r["n"] - shift for r in rows if r["cf"])]
    assert want == ([16 - 4, 21 - 4] if kind == "gpt2" else [16, 21])
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    trainer = CounterfactualTrainer(model=make_model(kind, len(tokenizer)), args=args, data_collator=LengthCollator(),
                                    processing_class=tokenizer)
    for dataset in (rows, datasets.Dataset.from_list(rows)):
        counts = trainer.count_label_tokens(dataset, batch_rows=3)
        assert counts.tolist() == want, type(dataset).__name__
    assert trainer.count_label_tokens(rows).tolist() == want  # one chunk (the default 256 rows)


def test_count_label_tokens_is_exact_past_float32(tokenizer, tmp_path):
    """A training set of more than 2**24 label tokens (e.g. 100k rows of 170 tokens) is counted exactly: float32
    would round 2**24 + 1 to 2**24."""
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    trainer = CounterfactualTrainer(model=make_model("t5", len(tokenizer)), args=args, data_collator=LengthCollator(),
                                    processing_class=tokenizer)
    counts = trainer.count_label_tokens([{"n": 2**24, "cf": False}, {"n": 1, "cf": False}, {"n": 3, "cf": True}],
                                        batch_rows=1)
    assert counts.tolist() == [2**24 + 1, 3]


def test_token_cross_entropy_and_part_weights_follow_their_documented_rules():
    """``token_cross_entropy`` without ``label_smoothing`` is plain per-token cross-entropy (a hand-written
    log-softmax), 0 at -100 labels; ``counterfactual_part_weights`` is ``((1 - alpha) / pi_f, alpha / pi_cf)`` with
    weight 0 for a part of share 0."""
    from scott_distill.student.trainer import counterfactual_part_weights, token_cross_entropy

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, -2.0, 0.0]]])
    labels = torch.tensor([[0, -100, 2]])
    for causal, (lg, lb) in ((False, (logits, labels)), (True, (logits[:, :-1], labels[:, 1:]))):
        ce, valid = token_cross_entropy(logits, labels, causal)
        logp = lg - lg.exp().sum(-1, keepdim=True).log()
        want = [[-float(logp[0, t, y]) if y != -100 else 0.0 for t, y in enumerate(lb[0].tolist())]]
        torch.testing.assert_close(ce, torch.tensor(want))
        assert valid.tolist() == [[y != -100 for y in lb[0].tolist()]]
    assert counterfactual_part_weights(0.25, 0.2) == pytest.approx((0.75 / 0.8, 0.25 / 0.2))
    assert counterfactual_part_weights(0.5, 1.0) == (0.0, 0.5)  # no factual tokens
    assert counterfactual_part_weights(0.5, 0.0) == (0.5, 0.0)  # no counterfactual tokens


# -- label smoothing ----------------------------------------------------------------------------------------


def test_label_smoothing_alpha_zero_equals_seq2seq_trainer(tokenizer, tmp_path):
    rows = factual_only(RATIONALE_ROWS)
    a, _ = ours(tmp_path, "t5", tokenizer, rows, alpha=0.0, ga=1, epochs=2, label_smoothing_factor=0.2)
    b = plain(tmp_path, "t5", tokenizer, rows, ga=1, epochs=2, label_smoothing_factor=0.2)
    assert_same_weights(a, b)


def test_label_smoothing_per_part_equals_reference(tokenizer, tmp_path):
    rows = RATIONALE_ROWS[:3] + [flat(RATIONALE_ROWS[3], True)]
    a, _ = ours(tmp_path, "t5", tokenizer, rows, alpha=0.5, epochs=2, label_smoothing_factor=0.2)
    b = reference_training("t5", tokenizer, rows, alpha=0.5, bs=2, ga=2, epochs=2, eps=0.2)
    assert_same_weights(a, b)


# -- data without counterfactual rows ---------------------------------------------------------------------


def test_dataset_without_counterfactual_columns_warns(tokenizer, tmp_path, caplog):
    data = as_dataset(factual_only(RATIONALE_ROWS))
    model = make_model("t5", len(tokenizer))
    with caplog.at_level(logging.WARNING, logger="scott_distill"):
        CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[]),
                              train_dataset=data, processing_class=tokenizer)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("counterfactual_answer" in m and "counterfactual_rationale" in m for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scott_distill"):
        CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(
            output_dir=str(tmp_path), report_to=[], counterfactual_alpha=0.0), train_dataset=data,
            processing_class=tokenizer)
        CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[]),
                              train_dataset=as_dataset(FLAT_ROWS), processing_class=tokenizer)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_counterfactual_columns_warning_reads_the_columns_the_format_needs(tokenizer, tmp_path, caplog):
    """Rationale rows with both counterfactual columns train both parts: no warning. The answer-only baseline
    (``without_rationale``) needs only ``counterfactual_answer``; without it, the warning names just that column."""
    model = make_model("t5", len(tokenizer))
    answers_only = [{k: v for k, v in r.items() if k != "counterfactual_rationale"} for r in RATIONALE_ROWS]

    def warnings_for(rows, **kw):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="scott_distill"):
            CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(
                output_dir=str(tmp_path), report_to=[], **kw), train_dataset=as_dataset(rows),
                processing_class=tokenizer)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert warnings_for(RATIONALE_ROWS) == []
    assert warnings_for(answers_only, without_rationale=True) == []
    [message] = warnings_for(factual_only(RATIONALE_ROWS), without_rationale=True, counterfactual_alpha=0.25)
    assert message.startswith("counterfactual_alpha=0.25 but train_dataset has no counterfactual rows: it lacks the "
                              "columns ['counterfactual_answer'] (and `is_counterfactual`). Only the factual part is "
                              "trained, weighted by (1 - alpha) = 0.75,"), message


# -- per-part metrics ---------------------------------------------------------------------------------------


def exact_part_means(model, tokenizer, rows, causal=False):
    """Token means of the factual / counterfactual label tokens over all rows (one batch, by hand);
    ``None`` for a part without tokens."""
    model.eval()
    collator = CounterfactualDataCollator(tokenizer, model=None if causal else model)
    with torch.no_grad():
        ce, fact, cf = _token_ce(model, collator(rows), causal, 0.0)
    return tuple(float((ce * m).sum() / m.sum()) if m.any() else None for m in (fact, cf))


def test_eval_part_losses_are_exact_with_a_collator_without_row_index(tokenizer, tmp_path):
    """A user's collator without ``row_index`` (one example per row): 3 rows, eval batches of 2 (the last one
    partial), against the token means of all rows collated at once, by hand."""
    rows = [{"text": RATIONALE_ROWS[0]["rationale"]}, {"text": RATIONALE_ROWS[1]["rationale"], "cf": True},
            {"text": RATIONALE_ROWS[2]["counterfactual_rationale"]}]
    model = make_model("gpt2", len(tokenizer))
    collator = WholeSequenceCollator(tokenizer)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, data_collator=collator, processing_class=tokenizer)
    metrics = trainer.evaluate(rows)
    model.eval()
    with torch.no_grad():
        ce, fact, cf = _token_ce(model, collator(rows), True, 0.0)
    assert metrics["eval_loss_factual"] == pytest.approx(float((ce * fact).sum() / fact.sum()), rel=1e-5)
    assert metrics["eval_loss_counterfactual"] == pytest.approx(float((ce * cf).sum() / cf.sum()), rel=1e-5)


def test_eval_part_losses_are_exact_and_predict_does_not_leak(tokenizer, tmp_path):
    """5 rationale rows (10 examples) in eval batches of 2 rows: the last batch is partial."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    eval_rows = RATIONALE_ROWS + RATIONALE_ROWS[:1]
    first = trainer.evaluate(as_dataset(eval_rows))
    f, cf = exact_part_means(model, tokenizer, eval_rows)
    assert first["eval_loss_factual"] == pytest.approx(f, rel=1e-5)
    assert first["eval_loss_counterfactual"] == pytest.approx(cf, rel=1e-5)
    other = [flat(RATIONALE_ROWS[1], True)] * 3
    predicted = trainer.predict(as_dataset(other))
    expected = exact_part_means(model, tokenizer, other)[1]
    assert predicted.metrics["test_loss_counterfactual"] == pytest.approx(expected, rel=1e-5)
    assert "test_loss_factual" not in predicted.metrics
    again = trainer.evaluate(as_dataset(eval_rows))
    assert again["eval_loss_factual"] == pytest.approx(f, rel=1e-5)
    assert again["eval_loss_counterfactual"] == pytest.approx(cf, rel=1e-5)
    # called directly, the loop keeps Trainer's default prefix "eval" (found by mutation testing)
    direct = trainer.evaluation_loop(trainer.get_eval_dataloader(as_dataset(eval_rows)), "Evaluation").metrics
    assert direct["eval_loss_factual"] == pytest.approx(f, rel=1e-5) and "eval_loss" in direct


def test_train_logs_exact_part_losses_per_window(tokenizer, tmp_path):
    """learning_rate=0 keeps the weights, so each logged step's per-part loss is the token mean over that
    window's rows at the initial weights (a token mean over the window, not a mean of batch means)."""
    rows = RATIONALE_ROWS[:2] + [flat(RATIONALE_ROWS[2], False), flat(RATIONALE_ROWS[3], False)]
    model, trainer = ours(tmp_path, "t5", tokenizer, rows, alpha=0.5, bs=1, ga=2, learning_rate=0.0, logging_steps=1,
                          include_num_input_tokens_seen="all")
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    # Trainer.log's own entries too: with include_num_input_tokens_seen, the token throughput since the start
    # (needs the start time passed on)
    assert all(h["num_input_tokens_seen"] > 0 and h["train_tokens_per_second"] > 0 for h in logged)
    f, cf = exact_part_means(model, tokenizer, rows[:2])
    assert logged[0]["loss_factual"] == pytest.approx(f, rel=1e-5)
    assert logged[0]["loss_counterfactual"] == pytest.approx(cf, rel=1e-5)
    f, cf = exact_part_means(model, tokenizer, rows[2:])
    assert logged[1]["loss_factual"] == pytest.approx(f, rel=1e-5) and cf is None
    assert "loss_counterfactual" not in logged[1]


def test_predict_with_generate_evaluates_a_seq2seq_student(tokenizer, tmp_path):
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True,
                                           per_device_eval_batch_size=2, report_to=[], generation_max_length=8)
    generated = []

    def compute_metrics(pred):  # with compute_metrics, evaluate() generates (without it, it is loss-only)
        generated.append(pred.predictions.shape)
        return {"n_generated": float(pred.predictions.shape[0])}

    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer,
                                    compute_metrics=compute_metrics)
    metrics = trainer.evaluate(as_dataset(RATIONALE_ROWS))
    assert metrics["eval_n_generated"] == 2 * len(RATIONALE_ROWS) and generated
    f, cf = exact_part_means(model, tokenizer, RATIONALE_ROWS)
    assert metrics["eval_loss_factual"] == pytest.approx(f, rel=1e-5)
    assert metrics["eval_loss_counterfactual"] == pytest.approx(cf, rel=1e-5)
    out = trainer.predict(as_dataset(RATIONALE_ROWS[:1]))
    assert out.predictions.shape[0] == 2  # one factual + one counterfactual example


def script_costs_past_float32(trainer, model):
    """Hook ``model`` so that its logits on the collated ``RATIONALE_ROWS[:2]`` make every label token's loss an
    exact integer: one token of the first factual example costs 2**24 and one of the second 17, one
    counterfactual token 2**25 and another 19, the rest 0 (sums exact in float64, rounded in float32). Returns
    the batch's labels and ``is_counterfactual``."""
    batch = trainer.data_collator(RATIONALE_ROWS[:2])
    labels, is_cf = batch["labels"], batch["is_counterfactual"]
    assert is_cf.tolist() == [False, True, False, True]
    cost = torch.zeros(labels.shape)
    first_label = [int((row != -100).nonzero()[0]) for row in labels]
    for example, value in ((0, 2.0**24), (2, 17.0), (1, 2.0**25), (3, 19.0)):
        cost[example, first_label[example]] = value

    def scripted_logits(module, args, kwargs, output):
        # label token: logit -cost, one other token 0, the rest -inf, so its cross-entropy is exactly the cost;
        # "+ 0 * logits" keeps the graph that a training step's backward needs
        assert torch.equal(kwargs["input_ids"], batch["input_ids"])
        logits = torch.full_like(output.logits, float("-inf"))
        target = labels.clamp(min=0)
        logits.scatter_(2, target.unsqueeze(2), -cost.unsqueeze(2))
        logits.scatter_(2, ((target + 1) % logits.shape[2]).unsqueeze(2), torch.where(cost > 0, 0.0, -torch.inf)
                        .unsqueeze(2))
        output.logits = logits.masked_fill((labels == -100).unsqueeze(2), 0.0) + 0 * output.logits
        return output

    model.register_forward_hook(scripted_logits, with_kwargs=True)
    return labels, is_cf


def test_eval_part_sums_are_kept_in_float64(tokenizer, tmp_path):
    """A long evaluation's per-part sums pass float32's 24-bit mantissa (2**24 label tokens is about 100k rows of
    170 tokens). Scripted logits make every label token's loss an exact integer: one token of the first factual
    example costs 2**24 and one of the second 17, one counterfactual token 2**25 and another 19, the rest 0. The
    sums 2**24 + 17 and 2**25 + 19 are exact in float64; float32 would round them (to 2**24 + 16, 2**25 + 20)."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    labels, is_cf = script_costs_past_float32(trainer, model)
    metrics = trainer.evaluate(as_dataset(RATIONALE_ROWS[:2]))
    n_f, n_cf = int((labels[~is_cf] != -100).sum()), int((labels[is_cf] != -100).sum())
    assert metrics["eval_loss_factual"] == (2**24 + 17) / n_f
    assert metrics["eval_loss_counterfactual"] == (2**25 + 19) / n_cf


def test_train_part_sums_are_kept_in_float64(tokenizer, tmp_path):
    """The logged per-part training losses, with the scripted costs of the evaluation test above: one optimizer step
    at learning rate 0 over the same two rows logs (2**24 + 17) / n_f and (2**25 + 19) / n_cf exactly, which a
    float32 running sum would round (the trainer's ``__init__`` creates it; found by mutation testing)."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=0.5,
                                           per_device_train_batch_size=2, max_steps=1, logging_steps=1,
                                           **{**SGD, "learning_rate": 0.0})
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=as_dataset(RATIONALE_ROWS[:2]),
                                    processing_class=tokenizer)
    labels, is_cf = script_costs_past_float32(trainer, model)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_factual" in h]
    n_f, n_cf = int((labels[~is_cf] != -100).sum()), int((labels[is_cf] != -100).sum())
    assert len(logged) == 1
    assert logged[0]["loss_factual"] == (2**24 + 17) / n_f
    assert logged[0]["loss_counterfactual"] == (2**25 + 19) / n_cf


def test_predict_passes_on_ignore_keys_and_metric_key_prefix(tokenizer, tmp_path):
    """What ``Trainer.predict`` documents holds through the overrides: ``ignore_keys`` drops model outputs from the
    predictions (T5's are the logits and the encoder's last hidden state; the cache is ignored by default) and
    ``metric_key_prefix`` (``test``) names every metric, transformers' loss as well as the per-part ones."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    data = as_dataset(RATIONALE_ROWS[:2])  # 4 examples
    every_output = trainer.predict(data).predictions
    assert isinstance(every_output, tuple) and len(every_output) == 2
    out = trainer.predict(data, ignore_keys=["encoder_last_hidden_state", "cache"])
    assert isinstance(out.predictions, np.ndarray) and out.predictions.shape[0] == 4
    assert out.predictions.shape[2] == model.config.vocab_size  # the logits alone
    assert {"test_loss", "test_loss_factual", "test_loss_counterfactual"} <= out.metrics.keys()
    assert not any(k.startswith("eval") for k in out.metrics)


def test_loss_only_loops_and_batch_eval_metrics_predictions(tokenizer, tmp_path):
    """``evaluation_loop(..., prediction_loss_only=True)`` gathers no predictions (``args.prediction_loss_only`` is
    False); a direct ``compute_loss`` call after a loop records nothing and returns the batch's loss; with
    ``batch_eval_metrics`` a *prediction* loop (``predict``) still returns its predictions, as in ``Trainer``."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    data = as_dataset(RATIONALE_ROWS[:2])  # one batch of 4 examples
    loop = trainer.evaluation_loop(trainer.get_eval_dataloader(data), "Evaluation", prediction_loss_only=True)
    assert loop.predictions is None and loop.label_ids is None and "eval_loss_factual" in loop.metrics
    batch = trainer.data_collator(RATIONALE_ROWS[:2])
    assert float(trainer.compute_loss(model, batch)) == pytest.approx(loop.metrics["eval_loss"], rel=1e-5)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[],
                                           batch_eval_metrics=True)
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    out = trainer.predict(data)
    assert out.predictions is not None and out.predictions[0].shape[0] == 4


def test_prediction_step_passes_generate_kwargs(tokenizer, tmp_path):
    """``prediction_step(..., **gen_kwargs)`` (Seq2SeqTrainer's API) generates with the caller's settings: the same
    tokens as ``Seq2SeqTrainer.prediction_step`` with the same arguments (2 new tokens, pad and EOS suppressed: the
    untrained student would write padding only)."""
    model = make_model("t5", len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    batch = trainer.data_collator(RATIONALE_ROWS[:1])
    settings = dict(max_new_tokens=2, suppress_tokens=[tokenizer.pad_token_id, tokenizer.eos_token_id])
    loss, tokens, labels = trainer.prediction_step(model, batch, prediction_loss_only=False, **settings)
    reference = Seq2SeqTrainer(model=model, args=Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), predict_with_generate=True, report_to=[]), processing_class=tokenizer)
    plain_batch = {k: v for k, v in batch.items() if k not in BOOKKEEPING}
    _, want, want_labels = reference.prediction_step(model, plain_batch, prediction_loss_only=False, **settings)
    assert torch.equal(tokens, want) and torch.equal(labels, want_labels)
    # padded to the generation config's max_length (20): the start token, 2 new tokens, then padding
    assert tokens.shape[1] == 20 and (tokens[:, 1:3] != tokenizer.pad_token_id).all()
    assert (tokens[:, 3:] == tokenizer.pad_token_id).all()


def test_predict_with_generate_is_refused_for_decoder_only(tokenizer, tmp_path):
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, report_to=[])
    with pytest.raises(ValueError, match="evaluate_student"):
        CounterfactualTrainer(model=make_model("gpt2", len(tokenizer)), args=args, processing_class=tokenizer)


# -- the student format on every save -----------------------------------------------------------------------


def test_every_save_writes_the_student_format(tokenizer, tmp_path):
    args = dict(answer_prefix="Therefore the answer is", factual_tag="<f>", save_strategy="steps", save_steps=1)
    model, trainer = ours(tmp_path, "gpt2", tokenizer, RATIONALE_ROWS, alpha=0.5, max_steps=2, **args)
    trainer.save_model(str(tmp_path / "final"))
    expected = StudentFormat(factual_tag="<f>", answer_prefix="Therefore the answer is")
    out = tmp_path / "ours-0.5"
    for folder in (tmp_path / "final", out / "checkpoint-1", out / "checkpoint-2"):
        student = RationaleStudent.from_pretrained(folder, max_new_tokens=4)
        assert student.format == expected, folder


def test_save_writes_the_state_dict_it_is_given_and_defaults_to_output_dir(tokenizer, tmp_path):
    """``Trainer.save_model`` hands ``_save`` the gathered weights under FSDP and DeepSpeed (``state_dict=``):
    those are the weights to write, not the local model's. ``_save()`` with no folder writes into ``output_dir``,
    as ``Trainer._save`` does; the student format goes with the weights either way."""
    from safetensors.torch import load_file

    model = make_model("gpt2", len(tokenizer))
    out = tmp_path / "out"
    trainer = CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(
        output_dir=str(out), report_to=[], answer_prefix="Hence"), processing_class=tokenizer)
    gathered = {k: torch.full_like(v, 0.25) for k, v in model.state_dict().items()}
    trainer._save(str(tmp_path / "gathered"), state_dict=dict(gathered))  # save_pretrained empties the dict
    saved = load_file(tmp_path / "gathered" / "model.safetensors")
    assert gathered and all(torch.equal(saved[k], v) for k, v in gathered.items())
    assert RationaleStudent.from_pretrained(tmp_path / "gathered").format.answer_prefix == "Hence"
    trainer._save()
    saved = load_file(out / "model.safetensors")
    assert saved and all(torch.equal(v, model.state_dict()[k]) for k, v in saved.items())
    assert RationaleStudent.from_pretrained(out).format.answer_prefix == "Hence"


def test_a_custom_collators_format_is_the_one_saved(tokenizer, tmp_path):
    model = make_model("gpt2", len(tokenizer))
    collator = CounterfactualDataCollator(tokenizer, format=StudentFormat(answer_prefix="Hence"))
    trainer = CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(
        output_dir=str(tmp_path), report_to=[]), data_collator=collator, processing_class=tokenizer)
    trainer.save_model(str(tmp_path / "s"))
    assert RationaleStudent.from_pretrained(tmp_path / "s").format.answer_prefix == "Hence"
    with pytest.raises(ValueError, match="format"):
        CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(
            output_dir=str(tmp_path), report_to=[], answer_prefix="Thus"), data_collator=collator)


def test_rationale_student_refuses_a_folder_without_format(tokenizer, tmp_path):
    model = make_model("gpt2", len(tokenizer))
    model.save_pretrained(tmp_path / "bare")
    tokenizer.save_pretrained(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="scott_config.json"):
        RationaleStudent.from_pretrained(tmp_path / "bare")
    fmt = StudentFormat(answer_prefix="Thus")
    assert RationaleStudent.from_pretrained(tmp_path / "bare", fmt=fmt).format == fmt


def test_trainer_push_to_hub_uploads_the_student_format(tokenizer, tmp_path):
    """The Trainer's own ``push_to_hub`` (real huggingface_hub client code) against the local test Hub server
    on 127.0.0.1 (tests/hub_server.py), in a subprocess with HF_ENDPOINT set; then pulled back."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from hub_server import FakeHub, files_at

    tests = Path(__file__).parent
    make_model("gpt2", len(tokenizer)).save_pretrained(tmp_path / "init")
    tokenizer.save_pretrained(tmp_path / "init")
    (tmp_path / "rows.json").write_text(json.dumps(RATIONALE_ROWS[:2]))
    with FakeHub(required_token="hf_test_token") as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"),
               "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(tests)}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run([sys.executable, str(tests / "trainer_push_client.py"), str(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        files = files_at(hub.state.repos[("model", "org/cf-student")], "main")
    assert json.loads(files["scott_config.json"])["answer_prefix"] == "Therefore the answer is"
    assert json.loads(proc.stdout.strip().splitlines()[-1])["prefix"] == "Therefore the answer is"


def test_train_warns_with_truncation_counts_over_the_training_set(tokenizer, tmp_path, caplog):
    short = factual_only(RATIONALE_ROWS[:1])[0]
    long = {**short, "choices": short["choices"] + ["a very long last choice that nobody ever picks at all"]}
    fmt = StudentFormat()
    limit = len(tokenizer(fmt.source(long["question"], long["choices"]))["input_ids"]) - 3
    assert len(tokenizer(fmt.source(short["question"], short["choices"]))["input_ids"]) <= limit
    with caplog.at_level(logging.WARNING, logger="scott_distill"):
        ours(tmp_path, "t5", tokenizer, [short, long, short], alpha=0.0, max_steps=1, max_source_length=limit)
    assert any("1 of 3 sources" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_truncation_warning_counts_only_the_training_set_after_an_evaluation(tokenizer, tmp_path, caplog):
    """The collator's truncation counts are running totals: an ``evaluate()`` before ``train()`` collates the
    eval rows with the same collator. The warning names the training set's cuts only (1 of 3 sources), not the
    totals (3 of 5)."""
    short = factual_only(RATIONALE_ROWS[:1])[0]
    long = {**short, "choices": short["choices"] + ["a very long last choice that nobody ever picks at all"]}
    limit = len(tokenizer(StudentFormat().source(long["question"], long["choices"]))["input_ids"]) - 3
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path / "out"), counterfactual_alpha=0.0, max_steps=1,
                                           max_source_length=limit, per_device_eval_batch_size=2, **SGD)
    trainer = CounterfactualTrainer(model=make_model("t5", len(tokenizer)), args=args,
                                    train_dataset=as_dataset([short, long, short]),
                                    eval_dataset=as_dataset([long, long]), processing_class=tokenizer)
    trainer.evaluate()
    assert trainer.data_collator.truncation_counts["sources_cut"] == 2
    with caplog.at_level(logging.WARNING, logger="scott_distill"):
        trainer.train()
    cuts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Truncation over train_dataset")]
    assert len(cuts) == 1 and cuts[0].startswith("Truncation over train_dataset: 1 of 3 sources lost their end"), cuts
