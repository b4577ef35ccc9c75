"""Speed of SCOTT contrastive decoding, as ratios to plain greedy ``generate`` measured in the same run.

Methods (all greedy, GPT-2-124M architecture, random init):
  greedy      plain ``model.generate``                                   (baseline, 1.00x)
  processor   ``ContrastiveRationaleLogitsProcessor`` inside ``generate`` (second branch with its own KV cache)
  fused       ``contrastive_generate``: both branches in one forward of 2 x batch rows
  hf_cfg      transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, one row at a time
  reference   SCOTT's reference loop (logp1 - 0.5 logp2, full recomputation, no cache), one row at a time

Peak memory: each method runs once more in a fresh subprocess; after the model is built, freed memory is
returned to the OS (malloc_trim) and the kernel's peak-RSS mark is reset (/proc/self/clear_refs), so the
figure is the peak RSS growth of the generation alone, as a ratio to greedy's.

    python benchmarks/contrastive_decoding.py            # the setting recorded in docs/benchmarks.md
    python benchmarks/contrastive_decoding.py --quick    # a smaller smoke run
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing as mp
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor

from scott_distill import ContrastiveRationaleLogitsProcessor, contrastive_generate

METHODS = ["greedy", "processor", "fused", "hf_cfg", "reference"]


def build(args):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=args.heads, vocab_size=50257)
    model = GPT2LMHeadModel(cfg).eval()
    model.generation_config.eos_token_id = None  # measure exactly `new_tokens` steps
    model.generation_config.pad_token_id = 0
    g = torch.Generator().manual_seed(1)

    def batch(lo: int):
        lengths = torch.randint(lo, args.prompt_len + 1, (args.batch,), generator=g)
        lengths[0] = args.prompt_len
        ids = torch.zeros(args.batch, args.prompt_len, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lengths.tolist()):
            ids[i, -n:] = torch.randint(5, cfg.vocab_size, (n,), generator=g)
            mask[i, -n:] = 1
        return {"input_ids": ids, "attention_mask": mask}

    gold = batch(int(args.prompt_len * 0.85))
    contrast = batch(int(args.prompt_len * 0.85))
    return model, gold, contrast


@torch.no_grad()
def reference_loop(model, gold, contrast, new_tokens, alpha=0.5):
    outs = []
    for i in range(gold["input_ids"].shape[0]):
        g = gold["input_ids"][i][gold["attention_mask"][i].bool()].tolist()
        c = contrast["input_ids"][i][contrast["attention_mask"][i].bool()].tolist()
        out: list[int] = []
        for _ in range(new_tokens):
            lp1 = torch.log_softmax(model(torch.tensor([g + out])).logits[0, -1], -1)
            lp2 = torch.log_softmax(model(torch.tensor([c + out])).logits[0, -1], -1)
            out.append(int((lp1 - alpha * lp2).argmax()))
        outs.append(out)
    return outs


@torch.no_grad()
def run(method: str, model, gold, contrast, new_tokens: int, reference_rows: int = 2):
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if method == "greedy":
        return model.generate(**gold, **kw)
    if method == "processor":
        proc = ContrastiveRationaleLogitsProcessor(model, contrast["input_ids"], contrast["attention_mask"], alpha=0.5)
        return model.generate(**gold, logits_processor=LogitsProcessorList([proc]), **kw)
    if method == "fused":
        return contrastive_generate(model, None, gold, contrast, alpha=0.5, max_new_tokens=new_tokens, pad_token_id=0)
    if method == "hf_cfg":
        outs = []
        for i in range(gold["input_ids"].shape[0]):
            g = gold["input_ids"][i : i + 1][:, gold["attention_mask"][i].bool()]
            c = contrast["input_ids"][i : i + 1][:, contrast["attention_mask"][i].bool()]
            proc = UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model, unconditional_ids=c)
            outs.append(model.generate(g, logits_processor=LogitsProcessorList([proc]), **kw))
        return outs
    if method == "reference":
        return reference_loop(model, gold, contrast, new_tokens)
    if method == "reference_rows":  # the first `rows` rows only; the loop is linear in rows
        return reference_loop(model, {k: v[:reference_rows] for k, v in gold.items()},
                              {k: v[:reference_rows] for k, v in contrast.items()}, new_tokens)
    raise ValueError(method)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_worker(method, args, queue):
    torch.set_num_threads(args.threads)
    model, gold, contrast = build(args)
    run("greedy", model, gold, contrast, 1)  # load kernels and libraries outside the measured window
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _status_kib("VmRSS")
    run(method, model, gold, contrast, args.new_tokens)
    queue.put(_status_kib("VmHWM") - before)


def peak_memory_kib(method: str, args) -> int:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_worker, args=(method, args, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=192)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-repeats", type=int, default=1, help="the reference loop is slow: fewer repeats")
    p.add_argument("--reference-rows", type=int, default=2,
                   help="time SCOTT's loop on this many rows and scale to the batch (it runs one row at a time)")
    p.add_argument("--quick", action="store_true", help="tiny setting for a smoke run")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.layers, args.hidden, args.heads, args.prompt_len, args.new_tokens, args.repeats = 2, 128, 2, 48, 12, 2
    torch.set_num_threads(args.threads)
    model, gold, contrast = build(args)
    run("greedy", model, gold, contrast, 2)

    # equality check in the same run: fused and processor pick the same tokens
    a = run("processor", model, gold, contrast, args.new_tokens)[:, args.prompt_len :]
    b = run("fused", model, gold, contrast, args.new_tokens)
    same = bool(torch.equal(a, b))

    times: dict[str, float] = {}
    for method in METHODS:
        reps = args.reference_repeats if method in ("reference", "hf_cfg") else args.repeats
        samples = []
        timed = "reference_rows" if method == "reference" else method
        scale = args.batch / args.reference_rows if method == "reference" else 1.0
        for _ in range(reps):
            t0 = time.perf_counter()
            run(timed, model, gold, contrast, args.new_tokens, args.reference_rows)
            samples.append((time.perf_counter() - t0) * scale)
        times[method] = statistics.median(samples)
    memory = {} if args.no_memory else {m: peak_memory_kib(m, args) for m in ("greedy", "processor", "fused")}
    if memory:
        print("peak RSS growth (MiB): " + ", ".join(f"{m} {v / 1024:.0f}" for m, v in memory.items()))

    base = times["greedy"]
    print(f"batch={args.batch} prompt={args.prompt_len} new={args.new_tokens} layers={args.layers} "
          f"hidden={args.hidden} threads={args.threads}; fused == processor tokens: {same}")
    print(f"{'method':<10} {'seconds':>8} {'x greedy':>9} {'ref / x':>8} {'peak mem x greedy':>18}")
    for m in METHODS:
        mem = f"{memory[m] / max(memory['greedy'], 1):.2f}" if m in memory else "-"
        print(f"{m:<10} {times[m]:8.2f} {times[m] / base:9.2f} {times['reference'] / times[m]:8.1f} {mem:>18}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "seconds": times, "peak_rss_kib": memory, "fused_equals_processor": same},
                      f, indent=2)


if __name__ == "__main__":
    main()
