"""Worker for tests/test_train_reliability.py's stop-flag test: the all-reduce that makes every process stop after
the same step, without training anything.

    torchrun --nproc_per_node 3 tests/stop_flag_worker.py OUT_DIR 1:15 2:15

Each ``RANK:SIGNUM`` gives that process a stop request (as if the signal had reached only it). Every process asks
the stop callback twice, first with no request anywhere, then with those requests, and writes what it saw to
``OUT_DIR/rank<R>.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch.distributed as dist

from scott_distill import CounterfactualTrainingArguments
from scott_distill.interrupts import StopRequest
from scott_distill.student.trainer import _SaveAndStopOnSignal


def main() -> None:
    out, given = Path(sys.argv[1]), dict(item.split(":") for item in sys.argv[2:])
    logging.disable(logging.WARNING)
    args = CounterfactualTrainingArguments(output_dir=str(out), use_cpu=True, report_to=[])  # joins the group
    rank = args.process_index
    request = StopRequest()
    callback = _SaveAndStopOnSignal(request)
    before = (callback._requested(args), request.signum)
    if str(rank) in given:
        request.signum = int(given[str(rank)])
    after = (callback._requested(args), request.signum)
    (out / f"rank{rank}.json").write_text(json.dumps({"world_size": args.world_size, "before": before,
                                                      "after": after}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
