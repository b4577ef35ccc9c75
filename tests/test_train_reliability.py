"""Faults a long training run meets: out of memory (in process), SIGTERM / SIGINT and kill -9 at random moments
(subprocesses running ``scott-distill train`` through tests/train_fault_client.py, which holds every fault hook).

``SCOTT_RELIABILITY_TRIALS=N`` runs N random kills instead of the default 2 (docs/reliability.md uses 20);
``SCOTT_RELIABILITY_REPORT=file.jsonl`` appends the figures of every trial there.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from conftest import make_gpt2, make_t5
from safetensors.torch import load_file
from transformers import Seq2SeqTrainer

from scott_distill import CounterfactualTrainer, CounterfactualTrainingArguments

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


@pytest.mark.parametrize("multiple", [None, 8])
@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_row_slice_equals_collating_those_rows_alone(kind, multiple, tokenizer, tmp_path):
    """With ``pad_to_multiple_of``, each piece is padded to the multiple its own rows need (not the batch's
    width, nor its unpadded width)."""
    from scott_distill import CounterfactualDataCollator
    from scott_distill.student.trainer import row_slice

    model = make_student(kind, tokenizer)
    collator = CounterfactualDataCollator(tokenizer, model=model if kind == "t5" else None,
                                          pad_to_multiple_of=multiple)
    data = rows(5).to_list()
    batch = collator(data)
    widths = set()
    for start, stop in ((0, 1), (1, 3), (3, 5), (0, 5)):
        piece = row_slice(batch, start, stop, causal=kind == "gpt2", pad_to_multiple_of=multiple)
        alone = collator(data[start:stop])
        assert piece.keys() == alone.keys()
        for k in alone:
            assert torch.equal(piece[k], alone[k]), (k, start, stop)
        widths |= {alone["input_ids"].shape[1], alone["labels"].shape[1]}
    # the pieces have widths of their own (else the comparison would hold for the batch's width too)
    assert len(widths) > 1 and (multiple is None or all(w % multiple == 0 for w in widths))


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


def test_transformers_auto_find_batch_size_trains_steps_again_and_shrinks_the_effective_batch(tokenizer, tmp_path):
    """Why the trainer has its own backoff: transformers' ``auto_find_batch_size`` (with this trainer's backoff
    switched off) restarts the training loop from step 0 with a batch 0.9 times smaller (4 -> 3 -> 2 -> 1 rows)
    and the same accumulation. Step 1, done at 4 rows before the error, stays in the weights and 3 more steps
    follow: 7 rows trained instead of 12, at an effective batch of 1 instead of 4. If transformers changes this,
    this test fails and the choice should be looked at again."""

    class LibraryBackoffOnly(CounterfactualTrainer):
        training_step = Seq2SeqTrainer.training_step

    model = make_student("t5", tokenizer)
    card = SmallCard(model, max_examples=2, from_call=1)  # step 1 (4 rows = 8 examples) fits, then 1 row
    trainer = LibraryBackoffOnly(model=model, args=train_args(tmp_path, "auto", 4, 1, auto_find_batch_size=True),
                                 train_dataset=rows(12), processing_class=tokenizer)
    trainer.train()
    assert card.sizes == [8, 2, 2, 2] and trainer.state.global_step == 3 and trainer._train_batch_size == 1


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


class Shapes:
    """A forward pre-hook that records the shape of every tensor input of every forward (failed ones too)."""

    def __init__(self, model):
        self.calls: list[dict[str, tuple[int, ...]]] = []
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append({k: tuple(v.shape) for k, v in kwargs.items() if isinstance(v, torch.Tensor)})


def test_out_of_memory_backs_off_to_two_rows_per_forward_and_logs_the_smaller_batchs_loss(tokenizer, tmp_path):
    """A card that fits 2 rows (4 examples): 4-row micro-batches are done 2 rows at a time, each row once. The
    weights and the logged losses equal a run at batch 2 x 2 accumulation steps (the first test backs off down to
    1 row, where pieces one row apart and pieces ``rows_per_forward`` apart are the same)."""
    data = rows(8)
    model = make_student("t5", tokenizer)
    card = SmallCard(model, max_examples=4)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "oom", 4, 1, max_steps=2), train_dataset=data,
                                    processing_class=tokenizer)
    trainer.train()
    assert trainer.rows_per_forward == 2 and card.sizes == [4] * 4
    reference = make_student("t5", tokenizer)
    ref = CounterfactualTrainer(model=reference, args=train_args(tmp_path, "ref", 2, 2, max_steps=2), train_dataset=data,
                                processing_class=tokenizer)
    ref.train()
    assert max_abs_difference(weights(model), weights(reference)) == 0.0
    got = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    want = [h["loss"] for h in ref.state.log_history if "loss" in h]
    assert len(got) == 2 and got == pytest.approx(want, rel=1e-6) and all(x > 0 for x in got)


def test_out_of_memory_backoff_pads_each_piece_as_the_collator_pads_its_rows_alone(tokenizer, tmp_path):
    """With ``pad_to_multiple_of=8`` (tensor-core friendly widths), the one-row pieces have the shapes the collator
    gives each row alone: multiples of 8 and no wider, source and target (T5) alike; the weights equal batch 1 x 4."""
    from scott_distill import CounterfactualDataCollator

    data = rows(8)
    model = make_student("t5", tokenizer)
    shapes = Shapes(model)  # before the card: it sees the forwards the card fails too
    SmallCard(model, max_examples=2)
    collator = CounterfactualDataCollator(tokenizer, model=model, pad_to_multiple_of=8)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "oom", 4, 1, max_steps=2), train_dataset=data,
                                    data_collator=collator, processing_class=tokenizer)
    trainer.train()
    assert trainer.rows_per_forward == 1
    reference = make_student("t5", tokenizer)
    want = Shapes(reference)
    CounterfactualTrainer(model=reference, args=train_args(tmp_path, "ref", 1, 4, max_steps=2), train_dataset=data,
                          data_collator=CounterfactualDataCollator(tokenizer, model=reference, pad_to_multiple_of=8),
                          processing_class=tokenizer).train()
    pieces = shapes.calls[2:]  # after the failed 4-row and 2-row forwards
    assert len(pieces) == 8 and pieces == want.calls
    assert all(s[k][1] % 8 == 0 for s in pieces for k in ("input_ids", "decoder_input_ids"))
    assert len({(s["input_ids"][1], s["decoder_input_ids"][1]) for s in pieces}) > 1  # not all one width
    assert max_abs_difference(weights(model), weights(reference)) == 0.0


def test_out_of_memory_backoff_keeps_a_custom_collators_padding(tokenizer, tmp_path):
    """A collator that is not `CounterfactualDataCollator` (here a plain function) has no rule for a piece's
    padding: the pieces keep their batch's width (``row_slice(trim=False)``) and each row is trained once."""
    from scott_distill import CounterfactualDataCollator

    data = rows(8)
    model = make_student("t5", tokenizer)
    inner = CounterfactualDataCollator(tokenizer, model=model)
    batches = []

    def collate(features):
        batches.append(inner(features))
        return batches[-1]

    shapes = Shapes(model)  # before the card: it sees the forwards the card fails too
    card = SmallCard(model, max_examples=2)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "oom", 4, 1, max_steps=2), train_dataset=data,
                                    data_collator=collate, processing_class=tokenizer)
    trainer.train()
    assert trainer.rows_per_forward == 1 and card.sizes == [2] * 8
    steps = batches[-2:]  # the training batches (the token count collates train_dataset first)
    pieces = shapes.calls[2:]
    assert len(pieces) == 8
    for step, batch in enumerate(steps):
        for s in pieces[4 * step: 4 * step + 4]:
            assert s["input_ids"] == (2, batch["input_ids"].shape[1])
            assert s["decoder_input_ids"] == (2, batch["labels"].shape[1])
    # the rows of a batch differ in length: trimming would have given other widths
    assert any(inner(data.select([i]).to_list())["input_ids"].shape[1] < steps[0]["input_ids"].shape[1]
               for i in range(8))


