"""Examples/s of ``generate_rationales`` against SCOTT's released loop, measured in the same run.

Setting: CoS-E questions from ../shared/data, random-init GPT-2-124M-shaped teacher, perturbation="wrong",
counterfactual on (2 generations per question), batch 16, 2 threads. The baseline is the released script's
structure (benchmarks/released_loop.py): one job at a time, a KV cache per branch, its stop rule; it is
timed on --released-jobs jobs and scaled (its cost is linear in jobs). Both sides generate exactly
--new-tokens tokens (the random teacher never stops on its own, so stopping is disabled for both; the
released loop still runs its per-step stop checks).

``generate_rationales`` runs twice: with shared-prefix KV reuse (the default: the 6-shot block's KV computed
once, every batch and both branches start from it) and without (``reuse_prefix=False``: every row prefills its
whole prompt).

The released loop is timed in slices between the variants (a slow spell of the shared machine then hits both
sides); wall-clock and process CPU seconds are both reported.

Correctness in the same run: both runs give the same rows; the released loop's text equals
generate_rationales' rationale for every timed job, and the released loop equals the no-cache loop (recomputing
both prompts every token) on one job.

Peak memory: each variant runs once more in a fresh subprocess on --memory-questions questions (one batch of
16 jobs by default: the peak is the largest batch's); after the model is built, freed memory is returned to
the OS (malloc_trim) and the kernel's peak-RSS mark is reset, so the figure is the generation's peak RSS growth.

``--teacher smollm2-135m-instruct`` (or any checkpoint ``load_teacher`` takes) replaces the random teacher by a
real one with its own tokenizer and the library's real stop rule (every newline token and EOS), on both sides:
rows then stop where the teacher stops, so the released loop is best timed on every job (--released-jobs
2*questions) rather than scaled.

    python benchmarks/rationalize_throughput.py               # setting recorded in docs/benchmarks.md
    python benchmarks/rationalize_throughput.py --teacher smollm2-135m-instruct --released-jobs 64
    python benchmarks/rationalize_throughput.py --device cuda --dtype bfloat16 --layers 36 --hidden 1280 --heads 20
                                                              # GPT-2-large shape on a GPU (benchmarks/gpu.sh)

On a GPU, peak memory is ``torch.cuda.max_memory_allocated`` growth (benchmarks/device.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch
from device import DTYPES, add_device_args, describe, memory_peak_kib, memory_window
from peak_memory import in_fresh_process
from released_loop import no_cache_row, released_loop_row
from shared_data import COSE
from transformers import GPT2Config, GPT2LMHeadModel

import scott_distill.teacher.rationalize as rz
from scott_distill.checkpoints import load_teacher
from scott_distill.demo.tokenizer import train_bpe_tokenizer
from scott_distill.tasks import load_task
from scott_distill.teacher.prompts import load_prompt
from scott_distill.teacher.scoring import stop_token_ids_for

DATA = COSE
NEVER = (-1,)  # stop ids of the released loop with a random teacher: checked every step, never produced


def build(args):
    """The data, tokenizer, teacher and generate_rationales settings of the run (same in every process)."""
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    data = load_task("cose", str(DATA / "train.csv")).select(range(args.questions))
    prompt = load_prompt("cose")
    kw = dict(task="cose", perturbation="wrong", alpha=0.5, counterfactual=True, batch_size=args.batch_size,
              max_new_tokens=args.new_tokens, show_progress=False)
    if args.teacher:
        model, tokenizer = load_teacher(args.teacher, args.dtype)
        model.to(args.device)
        if not args.never_stop:
            return data, prompt, tokenizer, model, kw, frozenset(stop_token_ids_for(tokenizer))
        _never_stop(model)
        return data, prompt, tokenizer, model, kw, NEVER
    texts = [q for q in data["question"]] + [r or "" for r in data["rationale"]]
    tokenizer = train_bpe_tokenizer(texts + prompt.exemplars.splitlines(), vocab_size=8000)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=args.heads, vocab_size=50257,
                                       bos_token_id=3, eos_token_id=1, pad_token_id=0)).eval()
    model.to(device=args.device, dtype=DTYPES[args.dtype])
    _never_stop(model)  # random weights never emit the newline: generate exactly new_tokens on both sides
    return data, prompt, tokenizer, model, kw, NEVER


def _never_stop(model) -> None:
    """No stop token on either side: every row generates exactly --new-tokens tokens."""
    rz.stop_token_ids_for = lambda tok, stop="\n": []
    model.generation_config.eos_token_id = None


def _peak_worker(reuse: bool, args, queue) -> None:
    data, _, tokenizer, model, kw, _ = build(args)
    rz.generate_rationales(data.select(range(1)), model, tokenizer, reuse_prefix=reuse, **dict(kw, max_new_tokens=1))
    before = memory_window(args.device)
    rz.generate_rationales(data.select(range(args.memory_questions)), model, tokenizer, reuse_prefix=reuse, **kw)
    queue.put(memory_peak_kib(args.device, before))


def peak_memory_kib(reuse: bool, args) -> int:
    return in_fresh_process(_peak_worker, reuse, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--released-jobs", type=int, default=8, help="jobs timed with the released loop, then scaled")
    p.add_argument("--check-tokens", type=int, default=8, help="tokens compared with the no-cache loop (1 job)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--processor", action="store_true", help="also time use_fused=False (the processor path)")
    p.add_argument("--memory-questions", type=int, default=8, help="questions of the peak-memory runs (0: skip)")
    p.add_argument("--teacher", help="a real teacher (e.g. smollm2-135m-instruct) instead of the random GPT-2")
    p.add_argument("--never-stop", action="store_true",
                   help="with --teacher: no stop rule on either side (every row generates --new-tokens tokens)")
    add_device_args(p)
    args = p.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data, prompt, tokenizer, model, kw, stop_ids = build(args)

    seconds = {}
    variants = [("fused, prefix reuse", dict(use_fused=True, reuse_prefix=True)),
                ("fused, no prefix reuse", dict(use_fused=True, reuse_prefix=False))]
    if args.processor:
        variants += [("processor, prefix reuse", dict(use_fused=False, reuse_prefix=True)),
                     ("processor, no prefix reuse", dict(use_fused=False, reuse_prefix=False))]
    outputs: dict[str, list] = {}
    cpu: dict[str, float] = {}
    jobs: list = []
    ids: list = []
    released: list = []
    released_wall = released_cpu = 0.0
    for i, (name, variant) in enumerate(variants):
        t0, c0 = time.perf_counter(), time.process_time()
        outputs[name] = rz.generate_rationales(data, model, tokenizer, **variant, **kw).to_list()
        seconds[f"generate_rationales ({name})"] = time.perf_counter() - t0
        cpu[f"generate_rationales ({name})"] = time.process_time() - c0
        if i == 0:
            # the jobs of the first rows, factual and counterfactual, as the released script would run them
            for row in outputs[name][: -(-args.released_jobs // 2)]:
                q, cs = row["question"], row["choices"]
                jobs.append((prompt.render(q, cs, row["answer"]), prompt.render(q, cs, row["contrast_answer"]),
                             row["rationale"]))
                jobs.append((prompt.render(q, cs, row["counterfactual_answer"]), prompt.render(q, cs, row["answer"]),
                             row["counterfactual_rationale"]))
            jobs = jobs[: args.released_jobs]
            ids = [(tokenizer(g)["input_ids"], tokenizer(c)["input_ids"]) for g, c, _ in jobs]
        # the released loop is timed in slices between the variants, so a slow spell of this shared machine
        # hits both sides alike
        part = ids[i * len(ids) // len(variants) : (i + 1) * len(ids) // len(variants)]
        t0, c0 = time.perf_counter(), time.process_time()
        released += [released_loop_row(model, g, c, 0.5, args.new_tokens, stop_ids) for g, c in part]
        released_wall += time.perf_counter() - t0
        released_cpu += time.process_time() - c0
    out_rows = outputs[variants[0][0]]
    rows_agree = min(sum(a == b for a, b in zip(rows, out_rows)) for rows in outputs.values())
    same_rows = True if rows_agree == len(out_rows) else f"{rows_agree}/{len(out_rows)} rows (reduced precision)"
    per_job, per_job_cpu = released_wall / len(jobs), released_cpu / len(jobs)

    text_agree = sum(prompt.clean(tokenizer.decode(toks, skip_special_tokens=True)) == expect
                     for toks, (_, _, expect) in zip(released, jobs))
    same_text = True if text_agree == len(jobs) else f"{text_agree}/{len(jobs)} jobs (reduced precision: near-ties)"
    g, c = ids[0]
    same_as_no_cache = (released_loop_row(model, g, c, 0.5, args.check_tokens, stop_ids)
                        == no_cache_row(model, g, c, 0.5, args.check_tokens, stop_ids))
    prompt_len = sum(len(g) for g, _ in ids) / len(ids)
    released_rate = 1.0 / (2 * per_job)  # two jobs (factual + counterfactual) per question
    print(f"questions={args.questions} batch={args.batch_size} new_tokens={args.new_tokens} "
          f"prompt~{prompt_len:.0f} tokens threads={args.threads} dtype={args.dtype}; load average before the run: "
          f"{load_before}\ndevice: {describe(args.device)}, teacher: {args.teacher or 'random GPT-2'}")
    print(f"checks: all generate_rationales variants give the same rows: {same_rows}, released text == "
          f"generate_rationales on {len(jobs)} jobs: {same_text}, released == no-cache loop ({args.check_tokens} "
          f"tokens): {same_as_no_cache}")
    print(f"{'method':<48} {'examples/s':>10} {'seconds':>8} {'x released':>11} {'CPU s':>8} {'x released (CPU)':>17}")
    print(f"{'released loop (batch 1, cached)':<48} {released_rate:10.3f} {per_job * 2 * args.questions:8.1f} "
          f"{1.0:11.2f} {per_job_cpu * 2 * args.questions:8.1f} {1.0:17.2f}   (timed on {len(jobs)} jobs, scaled)")
    for name, secs in seconds.items():
        rate = args.questions / secs
        print(f"{name:<48} {rate:10.3f} {secs:8.1f} {rate / released_rate:11.2f} {cpu[name]:8.1f} "
              f"{per_job_cpu * 2 * args.questions / cpu[name]:17.2f}")
    if args.memory_questions:
        on, off = peak_memory_kib(True, args), peak_memory_kib(False, args)
        kind = "allocated" if args.device.startswith("cuda") else "RSS"
        print(f"peak {kind} growth, {args.memory_questions} questions ({2 * args.memory_questions} jobs): prefix reuse "
              f"{on / 1024:.0f} MiB, no prefix reuse {off / 1024:.0f} MiB (ratio {on / max(off, 1):.2f})")


if __name__ == "__main__":
    main()
