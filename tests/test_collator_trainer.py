"""CounterfactualDataCollator masks, the alpha-weighted loss, and CounterfactualTrainer."""

from __future__ import annotations

import json
import logging
import os
import signal

import datasets
import numpy as np
import pytest
import torch
from conftest import make_gpt2, make_t5
from test_student_objective import flat
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from scott_distill import (
    CounterfactualDataCollator,
    CounterfactualTrainer,
    CounterfactualTrainingArguments,
    StudentFormat,
)

ROW = {
    "question": "Where would you keep milk cold?",
    "choices": ["fridge", "oven", "shelf"],
    "answer": "fridge",
    "rationale": "A fridge keeps food cold.",
    "counterfactual_answer": "oven",
    "counterfactual_rationale": "An oven is where milk is kept.",
}
ROW2 = {
    "question": "What tool cuts wood?",
    "choices": ["saw", "towel"],
    "answer": "saw",
    "rationale": "A saw has sharp teeth.",
    "counterfactual_answer": "towel",
    "counterfactual_rationale": "A towel cuts wood well.",
}


def kept(tokenizer, labels):
    return tokenizer.decode([t for t in labels.tolist() if t != -100])


def test_seq2seq_masks_hand_checked(tokenizer):
    model = make_t5(len(tokenizer))
    batch = CounterfactualDataCollator(tokenizer, model=model)([ROW])
    assert batch["is_counterfactual"].tolist() == [False, True]
    src = [tokenizer.decode(r[m.bool()]) for r, m in zip(batch["input_ids"], batch["attention_mask"])]
    assert src == [
        "[factual] Where would you keep milk cold? \n (a) fridge (b) oven (c) shelf",
        "[counterfactual] Where would you keep milk cold? \n (a) fridge (b) oven (c) shelf",
    ]
    assert kept(tokenizer, batch["labels"][0]) == "[factual] A fridge keeps food cold. So the answer is fridge</s>"
    assert kept(tokenizer, batch["labels"][1]) == " oven</s>"  # answer tokens + EOS only
    # the decoder is teacher-forced over the whole counterfactual target, rationale included
    dec = batch["decoder_input_ids"][1].tolist()
    assert dec[0] == model.config.decoder_start_token_id
    assert tokenizer.decode(dec[1:]).startswith(
        "[counterfactual] An oven is where milk is kept. So the answer is oven"
    )


def test_decoder_only_masks_hand_checked(tokenizer):
    batch = CounterfactualDataCollator(tokenizer)([ROW])
    ids, labels = batch["input_ids"], batch["labels"]
    first = tokenizer.decode(ids[0][batch["attention_mask"][0].bool()])
    assert first == ("[factual] Where would you keep milk cold? \n (a) fridge (b) oven (c) shelf\n"
                     "[factual] A fridge keeps food cold. So the answer is fridge</s>")
    assert kept(tokenizer, labels[0]) == "[factual] A fridge keeps food cold. So the answer is fridge</s>"
    assert kept(tokenizer, labels[1]) == " oven</s>"
    assert batch["attention_mask"][:, 0].all()  # right padding for training


def test_flat_rows_and_answer_only_baseline(tokenizer):
    flat = [dict(question="Q?", choices=["yes", "no"], answer="no", rationale="r.", is_counterfactual=True),
            dict(question="Q?", choices=["yes", "no"], answer="yes", rationale="r.", is_counterfactual=False)]
    batch = CounterfactualDataCollator(tokenizer)(flat)
    assert batch["is_counterfactual"].tolist() == [True, False]
    assert kept(tokenizer, batch["labels"][0]) == " no</s>"
    base = CounterfactualDataCollator(tokenizer, format=StudentFormat(without_rationale=True))([ROW])
    assert kept(tokenizer, base["labels"][0]) == "fridge</s>"


def test_collator_errors(tokenizer):
    col = CounterfactualDataCollator(tokenizer)
    with pytest.raises(ValueError, match="answer"):
        col([{"question": "q", "choices": ["a"]}])
    with pytest.raises(ValueError, match="rationale"):
        col([{"question": "q", "choices": ["a"], "answer": "a"}])


def test_is_counterfactual_flag_is_read_by_value_never_by_truthiness(tokenizer):
    """A JSON/CSV dataset may hold the flag as text: bool("False") is True, which made every row counterfactual."""
    import numpy as np

    col = CounterfactualDataCollator(tokenizer)
    row = {"question": "q", "choices": ["a", "b"], "answer": "a", "rationale": "r"}
    for flag, expected in ((False, False), (True, True), (0, False), (1, True), (0.0, False), (1.0, True),
                           (np.bool_(False), False), (np.int64(1), True)):
        assert col([{**row, "is_counterfactual": flag}])["is_counterfactual"].tolist() == [expected], flag
    for flag in ("False", "0", "true", 2, 0.5):
        with pytest.raises(ValueError, match="is_counterfactual"):
            col([{**row, "id": "r7", "is_counterfactual": flag}])
    # the message names the row and says what to do (exact text: found by mutation testing)
    with pytest.raises(ValueError) as err:
        col([{**row, "id": "r7", "is_counterfactual": "False"}])
    assert str(err.value) == ("`is_counterfactual` of row 'r7' is 'False' (str); expected a bool or 0 / 1 (None for a "
                              "rationale row). Convert text flags, e.g. `x == 'True'`, before training.")
    with pytest.raises(ValueError, match="of the row of question 'q' is 2 "):
        col([{**row, "is_counterfactual": 2}])