def test_training_step_outside_the_training_loop(tokenizer, tmp_path):
    """``training_step`` called directly (no ``train``, so no accumulation window): one forward and backward
    with the batch's own token mean, as ``Trainer.training_step`` does. Out of memory there is raised, not retried:
    there is no window to redo. Inside a window, a step without its window's token count (``num_items_in_batch``
    None) is raised too: pieces normalised by their own tokens would not add up to the batch's loss."""
    from scott_distill import CounterfactualDataCollator

    model = make_student("t5", tokenizer)
    args = train_args(tmp_path, "direct", 4, 1, counterfactual_token_share=0.5)  # alpha 0.5: every token weight 1
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=rows(4), processing_class=tokenizer)
    batch = CounterfactualDataCollator(tokenizer, model=model)(rows(4).to_list())
    model.train()
    loss = trainer.training_step(model, batch)
    plain = {k: v for k, v in batch.items() if k not in ("is_counterfactual", "row_index")}
    with torch.no_grad():
        want = model(**plain).loss  # T5's own mean cross-entropy over the label tokens
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    SmallCard(model, max_examples=2)
    n = (batch["labels"] != -100).sum()
    with pytest.raises(torch.OutOfMemoryError):
        trainer.training_step(model, batch, n)
    assert trainer.rows_per_forward is None
    samples, counted = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))  # the loop's window
    assert samples[0] is batch and int(counted) == int(n)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.training_step(model, batch, None)
    assert trainer.rows_per_forward is None


