"""TEST CODE run in a subprocess by test_train_reliability.py: ``scott-distill train ARGS`` (the real command,
through the dispatcher) with fault hooks chosen by environment variables (the library has no hooks of its own).

* Every optimizer step prints ``STEP <n>`` (1-based) on stdout when it begins, and appends ``<n>`` to
  ``FAULT_LOG`` (unbuffered, so a ``kill -9`` loses none) to count steps trained twice.
* ``FAULT_STEP_SLEEP``: seconds each step sleeps when it begins, standing in for a bigger student.
* ``FAULT_HOLD_STEP``: ``n:seconds`` — step ``n`` sleeps that long (a step in progress when signals arrive).
* ``FAULT_SIGNAL_SELF``: ``rank:n`` — the process of that rank (``RANK``, 0 without torchrun) sends itself SIGTERM
  when step ``n`` begins (a preemption notice that reached one process of a job).
* ``FAULT_HOLD``: ``save:K`` — during the K-th checkpoint save of this process (0-based), after half of
  ``model.safetensors`` is written (and fsync'ed): print ``HOLD`` and wait to be killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import safetensors.torch
import transformers.modeling_utils as modeling_utils
from transformers import TrainerCallback

import scott_distill.commands.train as train_command
from scott_distill.commands import main

log_fd = os.open(os.environ["FAULT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT) if "FAULT_LOG" in os.environ else None
sleep = float(os.environ.get("FAULT_STEP_SLEEP", "0"))
hold_step, hold_seconds = (int(x) if i == 0 else float(x) for i, x in
                           enumerate(os.environ.get("FAULT_HOLD_STEP", "-1:0").split(":")))
signal_rank, signal_step = (int(x) for x in os.environ.get("FAULT_SIGNAL_SELF", "-1:-1").split(":"))


class Faults(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        if log_fd is not None:
            os.write(log_fd, f"{step}\n".encode())
        print(f"STEP {step}", flush=True)
        if step == signal_step and int(os.environ.get("RANK", "0")) == signal_rank:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(hold_seconds if step == hold_step else sleep)


class Trainer(train_command.CounterfactualTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(Faults())


train_command.CounterfactualTrainer = Trainer

mode = os.environ.get("FAULT_HOLD", "")
if mode.startswith("save:"):
    target = int(mode.split(":")[1])
    real_save_file = modeling_utils.safe_save_file
    saves = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        if saves["n"] == target and "checkpoint-" in str(filename):
            data = safetensors.torch.save(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            print("HOLD", flush=True)
            time.sleep(3600)
        saves["n"] += 1
        return real_save_file(tensors, filename, metadata=metadata)

    modeling_utils.safe_save_file = save_file

sys.exit(main(["train", *sys.argv[1:]]))
