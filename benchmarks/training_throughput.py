"""Training throughput of CounterfactualTrainer vs Seq2SeqTrainer on the same rows (T5-small shape, random init).

Both trainers see identical batches from ``CounterfactualDataCollator`` (the plain trainer's collator only
drops the bookkeeping tensors ``is_counterfactual`` and ``row_index``); the plain trainer optimises the ordinary token-mean loss, ours the
alpha-weighted two-part loss in one forward. Printed: tokens/s and the time ratio (ours / plain).

    python benchmarks/training_throughput.py
    python benchmarks/training_throughput.py --bf16 --batch-size 32   # on a GPU (benchmarks/gpu.sh); Trainer
                                                                      # places the model on the GPU itself
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import datasets
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration

from scott_distill import CounterfactualDataCollator, CounterfactualTrainer, CounterfactualTrainingArguments
from scott_distill.demo.tokenizer import train_bpe_tokenizer


def rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        obj = ["apple", "ball", "cup", "pen"][i % 4]
        out.append({"question": f"Where was the {obj} number {i} left by the children after the long game?",
                    "choices": ["kitchen", "garden", "attic"], "answer": "garden",
                    "rationale": f"The children played outside and the {obj} number {i} stayed in the grass "
                                 "near the fence, which is part of the garden behind the house.",
                    "counterfactual_answer": "attic",
                    "counterfactual_rationale": f"The children took the {obj} number {i} upstairs and left it "
                                                "in a box under the roof, which is the attic of the house."})
    return out


class PlainCollator:
    def __init__(self, inner: CounterfactualDataCollator):
        self.inner = inner

    def __call__(self, batch):
        out = self.inner(batch)
        out.pop("is_counterfactual")
        out.pop("row_index")
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8, help="dataset rows per step (x2 examples)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (TrainingArguments.bf16) for both")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    data = datasets.Dataset.from_list(rows(args.steps * args.batch_size * 4))
    tokenizer = train_bpe_tokenizer([r["rationale"] + " " + r["question"] for r in data], vocab_size=1000)
    cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0)
    collator_model = T5ForConditionalGeneration(T5Config(**{**cfg.to_dict(), "num_layers": 1, "d_model": 8,
                                                           "d_ff": 8, "d_kv": 4, "num_heads": 1}))
    collator = CounterfactualDataCollator(tokenizer, model=collator_model)
    # tokens a step processes: encoder tokens + decoder positions (the full target of every example)
    n_tokens = 0
    for i in range(0, args.batch_size * args.steps, args.batch_size):
        batch = collator([data[k] for k in range(i, i + args.batch_size)])
        n_tokens += int(batch["attention_mask"].sum()) + int((batch["decoder_input_ids"] != 0).sum()) + len(
            batch["decoder_input_ids"])
    results = {"plain": [], "counterfactual": []}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeats):
            for name in ("plain", "counterfactual"):
                torch.manual_seed(0)
                model = T5ForConditionalGeneration(cfg)
                common = dict(output_dir=d, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                              report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=1e-4,
                              dataloader_num_workers=0, seed=0, bf16=args.bf16,
                              use_cpu=not torch.cuda.is_available())
                if name == "plain":
                    trainer = Seq2SeqTrainer(model=model, args=Seq2SeqTrainingArguments(
                        remove_unused_columns=False, **common), train_dataset=data,
                        data_collator=PlainCollator(collator))
                else:
                    trainer = CounterfactualTrainer(model=model, args=CounterfactualTrainingArguments(
                        counterfactual_alpha=0.5, **common), train_dataset=data, data_collator=collator)
                start = time.perf_counter()
                trainer.train()
                results[name].append(time.perf_counter() - start)
    plain, ours = min(results["plain"]), min(results["counterfactual"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"T5-small shape, {args.steps} steps x {args.batch_size} rows (x2 examples), {device}, bf16={args.bf16}, "
          f"~{n_tokens / args.steps:.0f} tokens/step (best of {args.repeats})")
    print(f"Seq2SeqTrainer          {plain:7.2f} s  {n_tokens / plain:8.0f} tokens/s")
    print(f"CounterfactualTrainer   {ours:7.2f} s  {n_tokens / ours:8.0f} tokens/s")
    print(f"ratio (ours / plain)    {ours / plain:7.3f}")


if __name__ == "__main__":
    main()
