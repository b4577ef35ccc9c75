"""Worker for tests/test_processor_tp.py: the same contrastive decoding in one process or under torchrun.

    python tests/tp_worker.py TEACHER_DIR OUT.json                                   # one process
    torchrun --nproc_per_node 2 tests/tp_worker.py TEACHER_DIR OUT.json --tp          # tensor parallel

With ``--tp`` the teacher is loaded with ``tp_plan="auto"`` (through ``DistributedConfig``): every rank
holds half of each sharded weight and all ranks run the same ``generate`` calls. Rank 0 writes the tokens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DistributedConfig

from scott_distill import ContrastiveRationaleLogitsProcessor, contrastive_generate, generate_rationales

GOLD = ["Q: Where would you keep milk cold? A: The answer is fridge.", "Q: Is a whale a mammal? A: The answer is yes."]
CONTRAST = ["Q: Where would you keep milk cold? A: The answer is oven.", "Q: Is a whale a fish? A: The answer is no."]
ROWS = [
    {"id": str(i), "question": q, "choices": ["fridge", "oven", "shelf"], "answer": a, "rationale": ""}
    for i, (q, a) in enumerate([("Where is milk kept cold?", "fridge"), ("Where do you bake bread?", "oven"),
                                ("Where do you put books?", "shelf")])
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("teacher")
    p.add_argument("out")
    p.add_argument("--tp", action="store_true")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    kwargs = {"distributed_config": DistributedConfig(tp_plan="auto")} if args.tp else {}
    model = AutoModelForCausalLM.from_pretrained(args.teacher, **kwargs).eval()
    tok = AutoTokenizer.from_pretrained(args.teacher, padding_side="left")
    rank = int(os.environ.get("RANK", "0"))
    sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())

    gold = tok(GOLD, return_tensors="pt", padding=True).to(model.device)
    con = tok(CONTRAST, return_tensors="pt", padding=True).to(model.device)
    proc = ContrastiveRationaleLogitsProcessor(model, con.input_ids, con.attention_mask, alpha=0.3)
    results = {"sharded": sharded, "world": int(os.environ.get("WORLD_SIZE", "1"))}
    with proc:
        out = model.generate(**gold, **proc.generate_kwargs(), max_new_tokens=8, do_sample=False, pad_token_id=0)
    results["processor_greedy"] = out[:, gold.input_ids.shape[1]:].tolist()
    with proc:
        out = model.generate(**gold, **proc.generate_kwargs(), max_new_tokens=6, num_beams=3, pad_token_id=0)
    results["processor_beams"] = out[:, gold.input_ids.shape[1]:].tolist()
    results["fused"] = contrastive_generate(model, tok, GOLD, CONTRAST, alpha=0.3, max_new_tokens=8,
                                            do_sample=False).tolist()
    data = datasets.Dataset.from_list(ROWS)
    for fused in (True, False):
        rz = generate_rationales(data, model, tok, task="csqa", batch_size=2, max_new_tokens=5, use_fused=fused,
                                 show_progress=False, output_dir=os.path.join(os.path.dirname(args.out), f"rz{fused}"))
        results[f"rationales_fused={fused}"] = list(rz["rationale"]) + list(rz["counterfactual_rationale"])
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(results, f)
    # as the CLI dispatcher does: a gloo group alive at interpreter shutdown can abort the rank (SIGABRT)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