def manual_loss(model, batch, alpha, causal):
    """Direct computation: per-row token CE lists, then the two token means weighted by alpha."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "is_counterfactual", "row_index")}
    logits = model(**inputs).logits
    f_losses, cf_losses = [], []
    for i in range(logits.shape[0]):
        lg, lb = (logits[i, :-1], batch["labels"][i, 1:]) if causal else (logits[i], batch["labels"][i])
        for t in range(lb.shape[0]):
            if lb[t] != -100:
                ce = -torch.log_softmax(lg[t], -1)[lb[t]]
                (cf_losses if batch["is_counterfactual"][i] else f_losses).append(ce)
    return (1 - alpha) * torch.stack(f_losses).mean() + alpha * torch.stack(cf_losses).mean()


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_alpha_weighted_loss_matches_manual(tokenizer, tmp_path, kind):
    model = make_t5(len(tokenizer)) if kind == "t5" else make_gpt2(len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=0.3, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    batch = trainer.data_collator([ROW, ROW2])
    got = trainer.compute_loss(model, batch).detach()
    expect = manual_loss(model, batch, 0.3, causal=kind == "gpt2")
    assert float(got) == pytest.approx(float(expect), rel=1e-5)
    # with the outputs, as Trainer.compute_loss gives them: their `loss` is the objective, not the model's (None:
    # the model gets no labels)
    _, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    assert float(outputs.loss) == pytest.approx(float(expect), rel=1e-5)


def test_one_kind_only_batch_keeps_alpha(tokenizer, tmp_path):
    """A factual-only batch gives (1 - alpha) * its mean: the missing counterfactual part contributes 0
    (this test used to assert the plain mean, i.e. alpha overridden to 0 for one-kind batches)."""
    model = make_t5(len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=0.3, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    only_f = {k: v for k, v in ROW.items() if not k.startswith("counterfactual")}
    batch = trainer.data_collator([only_f])
    loss = trainer.compute_loss(model, batch)
    plain = model(**{k: v for k, v in batch.items() if k not in ("is_counterfactual", "row_index")}).loss
    assert torch.isfinite(loss) and float(loss) == pytest.approx(0.7 * float(plain), rel=1e-5)


def test_alpha_zero_equals_seq2seq_trainer_loss_and_gradients(tokenizer, tmp_path):
    model_a, model_b = make_t5(len(tokenizer)), make_t5(len(tokenizer))
    col = CounterfactualDataCollator(tokenizer, model=model_a)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=0.0, report_to=[])
    ours = CounterfactualTrainer(model=model_a, args=args, data_collator=col)
    mixed = col([ROW, ROW2])
    loss_a = ours.compute_loss(model_a, mixed)
    loss_a.backward()

    factual = [f for r in (ROW, ROW2) for f in col.features(r) if not f["is_counterfactual"]]
    for f in factual:
        f.pop("is_counterfactual")
        f.pop("loss_mask")
    tokenizer.padding_side = "right"  # T5 pads on the right (the fixture tokenizer is left-padding)
    try:
        plain_batch = DataCollatorForSeq2Seq(tokenizer, model=model_b)(factual)
    finally:
        tokenizer.padding_side = "left"
    plain = Seq2SeqTrainer(model=model_b, args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to=[]))
    loss_b = plain.compute_loss(model_b, plain_batch)
    loss_b.backward()
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-5)
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def tiny_dataset(n=8):
    return datasets.Dataset.from_list([ROW if i % 2 == 0 else ROW2 for i in range(n)])


def _accumulated_and_whole_batch_steps(tokenizer, tmp_path, accepts_loss_kwargs=None, **extra):
    """One lr=1 SGD step on 2 rows, as 1 batch of 2 and as 2 accumulated micro-batches of 1: the weight deltas
    (the gradients) of both."""
    grads = []
    for bs, acc in ((2, 1), (1, 2)):
        model = make_t5(len(tokenizer), dropout_rate=0.0)  # no dropout: both runs see the same function
        if accepts_loss_kwargs is not None:
            model.accepts_loss_kwargs = accepts_loss_kwargs
        args = CounterfactualTrainingArguments(
            output_dir=str(tmp_path / f"{bs}"), per_device_train_batch_size=bs, gradient_accumulation_steps=acc,
            max_steps=1, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", report_to=[],
            counterfactual_alpha=0.5, save_strategy="no", dataloader_drop_last=True, **extra,
        )
        trainer = CounterfactualTrainer(model=model, args=args, train_dataset=tiny_dataset(2),
                                        processing_class=tokenizer)
        before = [p.detach().clone() for p in model.parameters()]
        trainer.train()
        grads.append([b - p.detach() for b, p in zip(before, model.parameters())])  # lr=1 SGD: delta = grad
    return grads


def test_gradient_accumulation_is_token_normalised(tokenizer, tmp_path):
    """2 micro-batches of 1 row accumulated == 1 batch of 2 rows (same gradient)."""
    for ga, gb in zip(*_accumulated_and_whole_batch_steps(tokenizer, tmp_path)):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("accepts_loss_kwargs", [True, False])
def test_gradient_accumulation_is_token_normalised_whatever_the_model_declares(accepts_loss_kwargs, tokenizer,
                                                                               tmp_path):
    """The same for a model that declares ``accepts_loss_kwargs = False`` (Trainer would then divide a loss by the
    accumulation steps, as for a per-micro-batch mean): our loss is already normalised by the window's tokens.
    No clipping: a clipped step would hide a gradient scaled by a constant."""
    grads = _accumulated_and_whole_batch_steps(tokenizer, tmp_path, accepts_loss_kwargs, disable_tqdm=True,
                                               max_grad_norm=0.0)
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_a_given_token_share_is_used_not_counted(tokenizer, tmp_path, caplog):
    """``counterfactual_token_share`` in the arguments is the share training uses: the data is not counted."""
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no",
                                           counterfactual_token_share=0.25, disable_tqdm=True)
    trainer = CounterfactualTrainer(model=make_t5(len(tokenizer)), args=args, train_dataset=tiny_dataset(2),
                                    processing_class=tokenizer)
    with caplog.at_level(logging.INFO, logger="scott_distill"):
        trainer.train()
    assert trainer.counterfactual_token_share == 0.25
    assert not [r for r in caplog.records if r.getMessage().startswith("label tokens in train_dataset")]


def test_trainer_logs_parts_and_resumes(tokenizer, tmp_path):
    model = make_t5(len(tokenizer), dropout_rate=0.0)
    args = CounterfactualTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=4, logging_steps=1, save_steps=2,
        report_to=[], learning_rate=1e-3,
    )
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=tiny_dataset(), processing_class=tokenizer)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 4 and all("loss_factual" in h and "loss_counterfactual" in h for h in logged)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    resumed_model = make_t5(len(tokenizer), dropout_rate=0.0)
    resumed = CounterfactualTrainer(model=resumed_model, args=args, train_dataset=tiny_dataset(),
                                    processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    for k, v in resumed_model.state_dict().items():
        torch.testing.assert_close(v, final[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cut", ["weights-only", "state-cut-short"])
def test_resume_true_skips_a_checkpoint_whose_save_was_killed(cut, tokenizer, tmp_path):
    """Regression: ``resume_from_checkpoint=True`` took the newest ``checkpoint-N`` even when a kill during its
    save had left it incomplete (the Trainer writes it in place, ``trainer_state.json`` last): the resume
    failed. Now it resumes from the newest complete one and ends with the uninterrupted run's weights."""
    args = CounterfactualTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=4, save_steps=2, report_to=[],
        learning_rate=1e-3, logging_steps=1,
    )
    model = make_t5(len(tokenizer), dropout_rate=0.0)
    CounterfactualTrainer(model=model, args=args, train_dataset=tiny_dataset(), processing_class=tokenizer).train()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    last = tmp_path / "checkpoint-4"  # as a kill during its save leaves it
    if cut == "weights-only":
        for f in last.iterdir():
            if f.name != "model.safetensors":
                f.unlink()
        weights = (last / "model.safetensors").read_bytes()
        (last / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    else:
        state = (last / "trainer_state.json").read_text()
        (last / "trainer_state.json").write_text(state[: len(state) // 2])
    resumed_model = make_t5(len(tokenizer), dropout_rate=0.0)
    steps = _StepCounter()
    CounterfactualTrainer(model=resumed_model, args=args, train_dataset=tiny_dataset(), processing_class=tokenizer,
                          callbacks=[steps]).train(resume_from_checkpoint=True)
    for k, v in resumed_model.state_dict().items():
        torch.testing.assert_close(v, final[k], rtol=1e-5, atol=1e-6)
    # the weights alone cannot tell a resume from a deterministic restart at step 0 (a mutant that dropped
    # the checkpoint survived): only steps 3 and 4 may run again
    assert steps.done == [3, 4]


class _StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.done: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.done.append(state.global_step)


def test_resume_true_without_a_complete_checkpoint_is_refused(tokenizer, tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[])
    trainer = CounterfactualTrainer(model=make_t5(len(tokenizer)), args=args, train_dataset=tiny_dataset(),
                                    processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"No complete checkpoint in output_dir=.* \(resume_from_checkpoint=True\)"):
        trainer.train(resume_from_checkpoint=True)


def _checkpoint(folder, step, complete=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return str(path)


def test_last_complete_checkpoint_is_the_highest_step_not_the_last_name(tmp_path, caplog):
    """The newest complete checkpoint by its step number (``checkpoint-10`` after ``checkpoint-9``, though
    ``"checkpoint-10" < "checkpoint-9"`` as text), skipping what is not a ``checkpoint-N`` folder: other folders
    (``runs``, ``checkpoint-best``), a file named like a checkpoint (no warning: it is no cut-short save) and a
    checkpoint without its trainer state (skipped with a warning). A missing ``output_dir`` has none."""
    from scott_distill.student.trainer import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "missing") is None
    assert last_complete_checkpoint(tmp_path) is None
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 9)
    newest = _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 11, complete=False)
    for other in ("runs", "checkpoint-best", "checkpoint-", "checkpoint-12x"):
        (tmp_path / other).mkdir()
        (tmp_path / other / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-13").write_text("not a folder")
    with caplog.at_level("WARNING", logger="scott_distill.student.trainer"):
        assert last_complete_checkpoint(tmp_path) == newest
        assert last_complete_checkpoint(str(tmp_path)) == newest
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all(m.startswith(str(tmp_path / "checkpoint-11") + " is incomplete") for m in warned)


@pytest.mark.parametrize("value,want", [
    (None, "newest"), (True, "newest"), ("true", "newest"), (" TRUE ", "newest"), ("Yes", "newest"), ("1", "newest"),
    (False, None), ("false", None), (" False\n", None), ("NO", None), ("0", None),
    ("some/checkpoint-3", "some/checkpoint-3"), ("True-run/checkpoint-1", "True-run/checkpoint-1"),
])
def test_resume_checkpoint_reads_every_spelling_of_the_setting(value, want, tmp_path, monkeypatch, caplog):
    """``resume_from_checkpoint`` as the CLI and a YAML config give it: unset or a true spelling (any case,
    spaces around) takes the newest complete checkpoint in ``output_dir``; a false spelling starts over; any other
    text is the checkpoint path itself."""
    from scott_distill.student.trainer import resume_checkpoint

    out = tmp_path / "out"
    _checkpoint(out, 1)
    newest = _checkpoint(out, 2)
    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path, 5)  # the working directory's own checkpoint: not the run's
    args = CounterfactualTrainingArguments(output_dir=str(out), report_to=[])
    args.resume_from_checkpoint = value
    with caplog.at_level("INFO", logger="scott_distill.student.trainer"):
        got = resume_checkpoint(args)
    assert got == (newest if want == "newest" else want)
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Resuming from")]
    assert resumed == ([f"Resuming from {newest}, the newest complete checkpoint in {out} "
                        "(resume_from_checkpoint=false starts over)."] if want == "newest" else [])


def test_resume_checkpoint_without_a_checkpoint_and_with_an_empty_output_dir(tmp_path, monkeypatch, caplog):
    """No complete checkpoint: a fresh start (``None``, nothing logged). ``output_dir=""`` is the working
    directory, as it is for ``os.listdir``'s callers."""
    from scott_distill.student.trainer import resume_checkpoint

    args = CounterfactualTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    with caplog.at_level("INFO", logger="scott_distill.student.trainer"):
        assert resume_checkpoint(args) is None
    assert not [r for r in caplog.records if r.getMessage().startswith("Resuming from")]
    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path, 4)
    args = CounterfactualTrainingArguments(output_dir="", report_to=[])
    assert resume_checkpoint(args) == "./checkpoint-4"