def test_out_of_memory_under_several_processes_is_raised(tokenizer, tmp_path, monkeypatch):
    """Under DDP a process that redid its step alone would run backwards the others do not match (their gradient
    all-reduces would wait for it or pair with the wrong step): with ``world_size`` 2 an out-of-memory error in a
    window is raised, not retried. One process stands for one of two (``world_size`` patched; a real two-process
    out of memory cannot be made on one CPU)."""
    from scott_distill import CounterfactualDataCollator

    model = make_student("t5", tokenizer)
    args = train_args(tmp_path, "ddp", 4, 1, counterfactual_token_share=0.5)
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=rows(4), processing_class=tokenizer)
    batch = CounterfactualDataCollator(tokenizer, model=model)(rows(4).to_list())
    model.train()
    SmallCard(model, max_examples=2)
    monkeypatch.setattr(CounterfactualTrainingArguments, "world_size", property(lambda self: 2))
    _, counted = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    with pytest.raises(torch.OutOfMemoryError):
        trainer.training_step(model, batch, counted)
    assert trainer.rows_per_forward is None


def test_signal_after_the_last_step_still_leaves_the_checkpoint_it_names(tokenizer, tmp_path):
    """SIGTERM once the training loop is over (here in ``on_train_end``), with ``save_strategy="no"``: no step end
    is left to save at, so the checkpoint named by `RunInterrupted` is saved before it is raised."""
    from transformers import TrainerCallback

    from scott_distill import RunInterrupted

    class LateSignal(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)

    model = make_student("t5", tokenizer)
    trainer = CounterfactualTrainer(model=model, args=train_args(tmp_path, "late", 2, 1), train_dataset=rows(4),
                                    processing_class=tokenizer, callbacks=[LateSignal()])
    with pytest.raises(RunInterrupted, match="stopped by SIGTERM after optimizer step 3 of 3") as stopped:
        trainer.train()
    assert stopped.value.exit_code == 143 and stopped.value.checkpoint == str(tmp_path / "late" / "checkpoint-3")
    assert readable_json(Path(stopped.value.checkpoint) / "trainer_state.json")
    saved = load_file(Path(stopped.value.checkpoint) / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved)


# -- subprocesses: kill -9, SIGTERM / SIGINT --------------------------------------------------------------------------

TESTS_DIR = Path(__file__).parent
CLIENT = TESTS_DIR / "train_fault_client.py"
MAX_STEPS = 12  # 12 rows at batch 2: two epochs, a checkpoint after every step
# each step sleeps this long (a bigger student), so that random kill times spread over the steps: the tiny
# student's 12 steps take about 0.3 s, less than its final save and exit
STEP_SLEEP = "0.1"


@pytest.fixture(scope="module")
def train_inputs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """A tiny T5 student (dropout on: the resumed run must restore the random state too) and 12 rationale rows."""
    folder = tmp_path_factory.mktemp("train-inputs")
    make_t5(len(tokenizer)).save_pretrained(folder / "student")
    tokenizer.save_pretrained(folder / "student")
    rows(12).to_json(str(folder / "train.jsonl"))
    return {"student": folder / "student", "data": folder / "train.jsonl"}


