"""Speed of SCOTT contrastive decoding against the released SCOTT loop, measured in the same run.

Methods (all greedy, random init; every method generates exactly --new-tokens tokens):
  greedy      plain batched ``model.generate`` (no contrast; the floor)
  released    SCOTT's released loop structure: one row at a time, a KV cache per branch, its stop rule
              (benchmarks/released_loop.py) -- the BASELINE of the speed-ups
  processor   ``ContrastiveRationaleLogitsProcessor`` inside batched ``generate`` (own KV cache)
  fused       ``contrastive_generate``: both branches in one forward of 2 x batch rows
  hf_cfg_row  transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, one row at a time
  hf_cfg      the same processor batched (left padding); only with --arch llama: it ignores the padding in
              its positions, which RoPE models tolerate and absolute-position models (GPT-2) do not

With --shared-prefix K the first K tokens of every gold and contrast row are the same (a few-shot block), and
two methods are added: processor_pfx (the processor and ``generate`` both starting from a ``SharedPrefix``
computed in the timed call) and fused_nopfx (``contrastive_generate(..., shared_prefix=None)``); ``fused`` is
the default call, which finds the prefix itself (``shared_prefix="auto"``).

Correctness, in the same run: the processor's and the fused path's tokens equal the released loop's on every
row, and the released loop equals a no-cache loop that recomputes both prompts every token (on
--check-rows rows, --check-tokens tokens; that loop is far too slow to be a baseline).

Peak memory: each method runs once more in a fresh subprocess; after the model is built, freed memory is
returned to the OS (malloc_trim) and the kernel's peak-RSS mark is reset (/proc/self/clear_refs), so the
figure is the peak RSS growth of the generation alone, as a ratio to greedy's.

    python benchmarks/contrastive_decoding.py                 # GPT-2-124M setting in docs/benchmarks.md
    python benchmarks/contrastive_decoding.py --arch llama    # SmolLM2-135M-shaped Llama (RoPE) setting
    python benchmarks/contrastive_decoding.py --quick         # a smaller smoke run
    python benchmarks/contrastive_decoding.py --shared-prefix 160 --no-memory   # 160 of 192 tokens shared
    python benchmarks/contrastive_decoding.py --device cuda --dtype bfloat16 --arch llama --layers 16 \
        --hidden 2048 --heads 32 --kv-heads 8 --vocab 128256       # a 1B-class Llama on a GPU (benchmarks/gpu.sh)

On a GPU (``--device cuda``) peak memory is ``torch.cuda.max_memory_allocated`` growth instead of RSS growth. In
bfloat16/float16 a batched forward may round differently from a batch-1 one, so near-ties can pick different
tokens: the checks then print how many rows agree instead of True/False.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from device import DTYPES, add_device_args, describe, memory_peak_kib, memory_window
from peak_memory import in_fresh_process
from released_loop import no_cache_row, released_loop_row
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LogitsProcessorList
from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor

from scott_distill import ContrastiveRationaleLogitsProcessor, SharedPrefix, contrastive_generate

ALPHA = 0.5
NEVER = (-1,)  # the released loop's stop ids: checked every step (as in the script), never produced


def methods(arch: str, shared_prefix: int = 0) -> list[str]:
    return (["greedy", "released", "processor", "fused"] + (["processor_pfx", "fused_nopfx"] if shared_prefix else [])
            + ["hf_cfg_row"] + (["hf_cfg"] if arch == "llama" else []))


def build(args):
    torch.manual_seed(0)
    if args.arch == "gpt2":
        cfg = GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=args.heads, vocab_size=args.vocab or 50257)
        model = GPT2LMHeadModel(cfg).eval()
    else:  # default: SmolLM2-135M's shape (30 layers, 576 wide, 9 heads / 3 KV heads, vocab 49152), random init
        cfg = LlamaConfig(num_hidden_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                          num_key_value_heads=args.kv_heads or max(1, args.heads // 3),
                          intermediate_size=args.hidden * 8 // 3, vocab_size=args.vocab or 49152,
                          max_position_embeddings=2048, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg).eval()
    model.to(device=args.device, dtype=DTYPES[args.dtype])
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
    if args.shared_prefix:  # the same first tokens in every row of both branches (left-padded: after the padding)
        if args.shared_prefix >= int(args.prompt_len * 0.85):
            raise ValueError("--shared-prefix must be shorter than the shortest prompt (0.85 x --prompt-len)")
        block = torch.randint(5, cfg.vocab_size, (args.shared_prefix,), generator=g)
        for enc in (gold, contrast):
            for i in range(args.batch):
                start = int((enc["attention_mask"][i] == 0).sum())
                enc["input_ids"][i, start : start + args.shared_prefix] = block
    return model, *({k: v.to(args.device) for k, v in enc.items()} for enc in (gold, contrast))


def agree(rows: list[list[int]], reference: list[list[int]]) -> bool | str:
    """True when every row equals the reference's, else how many rows do (reduced precision, near-ties)."""
    same = sum(a == b for a, b in zip(rows, reference))
    return True if same == len(reference) == len(rows) else f"{same}/{len(reference)} rows"