# -- train(): the label-token census, its warnings, the run record, signals, pass-through arguments ----------


def _train_once(tokenizer, tmp_path, name, dataset, **kw):
    args = dict(output_dir=str(tmp_path / name), per_device_train_batch_size=2, max_steps=1, report_to=[],
                save_strategy="no", learning_rate=1e-3, disable_tqdm=True)
    trainer = CounterfactualTrainer(model=make_t5(len(tokenizer), dropout_rate=0.0),
                                    args=CounterfactualTrainingArguments(**{**args, **kw}), train_dataset=dataset,
                                    processing_class=tokenizer)
    trainer.train()
    return trainer


_NO_CF = ("train_dataset holds no counterfactual label tokens: counterfactual_alpha={} only scales the factual "
          "loss by {}.")
_NO_F = "train_dataset holds no factual label tokens: only counterfactual answers are trained."


@pytest.mark.parametrize("data,alpha,share,want", [
    ("factual", 0.0, 0.0, []),
    ("factual", 0.5, 0.0, [_NO_CF.format(0.5, 0.5)]),
    ("factual", 1.0, 0.0, [_NO_CF.format(1.0, 0.0)]),
    ("counterfactual", 1.0, 1.0, []),
    ("counterfactual", 0.5, 1.0, [_NO_F]),
    ("both", 0.5, None, []),
])
def test_train_warns_about_a_part_without_label_tokens_only_when_alpha_weights_it(data, alpha, share, want,
                                                                                  tokenizer, tmp_path, caplog):
    """The census before training warns when a part of the objective has no label tokens but a weight: no
    counterfactual tokens at alpha > 0 (alpha only scales the factual loss), no factual tokens at alpha < 1.
    At the closed ends (alpha 0 with factual rows only, alpha 1 with counterfactual rows only) and with both parts
    present, nothing is missing that the objective weights: no warning. The shares are the hand counts (0 and 1)."""
    rows = {"factual": [flat(r, False) for r in (ROW, ROW2)], "counterfactual": [flat(r, True) for r in (ROW, ROW2)],
            "both": [ROW, ROW2]}[data]
    with caplog.at_level(logging.WARNING, logger="scott_distill"):
        trainer = _train_once(tokenizer, tmp_path, "run", datasets.Dataset.from_list(rows),
                              counterfactual_alpha=alpha)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("train_dataset holds no")] == want
    if share is not None:
        assert trainer.counterfactual_token_share == share


