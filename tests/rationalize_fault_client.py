"""TEST CODE run in a subprocess by test_reliability.py, with fault hooks chosen by environment variables (the
library has no hooks of its own).

argv: ``cli ARGS...`` runs ``scott-distill rationalize ARGS`` (the real command, through the dispatcher);
``api TEACHER DATA OUTPUT`` calls ``generate_rationales`` on the first 8 CoS-E rows (batch 2, 8 new tokens): the
same library path without the command's imports (trl), which cost seconds per launch on a loaded machine.

* ``FAULT_LOG``: a file that gets one line ``<batch index>`` each time a batch starts generating (unbuffered appends,
  so a ``kill -9`` loses none), to count batches generated twice.
* ``FAULT_SLEEP``: seconds each batch sleeps before generating, standing in for a slower teacher so that random
  kill times land during generation.
* ``FAULT_HOLD``: where to stop and wait to be killed, after printing ``HOLD`` on stdout:
  ``write:K`` — during the K-th shard record this process writes (0-based), after half of its bytes;
  ``merge`` — during the merge, after half of ``dataset_info.json`` is written;
  ``rename`` — during the merge, just before the finished dataset is renamed into place.
* ``FAULT_HOLD_BATCH``: ``b:seconds`` — batch ``b`` sleeps that long (a batch in progress when signals arrive).
"""

from __future__ import annotations

import json
import os
import sys
import time

import scott_distill.teacher.rationalize as rationalize_module
import scott_distill.teacher.shards as shards_module
from scott_distill.commands import main


def hold() -> None:
    print("HOLD", flush=True)
    time.sleep(3600)


log_fd = os.open(os.environ["FAULT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT) if "FAULT_LOG" in os.environ else None
sleep = float(os.environ.get("FAULT_SLEEP", "0"))
slow_batch, slow_seconds = (int(x) if i == 0 else float(x) for i, x in
                            enumerate(os.environ.get("FAULT_HOLD_BATCH", "-1:0").split(":")))
real_generate = rationalize_module._generate
real_generate_batches = rationalize_module._generate_batches
started: dict = {"n": 0, "todo": []}


def generate_batches(model, tokenizer, jobs, batches, todo, *args, **kwargs):
    started["todo"] = list(todo)  # the n-th generate call of this process is batch todo[n] (no OOM here)
    return real_generate_batches(model, tokenizer, jobs, batches, todo, *args, **kwargs)


def generate(*args, **kwargs):
    n = started["n"]
    started["n"] += 1
    batch = started["todo"][n]
    if log_fd is not None:
        os.write(log_fd, f"{batch}\n".encode())
    print(f"BATCH {batch}", flush=True)
    time.sleep(slow_seconds if batch == slow_batch else sleep)
    return real_generate(*args, **kwargs)


rationalize_module._generate = generate
rationalize_module._generate_batches = generate_batches

mode = os.environ.get("FAULT_HOLD", "")
if mode.startswith("write:"):
    target = int(mode.split(":")[1])
    real_append = shards_module._append
    writes = {"n": 0}

    def append(fd: int, data: bytes) -> None:
        if writes["n"] == target:
            os.write(fd, data[: len(data) // 2])
            os.fsync(fd)
            hold()
        writes["n"] += 1
        real_append(fd, data)

    shards_module._append = append
elif mode == "merge":
    real_dump = json.dump

    def dump(obj, fp, *args, **kwargs):
        if str(getattr(fp, "path", getattr(fp, "name", ""))).endswith("dataset_info.json"):
            text = json.dumps(obj, *args, **kwargs)
            fp.write(text[: len(text) // 2])
            fp.flush()
            hold()
        return real_dump(obj, fp, *args, **kwargs)

    json.dump = dump
elif mode == "rename":
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("dataset"):
            hold()
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace

if sys.argv[1] == "cli":
    sys.exit(main(["rationalize", *sys.argv[2:]]))
teacher, data, output = sys.argv[2:5]
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from scott_distill import generate_rationales, load_task  # noqa: E402

rows = load_task("cose", data).select(range(8))
generate_rationales(rows, AutoModelForCausalLM.from_pretrained(teacher), AutoTokenizer.from_pretrained(teacher),
                    output_dir=output, task="cose", batch_size=2, max_new_tokens=8, show_progress=False)
