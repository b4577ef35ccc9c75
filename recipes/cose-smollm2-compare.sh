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
fail() { echo "cose-smollm2-compare.sh: $*" >&2; exit 2; }
[[ $parallel =~ ^[1-9][0-9]*$ ]] || fail "PARALLEL must be a positive integer, got '$parallel'"
((${#seeds[@]})) || fail "SEEDS is empty"
for seed in "${seeds[@]}"; do  # written as the recipe writes them (seed_<s>/), each once
  [[ $seed =~ ^(0|[1-9][0-9]*)$ ]] || fail "SEEDS must be integers without leading zeros, got '$seed'"
done
[[ $(printf '%s\n' "${seeds[@]}" | sort | uniq -d) == "" ]] || fail "SEEDS names a seed twice: ${seeds[*]}"
for cell in "${cells[@]}"; do
  [[ $cell =~ ^(greedy|contrastive)-a(0|1|1\.0+|0?\.[0-9]+)$ ]] \
    || fail "CELLS names <greedy|contrastive>-a<alpha in [0, 1]>, e.g. contrastive-a0.5; got '$cell'"
done
[[ $(printf '%s\n' "${cells[@]}" | sort | uniq -d) == "" ]] || fail "CELLS names a cell twice: ${cells[*]}"
for arg in "$@"; do  # the script sets these per run: a user's value would silently win (argparse keeps the last)
  key=${arg%%=*}
  key=${key#--}
  case ${key//-/_} in  # either spelling: --output-dir, --train.counterfactual-alpha
    output_dir | seeds | stage | rationalize.perturbation | train.counterfactual_alpha)
      fail "$arg is set by the script for each run (OUT_DIR, SEEDS, CELLS); leave it out" ;;
  esac
done
mkdir -p "$out"
# a stopped script stops its recipe runs too: a resume must not meet an old run still writing the same folder
# each background job gets its own process group (job control), so that a stop reaches the subshell and the
# `scott-distill run` it may be starting at that very moment alike (killing the children, then the subshell, let a
# run started in between survive)
set -m
stop_runs() {
  local pid
  for pid in $(jobs -p); do kill -TERM -- "-$pid" 2>/dev/null; done
}
trap 'trap - INT TERM; stop_runs; exit 143' INT TERM

perturbation() { [[ $1 == greedy-* ]] && echo none || echo wrong; }  # contrastive: against a wrong answer
alpha() { echo "${1##*-a}"; }
teacher_cell() { echo "${1%-a*}-a0.5"; }  # the cell whose folder holds its decoding's rationales

running=0
launch() {  # run "$@" in the background, at most PARALLEL at once
  "$@" &
  running=$((running + 1))
  if ((running >= parallel)); then wait -n || true; running=$((running - 1)); fi
}
recipe_run() {  # cell, log name, then more arguments for `scott-distill run`; the log goes to OUT_DIR/<log>
  local cell=$1 log=$2; shift 2
  scott-distill run "$recipe" --output_dir "$out/$cell" --rationalize.perturbation "$(perturbation "$cell")" \
    --train.counterfactual_alpha "$(alpha "$cell")" "$@" > "$out/$log" 2>&1 \
    || { echo "$log: failed, see $out/$log" >&2; return 1; }
}
done_seeds() {  # the seeds of a cell that have their results
  local cell=$1 seed
  for seed in "${seeds[@]}"; do [[ -f $out/$cell/seed_$seed/results.json ]] && printf '%s ' "$seed"; done
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
  if [[ $cell != "$t" && ! -d $out/$cell/rationales ]]; then  # copied whole or not at all: a kill leaves no half
    mkdir -p "$out/$cell" && rm -rf "$out/$cell/.rationales.tmp"
    cp -r "$out/$t/rationales" "$out/$cell/.rationales.tmp" && mv "$out/$cell/.rationales.tmp" "$out/$cell/rationales"
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

# 4. each cell's report over the seeds that finished, then the cells against each other; a failed run is named
#    and makes the exit status 1, after the reports of what did finish
failed=0
runs=()
for cell in "${cells[@]}"; do
  read -r -a finished <<< "$(done_seeds "$cell")"
  if ((${#finished[@]} < ${#seeds[@]})); then
    echo "$cell: seeds ${finished[*]:-none} of ${seeds[*]} finished (see $out/$cell.seed_*.log)" >&2
    failed=1
  fi
  ((${#finished[@]})) || continue
  # in the background, so that a stop signal reaches the script at once (bash runs a trap after the foreground job)
  recipe_run "$cell" "$cell.report.log" --seeds "${finished[@]}" --stage evaluate "$@" &
  wait $! || { failed=1; continue; }
  runs+=("$out/$cell")
done
if ((${#runs[@]})); then
  scott-distill report "${runs[@]}" --output_dir "$out/report" \
    --title "SCOTT on CoS-E, SmolLM2-135M teacher and student: decoding x counterfactual alpha" &
  wait $! || failed=1
fi
exit "$failed"
