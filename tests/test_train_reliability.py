"""Faults a long training run meets: out of memory (in process), SIGTERM / SIGINT and kill -9 at random moments
(subprocesses running ``scott-distill train`` through tests/train_fault_client.py, which holds every fault hook).

``SCOTT_RELIABILITY_TRIALS=N`` runs N random kills instead of the default 2 (docs/reliability.md uses 20);
``SCOTT_RELIABILITY_REPORT=file.jsonl`` appends the figures of every trial there.
"""

from __future__ import annotations

import random

import datasets
import pytest
import torch
from conftest import make_gpt2, make_t5

from scott_distill import CounterfactualTrainer, CounterfactualTrainingArguments
from scott_distill.student.trainer import row_slice

QUESTIONS = ["Where is the apple kept?", "What cuts wood best in a small workshop?", "Who bakes bread?",
             "Which animal barks at night when strangers walk by the old house?", "What is cold?"]


def rows(n: int, seed: int = 0) -> datasets.Dataset:
    """Rationale rows of varied lengths (so that each micro-batch has its own padding)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        words = " ".join(rng.choice(["it", "is", "the", "one", "that", "fits", "best", "here"])
                         for _ in range(rng.randint(1, 12)))
        out.append({"question": q, "choices": ["yes", "no", "maybe"], "answer": "yes",
                    "rationale": f"Because {words}.", "counterfactual_answer": "no",
                    "counterfactual_rationale": f"Not {words[: rng.randint(1, 30)]}."})
    return datasets.Dataset.from_list(out)


def make_student(kind: str, tokenizer):
    # no dropout: a forward cut short by a real out-of-memory error has drawn dropout masks already
    return (make_t5(len(tokenizer), dropout_rate=0.0) if kind == "t5"
            else make_gpt2(len(tokenizer), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def train_args(tmp_path, name: str, batch: int, accumulation: int, **kw) -> CounterfactualTrainingArguments:
    settings = dict(max_steps=3, learning_rate=1e-2, report_to=[], save_strategy="no", logging_steps=1,
                    disable_tqdm=True, counterfactual_alpha=0.5, seed=0)
    return CounterfactualTrainingArguments(
        output_dir=str(tmp_path / name), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
        **{**settings, **kw})


class SmallCard:
    """A forward pre-hook that raises ``torch.OutOfMemoryError`` for more than ``max_examples`` examples per
    forward, from the ``from_call``-th forward on (0-based); counts the forwards and the examples they held."""

    def __init__(self, model, max_examples: int, from_call: int = 0):
        self.max_examples, self.from_call, self.calls, self.sizes = max_examples, from_call, 0, []
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        size = len(kwargs["input_ids"])
        self.calls += 1
        if self.calls > self.from_call and size > self.max_examples:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        self.sizes.append(size)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_row_slice_equals_collating_those_rows_alone(kind, tokenizer, tmp_path):
    model = make_student(kind, tokenizer)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "unused", 4, 1), processing_class=tokenizer)
    data = rows(5).to_list()
    batch = trainer.data_collator(data)
    for start, stop in ((0, 1), (1, 3), (3, 5), (0, 5)):
        piece = row_slice(batch, start, stop, causal=kind == "gpt2")
        alone = trainer.data_collator(data[start:stop])
        assert piece.keys() == alone.keys()
        for k in alone:
            assert torch.equal(piece[k], alone[k]), (k, start, stop)


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_out_of_memory_backs_off_to_the_weights_of_a_smaller_batch_with_accumulation(kind, tokenizer, tmp_path,
                                                                                      caplog):
    """4 rows per micro-batch on a card that fits 1 row (2 examples): the step is redone 2, then 1 row at a time,
    and training goes on at 1 row; the weights equal a run at batch 1 with 4 accumulation steps, bit for bit."""
    data = rows(12)
    model = make_student(kind, tokenizer)
    card = SmallCard(model, max_examples=2)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "oom", 4, 1), train_dataset=data,
                                    processing_class=tokenizer)
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "Out of memory with 4 rows per forward; redoing optimizer step 1 with 2 rows per forward" in caplog.text
    assert "Out of memory with 2 rows per forward; redoing optimizer step 1 with 1 rows per forward" in caplog.text
    assert trainer.rows_per_forward == 1 and trainer.state.global_step == 3
    assert card.sizes == [2] * 12  # every row trained once, one at a time: none lost, none repeated
    reference = make_student(kind, tokenizer)
    CounterfactualTrainer(model=reference, args=train_args(tmp_path, "small", 1, 4), train_dataset=data,
                          processing_class=tokenizer).train()
    got, want = weights(model), weights(reference)
    assert max_abs_difference(got, want) == 0.0
    assert all(torch.equal(got[k], want[k]) for k in want)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_out_of_memory_in_the_middle_of_an_accumulation_window_redoes_the_window(tokenizer, tmp_path, caplog):
    """The second micro-batch of step 2 runs out of memory after the first one's backward: the step's gradient so
    far is dropped and the step is redone 1 row at a time. The weights equal a run that takes step 1 at batch 2
    x 2 accumulation steps and the rest at batch 1 x 4 (its checkpoint resumed with those settings)."""
    data = rows(12)
    model = make_student("t5", tokenizer)
    card = SmallCard(model, max_examples=2, from_call=3)  # step 1: 2 forwards, step 2: the 4th forward fails
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "oom", 2, 2), train_dataset=data,
                                    processing_class=tokenizer)
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "Out of memory with 2 rows per forward; redoing optimizer step 2 with 1 rows per forward" in caplog.text
    # 2 + 1 forwards of 2 rows (the 4th failed), then step 2 again and step 3 at 1 row: 8 forwards of 1 row
    assert card.sizes == [4, 4, 4] + [2] * 8
    reference = make_student("t5", tokenizer)
    first = train_args(tmp_path, "ref", 2, 2, save_strategy="steps", save_steps=1)
    CounterfactualTrainer(model=reference, args=first, train_dataset=data, processing_class=tokenizer).train()
    reference = make_student("t5", tokenizer)
    rest = train_args(tmp_path, "ref", 1, 4)
    CounterfactualTrainer(model=reference, args=rest, train_dataset=data, processing_class=tokenizer).train(
        resume_from_checkpoint=str(tmp_path / "ref" / "checkpoint-1"))
    assert max_abs_difference(weights(model), weights(reference)) == 0.0


def test_out_of_memory_at_one_row_and_other_errors_are_raised(tokenizer, tmp_path):
    model = make_student("gpt2", tokenizer)
    SmallCard(model, max_examples=1)  # one row is two examples: nothing fits
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "a", 2, 1), train_dataset=rows(4),
                                    processing_class=tokenizer)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.train()
    assert trainer.rows_per_forward == 1
    model = make_student("gpt2", tokenizer)
    calls = {"n": 0}

    def broken(module, args, kwargs):
        calls["n"] += 1
        raise RuntimeError("shape mismatch")

    model.register_forward_pre_hook(broken, with_kwargs=True)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "b", 2, 1), train_dataset=rows(4),
                                    processing_class=tokenizer)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        trainer.train()
    assert calls["n"] == 1 and trainer.rows_per_forward is None  # not retried