def unpadded(enc, i: int) -> list[int]:
    return enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()


@torch.no_grad()
def run(method: str, model, gold, contrast, new_tokens: int):
    """Generated tokens, one list per row."""
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    prompt = gold["input_ids"].shape[1]
    rows = range(gold["input_ids"].shape[0])
    if method == "greedy":
        return model.generate(**gold, **kw)[:, prompt:].tolist()
    if method == "released":
        return [released_loop_row(model, unpadded(gold, i), unpadded(contrast, i), ALPHA, new_tokens, NEVER)
                for i in rows]
    if method == "processor":
        proc = ContrastiveRationaleLogitsProcessor(model, contrast["input_ids"], contrast["attention_mask"],
                                                   alpha=ALPHA)
        with proc:
            return model.generate(**gold, **proc.generate_kwargs(), **kw)[:, prompt:].tolist()
    if method == "processor_pfx":
        prefix = SharedPrefix.of(model, [unpadded(enc, i) for enc in (gold, contrast) for i in rows])
        proc = ContrastiveRationaleLogitsProcessor(model, contrast["input_ids"], contrast["attention_mask"],
                                                   alpha=ALPHA, shared_prefix=prefix)
        inputs = gold if prefix is None else prefix.generate_inputs(gold["input_ids"], gold["attention_mask"])
        with proc:
            return model.generate(**inputs, **proc.generate_kwargs(), **kw)[:, prompt:].tolist()
    if method in ("fused", "fused_nopfx"):
        shared = "auto" if method == "fused" else None
        return contrastive_generate(model, None, gold, contrast, alpha=ALPHA, max_new_tokens=new_tokens,
                                    do_sample=False, pad_token_id=0, shared_prefix=shared).tolist()
    if method == "hf_cfg_row":
        outs = []
        for i in rows:
            g = torch.tensor([unpadded(gold, i)], device=model.device)
            uncond = torch.tensor([unpadded(contrast, i)], device=model.device)
            proc = UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model, unconditional_ids=uncond)
            outs.append(model.generate(g, logits_processor=LogitsProcessorList([proc]), **kw)[0, g.shape[1]:].tolist())
        return outs
    if method == "hf_cfg":
        proc = UnbatchedClassifierFreeGuidanceLogitsProcessor(
            1.5, model, unconditional_ids=contrast["input_ids"],
            unconditional_attention_mask=contrast["attention_mask"])
        return model.generate(**gold, logits_processor=LogitsProcessorList([proc]), **kw)[:, prompt:].tolist()
    raise ValueError(method)


def _peak_worker(method, args, queue):
    torch.set_num_threads(args.threads)
    model, gold, contrast = build(args)
    run("greedy", model, gold, contrast, 1)  # load kernels and libraries outside the measured window
    before = memory_window(args.device)
    run(method, model, gold, contrast, args.new_tokens)
    queue.put(memory_peak_kib(args.device, before))


