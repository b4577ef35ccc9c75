"""Examples/s of ``generate_rationales`` against SCOTT's released loop, measured in the same run.

Setting: CoS-E questions from ../shared/data, random-init GPT-2-124M-shaped teacher, perturbation="wrong",
counterfactual on (2 generations per question), batch 16, 2 threads. The baseline is the released script's
structure (benchmarks/released_loop.py): one job at a time, a KV cache per branch, its stop rule; it is
timed on --released-jobs jobs and scaled (its cost is linear in jobs). Both sides generate exactly
--new-tokens tokens (the random teacher never stops on its own, so stopping is disabled for both; the
released loop still runs its per-step stop checks).

Correctness in the same run: the released loop's text equals generate_rationales' rationale for every timed
job, and the released loop equals the no-cache loop (recomputing both prompts every token) on one job.

    python benchmarks/rationalize_throughput.py               # setting recorded in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch
from released_loop import no_cache_row, released_loop_row
from transformers import GPT2Config, GPT2LMHeadModel

import scott_distill.teacher.rationalize as rz
from scott_distill.demo.tokenizer import train_bpe_tokenizer
from scott_distill.tasks import load_task
from scott_distill.teacher.prompts import load_prompt

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cose_v1"
NEVER = -1  # stop id of the released loop: checked every step, never produced


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
    p.add_argument("--processor", action="store_true", help="also time use_fused=False (the processor path)")
    args = p.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    data = load_task("cose", str(DATA / "train.csv")).select(range(args.questions))
    texts = [q for q in data["question"]] + [r or "" for r in data["rationale"]]
    prompt = load_prompt("cose")
    tokenizer = train_bpe_tokenizer(texts + prompt.exemplars.splitlines(), vocab_size=8000)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=12, vocab_size=50257,
                                       bos_token_id=3, eos_token_id=1, pad_token_id=0)).eval()
    # random weights never emit the newline: generate exactly new_tokens on both sides
    rz.stop_token_ids_for = lambda tok, stop="\n": []
    model.generation_config.eos_token_id = None
    kw = dict(task="cose", perturbation="wrong", alpha=0.5, counterfactual=True, batch_size=args.batch_size,
              max_new_tokens=args.new_tokens, show_progress=False)

    seconds = {}
    t0 = time.perf_counter()
    out = rz.generate_rationales(data, model, tokenizer, use_fused=True, **kw)
    seconds["generate_rationales (fused)"] = time.perf_counter() - t0
    if args.processor:
        t0 = time.perf_counter()
        by_processor = rz.generate_rationales(data, model, tokenizer, use_fused=False, **kw)
        seconds["generate_rationales (processor)"] = time.perf_counter() - t0
        assert by_processor.to_list() == out.to_list()

    # the jobs of the first rows, factual and counterfactual, as the released script would run them
    jobs = []
    for row in out.select(range(-(-args.released_jobs // 2))):
        q, cs = row["question"], row["choices"]
        jobs.append((prompt.render(q, cs, row["answer"]), prompt.render(q, cs, row["contrast_answer"]),
                     row["rationale"]))
        jobs.append((prompt.render(q, cs, row["counterfactual_answer"]), prompt.render(q, cs, row["answer"]),
                     row["counterfactual_rationale"]))
    jobs = jobs[: args.released_jobs]
    ids = [(tokenizer(g)["input_ids"], tokenizer(c)["input_ids"]) for g, c, _ in jobs]
    t0 = time.perf_counter()
    released = [released_loop_row(model, g, c, 0.5, args.new_tokens, NEVER) for g, c in ids]
    per_job = (time.perf_counter() - t0) / len(jobs)

    same_text = all(prompt.clean(tokenizer.decode(toks, skip_special_tokens=True)) == expect
                    for toks, (_, _, expect) in zip(released, jobs))
    g, c = ids[0]
    same_as_no_cache = (released_loop_row(model, g, c, 0.5, args.check_tokens, NEVER)
                        == no_cache_row(model, g, c, 0.5, args.check_tokens, NEVER))
    prompt_len = sum(len(g) for g, _ in ids) / len(ids)
    released_rate = 1.0 / (2 * per_job)  # two jobs (factual + counterfactual) per question
    print(f"questions={args.questions} batch={args.batch_size} new_tokens={args.new_tokens} "
          f"prompt~{prompt_len:.0f} tokens threads={args.threads}; load average before the run: {load_before}")
    print(f"checks: released text == generate_rationales on {len(jobs)} jobs: {same_text}, "
          f"released == no-cache loop ({args.check_tokens} tokens): {same_as_no_cache}")
    print(f"{'method':<34} {'examples/s':>10} {'seconds':>8} {'x released':>11}")
    print(f"{'released loop (batch 1, cached)':<34} {released_rate:10.3f} {per_job * 2 * args.questions:8.1f} "
          f"{1.0:11.2f}   (timed on {len(jobs)} jobs, scaled)")
    for name, secs in seconds.items():
        rate = args.questions / secs
        print(f"{name:<34} {rate:10.3f} {secs:8.1f} {rate / released_rate:11.2f}")


if __name__ == "__main__":
    main()
