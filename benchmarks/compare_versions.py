"""Processor and fused path of another git revision vs the working tree, in one process (no slowdown check).

The other revision's ``src/scott_distill`` is extracted with ``git archive`` and imported as
``base_scott_distill``; both versions run the GPT-2-124M setting of ``contrastive_decoding.py`` interleaved
(median of --repeats), must produce identical tokens, and their peak-RSS growth is measured in fresh
subprocesses.

    python benchmarks/compare_versions.py --base c210a19
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import contrastive_decoding as cd  # benchmarks/ is the script's folder
import torch
from transformers import LogitsProcessorList

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["greedy", "processor_base", "processor_now", "fused_base", "fused_now"]


def extract(base: str, into: Path) -> None:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", base, "src/scott_distill"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "scott_distill").rename(into / "base_scott_distill")


def setting(quick: bool = False) -> argparse.Namespace:
    if quick:
        return argparse.Namespace(arch="gpt2", layers=2, hidden=96, heads=3, batch=8, prompt_len=48)
    return argparse.Namespace(arch="gpt2", layers=12, hidden=768, heads=12, batch=8, prompt_len=192)


def make_runner(variant: str, model, gold, contrast, new_tokens: int):
    import base_scott_distill as base

    import scott_distill as now

    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    lib = base if variant.endswith("base") else now
    if variant == "greedy":
        return lambda: model.generate(**gold, **kw)
    if variant.startswith("processor"):
        def processor():
            proc = lib.ContrastiveRationaleLogitsProcessor(model, contrast["input_ids"], contrast["attention_mask"],
                                                           alpha=0.5)
            return model.generate(**gold, logits_processor=LogitsProcessorList([proc]), **kw)
        return processor
    return lambda: lib.contrastive_generate(model, None, gold, contrast, alpha=0.5, max_new_tokens=new_tokens,
                                            do_sample=False, pad_token_id=0)


def _peak_worker(variant: str, path: str, new_tokens: int, quick: bool, queue) -> None:
    sys.path.insert(0, path)
    torch.set_num_threads(2)
    model, gold, contrast = cd.build(setting(quick))
    run = make_runner(variant, model, gold, contrast, new_tokens)
    model.generate(**gold, max_new_tokens=1)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = cd._status_kib("VmRSS")
    run()
    queue.put(cd._status_kib("VmHWM") - before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision to compare with (e.g. the merge base)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny setting for a smoke run")
    args = p.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 12, 1
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        model, gold, contrast = cd.build(setting(args.quick))
        runners = {v: make_runner(v, model, gold, contrast, args.new_tokens) for v in VARIANTS}
        runners["greedy"]()
        same = (torch.equal(runners["processor_base"](), runners["processor_now"]())
                and torch.equal(runners["fused_base"](), runners["fused_now"]()))
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        load = os.getloadavg()
        for _ in range(args.repeats):
            for v in VARIANTS:
                t0 = time.perf_counter()
                runners[v]()
                samples[v].append(time.perf_counter() - t0)
        memory = {}
        if not args.no_memory:
            ctx = mp.get_context("spawn")
            for v in VARIANTS:
                queue = ctx.Queue()
                proc = ctx.Process(target=_peak_worker, args=(v, tmp, args.new_tokens, args.quick, queue))
                proc.start()
                memory[v] = queue.get() / 1024
                proc.join()
    greedy = statistics.median(samples["greedy"])
    print(f"base={args.base}; identical tokens: {same}; load average before/after: {load} / {os.getloadavg()}")
    print(f"{'variant':<15} {'median s':>9} {'x greedy':>9} {'peak MiB':>9}  samples")
    for v in VARIANTS:
        med = statistics.median(samples[v])
        mem = f"{memory[v]:9.0f}" if v in memory else f"{'-':>9}"
        print(f"{v:<15} {med:9.2f} {med / greedy:9.2f} {mem}  {[round(x, 2) for x in samples[v]]}")


if __name__ == "__main__":
    main()