def peak_memory_kib(method: str, args) -> int:
    return in_fresh_process(_peak_worker, method, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=192)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--layers", type=int, help="default: 12 (gpt2) / 30 (llama)")
    p.add_argument("--hidden", type=int, help="default: 768 (gpt2) / 576 (llama)")
    p.add_argument("--heads", type=int, help="default: 12 (gpt2) / 9 (llama)")
    p.add_argument("--kv-heads", type=int, help="llama: key/value heads (default: heads // 3)")
    p.add_argument("--vocab", type=int, help="default: 50257 (gpt2) / 49152 (llama)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method, interleaved; the median is kept")
    p.add_argument("--check-rows", type=int, default=1, help="rows checked against the no-cache loop")
    p.add_argument("--check-tokens", type=int, default=12, help="tokens checked against the no-cache loop")
    p.add_argument("--quick", action="store_true", help="tiny setting for a smoke run")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--shared-prefix", type=int, default=0, help="tokens shared by the start of every prompt")
    p.add_argument("--json", help="also write the results to this JSON file")
    add_device_args(p)
    args = p.parse_args()
    shape = {"gpt2": (12, 768, 12), "llama": (30, 576, 9)}[args.arch]
    args.layers, args.hidden, args.heads = (v if v is not None else d for v, d in
                                            zip((args.layers, args.hidden, args.heads), shape))
    if args.quick:
        args.layers, args.hidden, args.heads, args.prompt_len, args.new_tokens = 2, 96, 3, 48, 12
    torch.set_num_threads(args.threads)
    model, gold, contrast = build(args)
    run("greedy", model, gold, contrast, 2)  # warm-up

    names = methods(args.arch, args.shared_prefix)
    samples: dict[str, list[float]] = {m: [] for m in names}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every method
        for m in names:
            t0 = time.perf_counter()
            tokens[m] = run(m, model, gold, contrast, args.new_tokens)
            samples[m].append(time.perf_counter() - t0)
    times = {m: statistics.median(v) for m, v in samples.items()}

    checks = {
        "processor == released": agree(tokens["processor"], tokens["released"]),
        "fused == released": agree(tokens["fused"], tokens["released"]),
        **({"processor_pfx == released": agree(tokens["processor_pfx"], tokens["released"]),
            "fused_nopfx == released": agree(tokens["fused_nopfx"], tokens["released"])} if args.shared_prefix else {}),
        "released == no-cache loop": all(
            released_loop_row(model, unpadded(gold, i), unpadded(contrast, i), ALPHA, args.check_tokens, NEVER)
            == no_cache_row(model, unpadded(gold, i), unpadded(contrast, i), ALPHA, args.check_tokens, NEVER)
            for i in range(args.check_rows)),
        "all methods generated new_tokens per row": all(
            len(r) == args.new_tokens for m in names for r in tokens[m]),
    }
    measured = ["greedy", "released", "processor", "fused"] + (["processor_pfx", "fused_nopfx"] if args.shared_prefix
                                                              else [])
    memory = {} if args.no_memory else {m: peak_memory_kib(m, args) for m in measured}
    base, released = times["greedy"], times["released"]
    print(f"arch={args.arch} batch={args.batch} prompt={args.prompt_len} shared_prefix={args.shared_prefix} "
          f"new={args.new_tokens} layers={args.layers} hidden={args.hidden} heads={args.heads} dtype={args.dtype} "
          f"threads={args.threads} repeats={args.repeats}; load average before the run: {LOAD_BEFORE}")
    print(f"device: {describe(args.device)}")
    print("checks: " + ", ".join(f"{k}: {v}" for k, v in checks.items()))
    if memory:
        print(f"peak {'allocated' if args.device.startswith('cuda') else 'RSS'} growth (MiB): " + ", ".join(f"{m} {v / 1024:.0f}" for m, v in memory.items()))
    print(f"{'method':<13} {'seconds':>8} {'x greedy':>9} {'released / x':>13} {'peak mem x greedy':>18}")
    for m in names:
        mem = f"{memory[m] / max(memory['greedy'], 1):.2f}" if m in memory else "-"
        print(f"{m:<13} {times[m]:8.2f} {times[m] / base:9.2f} {released / times[m]:13.2f} {mem:>18}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "seconds": times, "samples": samples, "peak_rss_kib": memory,
                       "checks": checks, "load_before": LOAD_BEFORE}, f, indent=2)


LOAD_BEFORE = " ".join(f"{x:.2f}" for x in os.getloadavg())

if __name__ == "__main__":
    main()