class _OneLabelToken:
    """A custom collator: ours, with the labels cut to each example's first label token."""

    def __init__(self, inner: CounterfactualDataCollator) -> None:
        self.inner = inner

    def __call__(self, rows):
        batch = self.inner(rows)
        labels = batch["labels"]
        at = torch.arange(len(labels)), (labels != -100).int().argmax(dim=1)
        batch["labels"] = torch.full_like(labels, -100).index_put(at, labels[at])
        return batch


def test_token_share_of_a_training_set_with_a_single_label_token(tokenizer, tmp_path):
    """The counterfactual share is the counterfactual label tokens over all label tokens, down to a training set
    with one label token in all (a custom collator's): that token is counterfactual, so the share is 1."""
    model = make_t5(len(tokenizer), dropout_rate=0.0)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no",
                                           disable_tqdm=True)
    collator = _OneLabelToken(CounterfactualDataCollator(tokenizer, model=model))
    trainer = CounterfactualTrainer(model=model, args=args, data_collator=collator, processing_class=tokenizer,
                                    train_dataset=datasets.Dataset.from_list([flat(ROW, True)]))
    assert trainer.count_label_tokens(trainer.train_dataset).tolist() == [0, 1]
    trainer.train()
    assert trainer.counterfactual_token_share == 1.0


def test_truncation_warning_when_only_rationales_are_cut(tokenizer, tmp_path, caplog):
    """``max_target_length`` cuts one rationale and no source: the warning is given, with both counts."""
    rows = [flat(ROW, False), flat({**ROW2, "rationale": ROW2["rationale"] + " It is long and sharp and cuts "
                                      "the wood into many small pieces."}, False), flat(ROW, False)]
    labels = CounterfactualDataCollator(tokenizer, model=make_t5(len(tokenizer)))(rows)["labels"]
    lengths = (labels != -100).sum(dim=1).tolist()  # a factual T5 target: every token (EOS included) is a label
    limit = lengths[1] - 2
    assert lengths[0] == lengths[2] <= limit  # the two short rows fit
    with caplog.at_level(logging.WARNING, logger="scott_distill"):
        _train_once(tokenizer, tmp_path, "cut", datasets.Dataset.from_list(rows), counterfactual_alpha=0.0,
                    max_target_length=limit)
    cuts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Truncation over train_dataset")]
    assert cuts == ["Truncation over train_dataset: 0 of 3 sources lost their end (max_source_length), 1 of 3 "
                    "targets lost the end of their rationale (max_target_length)."]


def _in_the_working_directory(trainer: CounterfactualTrainer) -> CounterfactualTrainer:
    """``output_dir=""`` (the working directory), set after ``Trainer.__init__``, which makes the folder and so
    fails on "" itself."""
    trainer.args.output_dir = ""
    return trainer


def test_resume_true_with_an_empty_output_dir_takes_the_working_directorys_checkpoint(tokenizer, tmp_path,
                                                                                      monkeypatch):
    """``output_dir=""`` is the working directory (the Trainer saves its checkpoints there): a resume with
    ``resume_from_checkpoint=True`` takes the newest complete one there, and trains only the steps after it."""
    monkeypatch.chdir(tmp_path)
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, save_steps=1, report_to=[],
                learning_rate=1e-3, disable_tqdm=True)
    CounterfactualTrainer(model=make_t5(len(tokenizer), dropout_rate=0.0),
                          args=CounterfactualTrainingArguments(max_steps=2, **args), train_dataset=tiny_dataset(4),
                          processing_class=tokenizer).train()
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").is_file()
    steps = _StepCounter()
    _in_the_working_directory(CounterfactualTrainer(
        model=make_t5(len(tokenizer), dropout_rate=0.0), args=CounterfactualTrainingArguments(max_steps=3, **args),
        train_dataset=tiny_dataset(4), processing_class=tokenizer, callbacks=[steps],
    )).train(resume_from_checkpoint=True)
    assert steps.done == [3]


class _Signals(TrainerCallback):
    """Sends ``count`` SIGTERMs to this process at the end of optimizer step ``step``."""

    def __init__(self, step: int, count: int) -> None:
        self.step, self.count = step, count

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            for _ in range(self.count):
                os.kill(os.getpid(), signal.SIGTERM)