def train_argv(train_inputs: dict[str, Path], output: Path) -> list[str]:
    return ["--model_name_or_path", str(train_inputs["student"]), "--train_file", str(train_inputs["data"]),
            "--output_dir", str(output), "--per_device_train_batch_size", "2", "--max_steps", str(MAX_STEPS),
            "--save_steps", "1", "--logging_steps", "1", "--learning_rate", "1e-2", "--seed", "0",
            "--report_to", "none", "--disable_tqdm", "true", "--dataloader_pin_memory", "false"]


def client_env(**faults: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **faults}


def start_client(argv: list[str], **faults: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CLIENT), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=client_env(**faults))


def wait_for_line(proc: subprocess.Popen, wanted: str, timeout: float = 300) -> float:
    """Read the client's stdout until the line ``wanted``; returns when it came (``time.monotonic``)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return time.monotonic()
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"the client never printed {wanted!r} (exit {proc.wait()}): {proc.stderr.read()[-3000:]}")


def run_to_end(argv: list[str], **faults: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(CLIENT), *argv], capture_output=True, text=True,
                          env=client_env(**faults), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.monotonic() - start


def student_files(output: Path) -> dict[str, bytes]:
    return {name: (output / name).read_bytes() for name in ("model.safetensors", "scott_config.json")}


@pytest.fixture(scope="module")
def reference_training(train_inputs, tmp_path_factory) -> dict:
    """One uninterrupted run: its final student's bytes and weights, its wall time and its training time."""
    output = tmp_path_factory.mktemp("reference") / "run"
    start = time.monotonic()
    proc = start_client(train_argv(train_inputs, output), FAULT_STEP_SLEEP=STEP_SLEEP)
    first_step = wait_for_line(proc, "STEP 1")
    proc.stdout.read()
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    end = time.monotonic()
    return {"files": student_files(output), "weights": load_file(output / "model.safetensors"),
            "uninterrupted_s": round(end - start, 2), "training_s": round(end - first_step, 2)}


def readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def checkpoints(output: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))


def compare_with_reference(output: Path, reference: dict) -> dict:
    got = student_files(output)
    weights_now = load_file(output / "model.safetensors")
    differing = [k for k in reference["weights"] if not torch.equal(weights_now[k], reference["weights"][k])]
    return {"files_differing": sorted(k for k in got if got[k] != reference["files"][k]),
            "tensors_differing": len(differing),
            "max_abs_difference": max((float((weights_now[k] - reference["weights"][k]).abs().max())
                                       for k in differing), default=0.0)}


def record(figures: dict, reference: dict) -> None:
    """Print a trial's figures; append them to ``$SCOTT_RELIABILITY_REPORT`` (JSON lines) when it is set."""
    line = json.dumps({**figures, "uninterrupted_s": reference["uninterrupted_s"],
                       "training_s": reference["training_s"]})
    print(line)
    if os.environ.get("SCOTT_RELIABILITY_REPORT"):
        with open(os.environ["SCOTT_RELIABILITY_REPORT"], "a") as f:
            f.write(line + "\n")


def kill_trial(train_inputs: dict[str, Path], output: Path, log: Path, reference: dict, *,
               delay: float | None = None, hold: str | None = None) -> dict:
    """Start ``scott-distill train``, kill -9 it (``delay`` seconds after its first step begins, or once it holds
    at ``hold``), run the same command again, and compare the final student with the uninterrupted run's."""
    argv = train_argv(train_inputs, output)
    proc = start_client(argv, FAULT_LOG=str(log), FAULT_STEP_SLEEP=STEP_SLEEP, **({"FAULT_HOLD": hold} if hold else {}))
    if hold is not None:
        wait_for_line(proc, "HOLD")
    else:
        assert delay is not None
        wait_for_line(proc, "STEP 1")
        time.sleep(delay)
    killed = proc.poll() is None
    proc.kill()
    proc.wait()
    started = [int(s) for s in log.read_text().split()]
    saved = checkpoints(output)
    complete = [n for n in saved if readable_json(output / f"checkpoint-{n}" / "trainer_state.json")]
    resume_s = run_to_end(argv, FAULT_LOG=str(log))
    steps = [int(s) for s in log.read_text().split()]
    figures = {"killed": killed, "last_step_started": max(started), "checkpoints_on_disk": len(saved),
               # the step the resumed run began with, less one (all steps done: it only saved the student)
               "resumed_after_step": steps[len(started)] - 1 if len(steps) > len(started) else MAX_STEPS,
               "steps_trained_twice": len(steps) - MAX_STEPS,
               "resume_s": round(resume_s, 2), **compare_with_reference(output, reference)}
    assert sorted(set(steps)) == list(range(1, MAX_STEPS + 1)), figures  # no step skipped
    # the same command goes on from the newest complete checkpoint: at most the step in progress is trained again
    assert figures["resumed_after_step"] == max(complete, default=0), (complete, figures)
    assert figures["steps_trained_twice"] == len(started) - figures["resumed_after_step"] <= 1, figures
    assert figures["files_differing"] == [] and figures["tensors_differing"] == 0, figures
    return figures


