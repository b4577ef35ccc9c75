#!/usr/bin/env bash
# The comparison SCOTT is about, on real models (recipes/cose-smollm2.yaml): students trained on greedy vs
# contrastive rationales, each with counterfactual training off (alpha 0) and on (alpha 0.5), several student seeds
# each, then one report across the four cells with paired differences.
#
#   recipes/cose-smollm2-compare.sh OUT_DIR [--FIELD VALUE ...]
#
# Extra arguments go to every `scott-distill run` (data paths, sizes, --teacher_dtype bfloat16 on a GPU, ...).
# Environment: SEEDS (student seeds, default "0 1 2"), PARALLEL (recipe runs at once, default 1; several runs can
# share one GPU, which one small model leaves mostly idle), CELLS (default all four:
# "greedy-a0 greedy-a0.5 contrastive-a0 contrastive-a0.5"), TEACHER_ONLY=1 (stop after the teacher's rationales:
# make them on one machine, train the students on another).
#
# Layout: OUT_DIR/<decoding>-a<alpha>/ is one recipe run (its seeds in seed_<s>/, its report over the seeds);
# OUT_DIR/report/ compares the cells. The teacher runs once per decoding; the alpha-0 cell shares the rationales
# of its decoding's alpha-0.5 cell. Every stage is cached, so the same command resumes a stopped comparison.
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -ge 1 ]] && exit 0 || exit 2
fi
out=$1; shift
recipe=$(cd "$(dirname "$0")" && pwd)/cose-smollm2.yaml
read -r -a seeds <<< "${SEEDS:-0 1 2}"
read -r -a cells <<< "${CELLS:-greedy-a0 greedy-a0.5 contrastive-a0 contrastive-a0.5}"
parallel=${PARALLEL:-1}
mkdir -p "$out"

perturbation() { [[ $1 == greedy-* ]] && echo none || echo wrong; }  # contrastive: against a wrong answer
alpha() { echo "${1##*-a}"; }
teacher_cell() { echo "${1%-a*}-a0.5"; }  # the cell whose folder holds its decoding's rationales

running=0
launch() {  # run "$@" in the background, at most PARALLEL at once
  "$@" &
  running=$((running + 1))
  if ((running >= parallel)); then wait -n || true; running=$((running - 1)); fi
}
recipe_run() {  # cell, then more arguments for `scott-distill run`; the log goes to OUT_DIR/<cell>[.seed_<s>].log
  local cell=$1 log=$2; shift 2
  scott-distill run "$recipe" --output_dir "$out/$cell" --rationalize.perturbation "$(perturbation "$cell")" \
    --train.counterfactual_alpha "$(alpha "$cell")" "$@" > "$out/$log" 2>&1 \
    || { echo "$log: failed, see $out/$log" >&2; return 1; }
}

# 1. the teacher, once per decoding
decodings=()
for cell in "${cells[@]}"; do
  t=$(teacher_cell "$cell")
  [[ " ${decodings[*]} " == *" $t "* ]] || decodings+=("$t")
done
for t in "${decodings[@]}"; do launch recipe_run "$t" "$t.rationalize.log" --stage rationalize "$@"; done
wait
for t in "${decodings[@]}"; do
  [[ -f $out/$t/rationales/eval/dataset/dataset_info.json ]] || { echo "no rationales in $out/$t" >&2; exit 1; }
done

# 2. the alpha-0 cells share their decoding's rationales
for cell in "${cells[@]}"; do
  t=$(teacher_cell "$cell")
  if [[ $cell != "$t" && ! -d $out/$cell/rationales ]]; then
    mkdir -p "$out/$cell" && cp -r "$out/$t/rationales" "$out/$cell/rationales"
  fi
done

if [[ -n ${TEACHER_ONLY:-} ]]; then echo "rationales in ${decodings[*]/#/$out/}"; exit 0; fi

# 3. one student per (cell, seed), seed after seed; two seeds of a cell may write its report at once, so the
#    reports are made again in step 4
running=0
for seed in "${seeds[@]}"; do
  for cell in "${cells[@]}"; do launch recipe_run "$cell" "$cell.seed_$seed.log" --seeds "$seed" "$@"; done
done
wait

# 4. each cell's report over its seeds, then the cells against each other
for cell in "${cells[@]}"; do recipe_run "$cell" "$cell.report.log" --seeds "${seeds[@]}" --stage evaluate "$@"; done
runs=()
for cell in "${cells[@]}"; do runs+=("$out/$cell"); done
scott-distill report "${runs[@]}" --output_dir "$out/report" \
  --title "SCOTT on CoS-E, SmolLM2-135M teacher and student: decoding x counterfactual alpha"