def test_signals_during_train_log_the_safe_point_and_name_the_checkpoint_and_how_to_resume(tokenizer, tmp_path,
                                                                                              monkeypatch, caplog):
    """In a run with ``output_dir=""`` (the working directory): a first SIGTERM is logged with where ``train``
    stops (after the optimizer step in progress, with a checkpoint), and the `RunInterrupted` names the checkpoint
    it saved there; a second SIGTERM stops at once, and its message says where to resume from."""
    from scott_distill import RunInterrupted

    monkeypatch.chdir(tmp_path)
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=3, report_to=[],
                save_strategy="no", learning_rate=1e-3, disable_tqdm=True)
    first = ("train: SIGTERM received; stopping after the optimizer step in progress, with a checkpoint (send it "
             "again to stop at once).")
    for count in (1, 2):
        caplog.clear()
        trainer = _in_the_working_directory(CounterfactualTrainer(
            model=make_t5(len(tokenizer), dropout_rate=0.0), args=CounterfactualTrainingArguments(**args),
            train_dataset=tiny_dataset(6),
            processing_class=tokenizer, callbacks=[_Signals(1, count)]))
        with caplog.at_level(logging.WARNING, logger="scott_distill.interrupts"), \
                pytest.raises(RunInterrupted) as stopped:
            trainer.train()
        assert [r.getMessage() for r in caplog.records if r.name == "scott_distill.interrupts"] == [first]
        if count == 1:
            assert os.path.abspath(stopped.value.checkpoint) == str(tmp_path / "checkpoint-1")
            assert str(stopped.value) == (
                "train: stopped by SIGTERM after optimizer step 1 of 3; checkpoint saved to ./checkpoint-1. Resume "
                "from it with `resume_from_checkpoint='./checkpoint-1'` (or `True`: the newest complete checkpoint); "
                "the `scott-distill train` and `scott-distill run` commands resume from it by themselves.")
            assert (tmp_path / "checkpoint-1" / "trainer_state.json").is_file()
        else:
            assert str(stopped.value) == (
                "train: stopped at once by a second SIGTERM; the batch in progress is discarded. Resume from the "
                "newest complete checkpoint in .: `resume_from_checkpoint=True`, or run the same `scott-distill "
                "train` / `scott-distill run` command again.")


def test_a_resume_with_other_settings_is_refused_in_process(tokenizer, tmp_path):
    """``train(resume_from_checkpoint=...)`` checks the checkpoint against the run recorded when ``output_dir``'s
    run started: another learning rate is another run, refused with the checkpoint and the difference named."""
    out = tmp_path / "out"
    args = dict(output_dir=str(out), per_device_train_batch_size=2, max_steps=1, save_steps=1, report_to=[],
                disable_tqdm=True)
    CounterfactualTrainer(model=make_t5(len(tokenizer), dropout_rate=0.0),
                          args=CounterfactualTrainingArguments(learning_rate=1e-3, **args),
                          train_dataset=tiny_dataset(2), processing_class=tokenizer).train()
    other = CounterfactualTrainer(model=make_t5(len(tokenizer), dropout_rate=0.0),
                                  args=CounterfactualTrainingArguments(learning_rate=5e-3, **args),
                                  train_dataset=tiny_dataset(2), processing_class=tokenizer)
    checkpoint = str(out / "checkpoint-1")
    for resume in (True, checkpoint):
        with pytest.raises(ValueError) as refused:
            other.train(resume_from_checkpoint=resume)
        assert str(refused.value) == (
            f"Not resuming {checkpoint}: the checkpoints in output_dir={str(out)!r} belong to another run "
            "(learning_rate: 0.001 -> 0.005). Train into a new output_dir, or delete its checkpoints and "
            "train_run.json to start over there.")


def test_model_init_with_an_encoder_decoder_student_trains_as_a_given_model(tokenizer, tmp_path):
    """Regression: with ``model_init`` (no ``model``) the default collator was built without the student, so it
    made decoder-only batches (prompt and target in one sequence) for a T5 student, whose training then failed
    ("You must specify exactly one of input_ids or inputs_embeds"). It now trains to the weights of the same run
    with the student passed as ``model``."""
    args = dict(per_device_train_batch_size=2, max_steps=2, report_to=[], save_strategy="no", optim="sgd",
                train_sampling_strategy="sequential",
                learning_rate=0.5, lr_scheduler_type="constant", disable_tqdm=True)
    given = make_t5(len(tokenizer), dropout_rate=0.0)
    CounterfactualTrainer(model=given, args=CounterfactualTrainingArguments(output_dir=str(tmp_path / "a"), **args),
                          train_dataset=tiny_dataset(4), processing_class=tokenizer).train()
    trainer = CounterfactualTrainer(model_init=lambda: make_t5(len(tokenizer), dropout_rate=0.0),
                                    args=CounterfactualTrainingArguments(output_dir=str(tmp_path / "b"), **args),
                                    train_dataset=tiny_dataset(4), processing_class=tokenizer)
    assert "decoder_input_ids" in trainer.data_collator([ROW])
    trainer.train()
    for (name, a), b in zip(given.named_parameters(), trainer.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_each_model_from_model_init_gets_its_own_encoder_decoder_collator(tokenizer, tmp_path):
    """``train`` makes a new student with ``model_init`` (once per run, once per hyperparameter-search trial): our
    collator of an encoder-decoder student must take its decoder inputs from that model, not from the first one
    made in ``__init__`` (which it also kept alive). Here the second model starts its decoder at another id."""
    made = []

    def model_init():
        model = make_t5(len(tokenizer), dropout_rate=0.0)
        model.config.decoder_start_token_id = model.generation_config.decoder_start_token_id = [0, 3][min(len(made), 1)]
        made.append(model)
        return model

    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
                                           report_to=[], save_strategy="no", disable_tqdm=True)
    trainer = CounterfactualTrainer(model_init=model_init, args=args, train_dataset=tiny_dataset(2),
                                    processing_class=tokenizer)
    assert trainer.data_collator([ROW])["decoder_input_ids"][0, 0] == 0
    trainer.train()
    assert len(made) == 2 and trainer.model is made[1] and trainer.data_collator.model is made[1]
    assert trainer.data_collator([ROW])["decoder_input_ids"][0, 0] == 3


def test_train_passes_the_trial_to_the_trainer(tokenizer, tmp_path, monkeypatch):
    """``train(trial=...)`` as ``Trainer.train`` documents it: ``model_init`` gets the trial, and the state records
    its parameters (``hp_params`` stands in for an installed optuna / ray, which read them)."""
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "hp_params", lambda trial: dict(trial))
    got_trials = []

    def model_init(trial):
        got_trials.append(trial)
        return make_gpt2(len(tokenizer))

    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
                                           report_to=[], save_strategy="no", disable_tqdm=True)
    trainer = CounterfactualTrainer(model_init=model_init, args=args, train_dataset=tiny_dataset(2),
                                    processing_class=tokenizer)
    trial = {"learning_rate": 1e-3}
    trainer.train(trial=trial)
    assert got_trials == [None, trial] and trainer.state.trial_params == trial


