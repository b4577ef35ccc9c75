"""Examples/s of ``generate_rationales`` vs SCOTT's reference loop (one job at a time, no cache).

Setting: CoS-E questions from ../shared/data, random-init GPT-2-124M-shaped teacher, perturbation="wrong",
counterfactual on (2 generations per question), batch 16, 2 threads. The reference loop recomputes both
full prompts every token (logp1 - 0.5 logp2, argmax), as the paper's code does; it is timed on a few jobs
and scaled (its cost is linear in jobs). Both sides generate exactly --new-tokens tokens (the random
teacher never stops on its own, so stopping is disabled for both).

    python benchmarks/rationalize_throughput.py               # setting recorded in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import scott_distill.rationalize as rz
from scott_distill.tasks import load_prompt, load_task
from scott_distill.tokenizer_utils import train_bpe_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cose_v1"


@torch.no_grad()
def reference_job(model, tokenizer, prompt: str, contrast: str, new_tokens: int) -> list[int]:
    g = tokenizer(prompt)["input_ids"]
    c = tokenizer(contrast)["input_ids"]
    out: list[int] = []
    for _ in range(new_tokens):
        lp1 = torch.log_softmax(model(torch.tensor([g + out])).logits[0, -1], -1)
        lp2 = torch.log_softmax(model(torch.tensor([c + out])).logits[0, -1], -1)
        out.append(int((lp1 - 0.5 * lp2).argmax()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--reference-jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    data = load_task("cose", str(DATA / "train.csv")).select(range(args.questions))
    texts = [q for q in data["question"]] + [r or "" for r in data["rationale"]]
    tokenizer = train_bpe_tokenizer(texts + load_prompt("cose").exemplars.splitlines(), vocab_size=8000)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=12, vocab_size=50257,
                                       bos_token_id=3, eos_token_id=1, pad_token_id=0)).eval()
    # random weights never emit the newline: generate exactly new_tokens on both sides
    rz.stop_token_ids_for = lambda tok, stop="\n": []
    model.generation_config.eos_token_id = None

    t0 = time.perf_counter()
    out = rz.generate_rationales(data, model, tokenizer, task="cose", perturbation="wrong", alpha=0.5,
                                 counterfactual=True, batch_size=args.batch_size, max_new_tokens=args.new_tokens)
    t_ours = time.perf_counter() - t0

    prompt = load_prompt("cose")
    jobs = []
    for row in out.select(range(args.reference_jobs)):
        jobs.append((prompt.render(row["question"], row["choices"], row["answer"]),
                     prompt.render(row["question"], row["choices"], row["contrast_answer"])))
    t0 = time.perf_counter()
    for g, c in jobs:
        reference_job(model, tokenizer, g, c, args.new_tokens)
    per_job = (time.perf_counter() - t0) / len(jobs)
    ours_rate = args.questions / t_ours
    ref_rate = 1.0 / (2 * per_job)  # two jobs (factual + counterfactual) per question
    prompt_len = sum(len(tokenizer(g)["input_ids"]) for g, _ in jobs) / len(jobs)
    print(f"questions={args.questions} batch={args.batch_size} new_tokens={args.new_tokens} "
          f"prompt~{prompt_len:.0f} tokens threads={args.threads}")
    print(f"generate_rationales   {ours_rate:8.3f} examples/s  ({t_ours:.1f} s)")
    print(f"reference loop        {ref_rate:8.3f} examples/s  (timed on {len(jobs)} jobs, scaled)")
    print(f"speed-up              {ours_rate / ref_rate:8.1f} x")


if __name__ == "__main__":
    main()