def test_kill_9_during_a_checkpoint_save_resumes_to_the_same_weights(train_inputs, reference_training, tmp_path):
    """Killed with half of checkpoint-4's ``model.safetensors`` on disk: the same command skips that folder (with
    a warning), resumes from checkpoint-3 and ends with the uninterrupted run's bytes."""
    figures = kill_trial(train_inputs, tmp_path / "run", tmp_path / "log", reference_training, hold="save:3")
    assert figures["killed"] and figures["resumed_after_step"] == 3
    assert len((tmp_path / "run" / "checkpoint-4" / "model.safetensors").read_bytes()) > 0
    record({"fault": "kill -9 during the save of checkpoint-4", **figures}, reference_training)


@pytest.mark.parametrize("seed", range(int(os.environ.get("SCOTT_RELIABILITY_TRIALS", "2"))))
def test_kill_9_at_a_random_moment_resumes_to_the_same_weights(seed, train_inputs, reference_training, tmp_path):
    # from the first step to a little past the end of training, so that some kills land in the final save
    delay = random.Random(seed).uniform(0, 1.1 * reference_training["training_s"])
    figures = kill_trial(train_inputs, tmp_path / "run", tmp_path / "log", reference_training, delay=delay)
    record({"fault": "kill -9 at a random moment", "seed": seed, "delay_s": round(delay, 2), **figures},
           reference_training)


@pytest.mark.parametrize("second_signal", [False, True], ids=["one-sigterm", "sigterm-then-sigint"])
def test_sigterm_saves_a_checkpoint_says_how_to_resume_and_exits_nonzero(second_signal, train_inputs,
                                                                        reference_training, tmp_path):
    """SIGTERM during step 5: that step finishes, checkpoint-5 is saved, the log holds the command that resumes
    from it, exit 143; running that command ends with the uninterrupted run's bytes. SIGTERM then SIGINT during a
    60 s step: exit 130 at once, the step is lost, the same command resumes from checkpoint-4."""
    output = tmp_path / "run"
    argv = train_argv(train_inputs, output)
    proc = start_client(argv, FAULT_HOLD_STEP="5:60" if second_signal else "5:3")
    wait_for_line(proc, "STEP 5")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if second_signal:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    stopped_s = time.monotonic() - sent
    assert proc.returncode == (130 if second_signal else 143), stderr[-3000:]
    assert "train: SIGTERM received; stopping after the optimizer step in progress, with a checkpoint" in stderr
    resume = [line.split("Resume with: scott-distill ", 1)[1] for line in stderr.splitlines()
              if "Resume with: scott-distill " in line]
    assert len(resume) == 1, stderr[-3000:]
    resume_argv = shlex.split(resume[0])
    if second_signal:
        assert stopped_s < 40  # not the 60 s the step in progress would take
        assert "stopped at once by a second SIGINT" in stderr
        assert checkpoints(output) == [1, 2, 3, 4] and resume_argv == ["train", *argv]
    else:
        checkpoint = output / "checkpoint-5"
        assert f"train: stopped by SIGTERM after optimizer step 5 of {MAX_STEPS}; checkpoint saved to {checkpoint}" \
            in stderr
        assert checkpoints(output) == [1, 2, 3, 4, 5]
        assert resume_argv == ["train", *argv, "--resume_from_checkpoint", str(checkpoint)]
    assert not (output / "model.safetensors").exists()
    resume_s = run_to_end(resume_argv[1:])
    figures = compare_with_reference(output, reference_training)
    assert figures["files_differing"] == [] and figures["tensors_differing"] == 0, figures
    record({"fault": "SIGTERM then SIGINT" if second_signal else "SIGTERM", "stopped_s": round(stopped_s, 2),
            "resume_s": round(resume_s, 2), **figures}, reference_training)