def test_train_passes_the_eval_ignore_keys_to_the_evaluations_during_training(tokenizer, tmp_path):
    """``train(ignore_keys_for_eval=...)``: the evaluations during training drop those model outputs from the
    predictions, as ``Trainer.train`` documents (T5's logits alone are left: 2 rows x 2 examples, vocabulary)."""
    predictions = []

    def compute_metrics(prediction):
        predictions.append(prediction.predictions)
        return {}

    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
                                           report_to=[], save_strategy="no", eval_strategy="steps", eval_steps=1,
                                           disable_tqdm=True)
    trainer = CounterfactualTrainer(model=make_t5(len(tokenizer)), args=args, train_dataset=tiny_dataset(2),
                                    eval_dataset=tiny_dataset(2), processing_class=tokenizer,
                                    compute_metrics=compute_metrics)
    trainer.train(ignore_keys_for_eval=["encoder_last_hidden_state", "cache"])
    assert len(predictions) == 1 and isinstance(predictions[0], np.ndarray)
    assert predictions[0].shape[0] == 4 and predictions[0].shape[2] == len(tokenizer)


def test_train_refuses_a_keyword_that_trainer_train_does_not_take(tokenizer, tmp_path):
    """An unknown keyword (here ``Trainer.evaluate``'s ``ignore_keys``) is refused as ``Trainer.train`` refuses
    it, not silently dropped."""
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no",
                                           disable_tqdm=True)
    trainer = CounterfactualTrainer(model=make_t5(len(tokenizer)), args=args, train_dataset=tiny_dataset(2),
                                    processing_class=tokenizer)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'ignore_keys'"):
        trainer.train(ignore_keys=["encoder_last_hidden_state"])


def test_trainer_hands_its_tokenizer_and_logits_preprocessing_to_the_trainer(tokenizer, tmp_path):
    """As for ``Seq2SeqTrainer``: ``processing_class`` is saved with the student, and ``preprocess_logits_for_metrics``
    turns the logits before ``compute_metrics`` sees them (here into token ids: 2 rows x 2 examples, no vocabulary
    axis)."""
    from transformers import AutoTokenizer

    seen = []

    def compute_metrics(prediction):
        seen.append(prediction.predictions)
        return {}

    def token_ids(logits, labels):
        return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)

    model = make_t5(len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[])
    # a collator without a `tokenizer` attribute: Trainer cannot fall back to saving the collator's tokenizer
    collator = _OneLabelToken(CounterfactualDataCollator(tokenizer, model=model))
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer, data_collator=collator,
                                    compute_metrics=compute_metrics, preprocess_logits_for_metrics=token_ids)
    trainer.evaluate(tiny_dataset(2))
    assert len(seen) == 1 and isinstance(seen[0], np.ndarray) and seen[0].ndim == 2 and seen[0].shape[0] == 4
    trainer.save_model(str(tmp_path / "saved"))
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").get_vocab() == tokenizer.get_vocab()


def test_trainer_trains_with_the_optimizer_and_scheduler_it_is_given(tokenizer, tmp_path):
    """``optimizers=(optimizer, scheduler)`` as for ``Trainer``: those two make the steps (not the AdamW and linear
    schedule the Trainer makes from ``args`` when none are given)."""
    model = make_t5(len(tokenizer), dropout_rate=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1,
                                           report_to=[], save_strategy="no", max_grad_norm=0.0, disable_tqdm=True)
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=tiny_dataset(2), processing_class=tokenizer,
                                    optimizers=(optimizer, scheduler))
    trainer.train()
    assert trainer.lr_scheduler is scheduler and getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer


def test_trainer_set_up_errors_name_the_argument_and_what_to_do(tokenizer, tmp_path):
    """Every refusal of ``CounterfactualTrainer(...)``, word for word."""
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    t5 = make_t5(len(tokenizer))
    cases = [
        (dict(model=t5, args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to=[]),
              processing_class=tokenizer),
         "`args` must be a CounterfactualTrainingArguments, got Seq2SeqTrainingArguments."),
        (dict(model=t5, args=args, processing_class=tokenizer, compute_loss_func=lambda *a, **k: 0),
         "`compute_loss_func` is not supported: CounterfactualTrainer's loss is SCOTT's objective "
         "(counterfactual_alpha, label_smoothing_factor). Subclass it and override `compute_loss` for another "
         "objective."),
        (dict(model=t5, args=args), "Pass `processing_class=tokenizer` (or a `data_collator`)."),
        (dict(model=make_gpt2(len(tokenizer)), processing_class=tokenizer, args=CounterfactualTrainingArguments(
            output_dir=str(tmp_path), predict_with_generate=True, report_to=[])),
         "`predict_with_generate=True` is not supported for decoder-only students: their batches hold the target "
         "after the prompt, so `generate` would continue the answer. Evaluate them with "
         "`scott_distill.student.evaluation.evaluate_student` (or `predict`), which generates from the prompt."),
        (dict(model=t5, args=CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[],
                                                             answer_prefix="Thus"),
              data_collator=CounterfactualDataCollator(tokenizer, model=t5, format=StudentFormat(
                  answer_prefix="Hence"))),
         f"The data_collator's format {StudentFormat(answer_prefix='Hence')} differs from the one in `args` "
         f"{StudentFormat(answer_prefix='Thus')}; set the tags and answer prefix in one place."),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as refused:
            CounterfactualTrainer(**kwargs)
        assert str(refused.value) == message


def test_trainer_tags_the_student_for_its_model_card(tokenizer, tmp_path):
    """The student gets the trainer's tags (shown on the model card of a push, as TRL's trainers do); a model
    without ``add_model_tags`` (a plain ``torch.nn.Module``) is trained untagged."""
    model = make_t5(len(tokenizer))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    assert model.model_tags == ["scott-distill", "counterfactual-training"]

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

    trainer = CounterfactualTrainer(model=Plain(), args=args, data_collator=lambda rows: rows)
    # no config: not an encoder-decoder model, so its batches would be read as decoder-only ones
    assert trainer._is_causal(trainer.model) is True

def test_lora_student_trains(tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model = make_gpt2(len(tokenizer))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True,
                                                      task_type="CAUSAL_LM"))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2,
                                           report_to=[], learning_rate=1e-2, save_strategy="no")
    trainer = CounterfactualTrainer(model=lora, args=args, train_dataset=tiny_dataset(4), processing_class=tokenizer)
    before = {n: p.clone() for n, p in lora.named_parameters() if p.requires_grad}
    trainer.train()
    changed = [n for n, p in lora.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and all("lora" in n for n in changed)


def test_args_validation(tmp_path):
    with pytest.raises(ValueError, match="counterfactual_alpha"):
        CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=1.5)


def test_args_accept_the_closed_alpha_range_and_the_open_share_range(tmp_path):
    """alpha in [0, 1] (0 = plain fine-tuning, 1 = counterfactual rows only, both documented); the token share in
    (0, 1) or None (a share of 0 or 1 leaves one part without tokens: no share to give it). Exact messages."""
    for alpha in (0, 0.0, 0.5, 1, 1.0):
        assert CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=alpha,
                                               report_to=[]).counterfactual_alpha == alpha
    for alpha in (-0.01, 1.01, 2, float("nan")):
        with pytest.raises(ValueError) as err:
            CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=alpha, report_to=[])
        assert str(err.value) == f"`counterfactual_alpha` must be in [0, 1], got {alpha!r}."
    for share in (None, 0.001, 0.25, 0.999):
        assert CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_token_share=share,
                                               report_to=[]).counterfactual_token_share == share
    for share in (0, 0.0, 1, 1.0, 1.5, -0.25):
        with pytest.raises(ValueError) as err:
            CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_token_share=share, report_to=[])
        assert str(err.value) == f"`counterfactual_token_share` must be in (0, 1) or None, got {share!r}."


def test_nan_alpha_and_a_custom_loss_function_are_refused(tokenizer, tmp_path):
    """A NaN alpha fails the range check; a `compute_loss_func` (accepted by Trainer) would be silently ignored
    by the counterfactual objective's compute_loss, so it is refused."""
    with pytest.raises(ValueError, match="counterfactual_alpha"):
        CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=float("nan"))
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[])
    with pytest.raises(ValueError, match="compute_loss_func"):
        CounterfactualTrainer(model=make_t5(len(tokenizer)), args=args, processing_class=tokenizer,
                              compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.loss)