def test_recipe_train_stage_saves_a_checkpoint_on_sigterm_and_the_same_command_resumes(tokenizer, tmp_path,
                                                                                        monkeypatch, caplog):
    """`scott-distill run --stage train` (in process): SIGTERM during step 2 -> checkpoint-2, exit 143, the log
    says to run the same command; that command resumes from checkpoint-2 and ends with the uninterrupted run's
    student, bit for bit."""
    from test_recipes import write_recipe

    from scott_distill.commands import main as cli_main

    recipe = write_recipe(tmp_path, tokenizer)
    argv = ["run", str(recipe), "--stage", "train", "--train.max_steps", "4", "--train.save_strategy", "steps",
            "--train.save_steps", "1", "--train.per_device_train_batch_size", "2", "--train.save_total_limit", "2"]
    assert cli_main([*argv, "--output_dir", str(tmp_path / "reference")]) == 0
    real = CounterfactualTrainer.training_step
    calls = {"n": 0}

    def preempted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the scheduler's SIGTERM arrives during step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)

    run = tmp_path / "run"
    with monkeypatch.context() as m, caplog.at_level("INFO"):
        m.setattr(CounterfactualTrainer, "training_step", preempted)
        assert cli_main(argv) == 143
    assert f"checkpoint saved to {run / 'checkpoints' / 'checkpoint-2'}" in caplog.text
    assert f"Resume with: scott-distill {shlex.join(argv)}" in caplog.text
    assert checkpoints(run / "checkpoints") == [1, 2] and not (run / "student").exists()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert cli_main(argv) == 0
    assert "Resuming from" in caplog.text and "checkpoint-2" in caplog.text
    got, want = (load_file(d / "student" / "model.safetensors") for d in (run, tmp_path / "reference"))
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.distributed
@pytest.mark.parametrize(("processes", "signalled"), [(2, ["1:15"]), (3, ["1:15", "2:15"])])
def test_stop_request_reaches_every_process_as_the_largest_signal(tmp_path, processes, signalled):
    """torchrun, nothing trained: with no request anywhere no process stops and none gets a signal number; when
    some processes got SIGTERM (15), every process stops, and those without a signal take 15 for their "stopped by
    SIGTERM" message: the largest number, not the sum (30 with two processes signalled, so three processes)."""
    worker = Path(__file__).parent / "stop_flag_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_port", str(29543 + processes), str(worker), str(tmp_path), *signalled],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(processes)]
    assert [s["world_size"] for s in seen] == [processes] * processes
    assert [s["before"] for s in seen] == [[False, None]] * processes
    assert [s["after"] for s in seen] == [[True, 15]] * processes


@pytest.mark.distributed
def test_sigterm_on_one_of_two_processes_stops_both_after_the_same_step(train_inputs, tmp_path):
    """torchrun, 2 processes: only rank 1 gets SIGTERM (during step 3). Both stop after step 3 (the stop flag is
    all-reduced every step; a rank that stopped alone would leave the other waiting in a collective) with
    checkpoint-3 saved, torchrun fails, and the same command resumes to the uninterrupted 2-process run's student."""

    def torchrun(output: Path, port: int, **faults: str) -> subprocess.CompletedProcess:
        argv = [*train_argv(train_inputs, output), "--use_cpu", "true", "--per_device_train_batch_size", "1",
                "--max_steps", "6"]
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(port), str(CLIENT), *argv], capture_output=True, text=True,
                              env=client_env(**faults), timeout=600)

    reference = torchrun(tmp_path / "reference", 29541)
    assert reference.returncode == 0, reference.stderr[-3000:]
    stopped = torchrun(tmp_path / "run", 29542, FAULT_SIGNAL_SELF="1:3")
    assert stopped.returncode != 0
    assert stopped.stderr.count("train: stopped by SIGTERM after optimizer step 3 of 6") == 2, stopped.stderr[-3000:]
    assert checkpoints(tmp_path / "run") == [1, 2, 3]
    resumed = torchrun(tmp_path / "run", 29543)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = (load_file(d / "model.safetensors") for d in (tmp_path / "run", tmp_path / "reference"))
    assert all(torch.equal(got[k], want[k]) for k in want)