def test_bf16_training_on_cpu(tokenizer, tmp_path, monkeypatch):
    """bf16 autocast (CPU here; the same flag on GPU): the forward really runs in bfloat16, the loss parts are
    computed in float32 and stay finite."""
    import scott_distill.student.trainer as trainer_module

    model = make_t5(len(tokenizer))
    seen = {"logits": set(), "ce": set()}
    model.lm_head.register_forward_hook(lambda mod, inp, out: seen["logits"].add(out.dtype))
    real = trainer_module.token_cross_entropy

    def spy(*a, **kw):
        ce, valid = real(*a, **kw)
        seen["ce"].add(ce.dtype)
        return ce, valid

    monkeypatch.setattr(trainer_module, "token_cross_entropy", spy)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2,
                                           logging_steps=1, report_to=[], bf16=True, use_cpu=True,
                                           save_strategy="no", learning_rate=1e-3)
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=tiny_dataset(4), processing_class=tokenizer)
    trainer.train()
    assert seen["logits"] == {torch.bfloat16}, seen
    assert seen["ce"] == {torch.float32}, seen
    assert next(model.parameters()).dtype == torch.float32  # autocast: master weights stay float32
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all(torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    assert all("loss_counterfactual" in h for h in logged)


def test_collator_setup_errors_name_the_argument_and_what_to_do(tokenizer):
    """The exact messages (found by mutation testing: the old test matched one word of two of them)."""
    import copy

    with pytest.raises(ValueError) as err:
        CounterfactualDataCollator(object())
    assert str(err.value) == "`tokenizer` must be a fast tokenizer (offset mappings locate the answer tokens)."
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    with pytest.raises(ValueError) as err:
        CounterfactualDataCollator(no_pad)
    assert str(err.value) == "`tokenizer` has no pad token; set `tokenizer.pad_token` (e.g. to the eos token)."
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    with pytest.raises(ValueError) as err:
        CounterfactualDataCollator(no_eos)
    assert str(err.value) == "`tokenizer` has no eos token; the student must learn where its output ends."
    with pytest.raises(ValueError) as err:
        CounterfactualDataCollator(tokenizer, format={"answer_prefix": "So"})
    assert str(err.value) == "`format` must be a StudentFormat, got dict."
    col = CounterfactualDataCollator(tokenizer)
    for missing in ("question", "choices", "answer"):
        row = {k: v for k, v in ROW.items() if k != missing}
        with pytest.raises(ValueError) as err:
            col([row])
        assert str(err.value) == f"Row lacks columns [{missing!r}]; has {sorted(row)}."
    with pytest.raises(ValueError) as err:
        col([{"question": "q", "choices": ["a"], "answer": "a"}])
    assert str(err.value) == "Row lacks `rationale` (set without_rationale=True for the answer-only baseline)."
    # the answer-only baseline needs no rationale column
    base = CounterfactualDataCollator(tokenizer, format=StudentFormat(without_rationale=True))
    assert kept(tokenizer, base([{"question": "q", "choices": ["a", "b"], "answer": "b"}])["labels"][0]) == "b</s>"


def test_rows_without_id_are_named_by_the_first_60_characters_of_their_question(tokenizer):
    """Errors name a row by its id, else by repr(question[:60]) (a hand-cut string here)."""
    question = "Which of these would you use to keep a bottle of milk cold all week long?"
    assert len(question) > 61
    with pytest.raises(ValueError) as err:
        CounterfactualDataCollator(tokenizer)([{**ROW, "question": question, "is_counterfactual": "yes"}])
    assert str(err.value).startswith(
        "`is_counterfactual` of the row of question 'Which of these would you use to keep a bottle of milk cold a' is")
    row = {**ROW, "question": question, "choices": ["shelf", "oven", "fridge"]}
    full = len(tokenizer(StudentFormat().source(question, row["choices"]) + "\n")["input_ids"])
    with pytest.raises(ValueError) as err:
        CounterfactualDataCollator(tokenizer, max_source_length=full - 3)([row])
    assert str(err.value).startswith("Row 'Which of these would you use to keep a bottle of milk cold a': the source")


def test_padding_is_right_with_minus_100_labels_and_pad_to_multiple_of(tokenizer):
    """Rows of different lengths: input_ids padded with the pad id, attention mask exactly 0/1, labels padded with
    -100 (decoder-only: the collator's own padding, not masked afterwards), widths a multiple of 8."""
    rows = [ROW, {**ROW2, "counterfactual_answer": None}]
    for model in (None, make_t5(len(tokenizer))):
        col = CounterfactualDataCollator(tokenizer, model=model, pad_to_multiple_of=8)
        feats = [f for r in rows for f in col.features(r)]
        batch = col(rows)
        assert batch["row_index"].tolist() == [0, 0, 1] and batch["is_counterfactual"].tolist() == [False, True, False]
        assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape[1] % 8 == 0
        assert set(batch["attention_mask"].unique().tolist()) == {0, 1}
        for i, f in enumerate(feats):
            n = len(f["input_ids"])
            assert batch["input_ids"][i].tolist() == f["input_ids"] + [tokenizer.pad_token_id] * (
                batch["input_ids"].shape[1] - n)
            assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
            width = batch["labels"].shape[1]
            assert batch["labels"][i].tolist()[len(f["labels"]):] == [-100] * (width - len(f["labels"]))


def test_row_slice_of_another_collators_batch_and_of_values_not_one_per_example(tokenizer):
    """``row_slice`` (the out-of-memory back-off's pieces) on a batch without ``row_index`` (another collator's: one
    example per row) cuts each per-example tensor to the rows asked for and passes on, untouched, what is not one
    per example (a flag, a 0-d tensor, a tensor of another length). A ``decoder_attention_mask`` is cut to the
    piece's target width with the labels."""
    from scott_distill.student.trainer import row_slice

    col = CounterfactualDataCollator(tokenizer, model=make_t5(len(tokenizer)))
    batch = col([ROW, ROW2])  # 4 examples
    per_example = {k: v for k, v in batch.items() if k != "row_index"}
    extra = {"return_dict": True, "scale": torch.tensor(2.0), "per_batch": torch.arange(3)}
    piece = row_slice({**per_example, **extra}, 1, 3, causal=False, trim=False)
    assert piece.keys() == {**per_example, **extra}.keys()
    for k, v in per_example.items():
        assert torch.equal(piece[k], v[1:3]), k
    assert all(piece[k] is v for k, v in extra.items())

    def with_decoder_mask(b):
        return {**b, "decoder_attention_mask": (b["labels"] != -100).long()}

    rows = [ROW, {**ROW2, "rationale": ROW2["rationale"] + " It is made of steel and it is very sharp."}]
    piece = row_slice(with_decoder_mask(col(rows)), 0, 1, causal=False)
    alone = with_decoder_mask(col(rows[:1]))
    assert piece["labels"].shape[1] < col(rows)["labels"].shape[1]  # the long target is cut off
    for k in alone:
        assert torch.equal(piece[k], alone[k]), k


def test_rows_of_counts_dataset_rows_not_examples(tokenizer):
    """The back-off splits a batch by dataset row (a rationale row gives two examples): hand-counted rows of a
    rationale batch, a mixed one, another collator's batch (no ``row_index``: one example per row) and an empty
    ``row_index`` (0 rows, not an error)."""
    from scott_distill.student.trainer import _rows_of

    col = CounterfactualDataCollator(tokenizer)
    factual_only = {k: v for k, v in ROW2.items() if not k.startswith("counterfactual")}
    assert _rows_of(col([ROW, ROW2])) == 2 and len(col([ROW, ROW2])["input_ids"]) == 4
    assert _rows_of(col([ROW, factual_only, ROW])) == 3
    assert _rows_of({"input_ids": torch.ones(5, 3, dtype=torch.long)}) == 5
    assert _rows_of({"input_ids": torch.ones(0, 3, dtype=torch.long), "row_index": torch.tensor([], dtype=torch.long)}) == 0


@pytest.mark.parametrize("counterfactual", [True, False])
def test_loss_of_a_batch_with_one_label_token(tokenizer, tmp_path, counterfactual):
    """Batch size 1 with a single label token (a one-token answer, the rest teacher-forced), in a trainer that
    counted no training data: the batch's own shares are 1 and 0, so the loss is alpha (or 1 - alpha) times that
    token's cross-entropy, computed here by hand; the same with the model in training mode (a direct call, outside
    a training step: no window count, so the batch's own)."""
    model = make_gpt2(len(tokenizer), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), counterfactual_alpha=0.3, report_to=[])
    trainer = CounterfactualTrainer(model=model, args=args, processing_class=tokenizer)
    ids = torch.tensor([[5, 9, 11]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([[-100, -100, 11]]),
             "is_counterfactual": torch.tensor([counterfactual])}
    with torch.no_grad():
        ce = -torch.log_softmax(model(input_ids=ids).logits[0, 1].float(), -1)[11]
    for training in (False, True):
        loss = trainer.compute_loss(model.train(training), batch)
        assert float(loss) == pytest.approx((0.3 if counterfactual else 0.7) * float(ce), rel=1e-5), training


def test_default_collator_takes_the_length_limits_from_args(tokenizer, tmp_path):
    """The collator the trainer builds, with a model given or made by ``model_init`` (rebuilt with that model for
    an encoder-decoder student, which its batches need; left without it for a decoder-only one, so that the first
    model made is not kept alive), truncates where ``args`` says."""
    args = CounterfactualTrainingArguments(output_dir=str(tmp_path), report_to=[], max_source_length=7,
                                           max_target_length=9)
    for make, causal in ((make_t5, False), (make_gpt2, True)):
        for given in (True, False):
            def model_init(make=make):  # noqa: ANN202 - one default argument: Trainer passes no trial to it
                return make(len(tokenizer))

            kwargs = {"model": make(len(tokenizer))} if given else {"model_init": lambda: model_init()}
            trainer = CounterfactualTrainer(args=args, processing_class=tokenizer, **kwargs)
            collator = trainer.data_collator
            assert (collator.max_source_length, collator.max_target_length) == (7, 9)
            assert collator.model is (None if causal and not given else trainer.model)
