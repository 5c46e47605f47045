#!/usr/bin/env bash
# Robustness: does a student still beat its teacher when the teacher sees the scene differently
# from the task it was fine-tuned on? Sparse PushCube, the quickstart's cnn-tiny teacher, state
# students with the quickstart's RPD recipe (its committed config.json: 80k env steps, 8 envs,
# λ 1 -> 0 cosine by 48k), three independent seeds per view, on the seed plan.
#
#     [SEEDS="0 1 2"] [TEACHER=DIR] [RESULTS=DIR] [STEPS=N] nice -n 10 bash benchmarks/robustness.sh WORK [VIEW ...]
#
# VIEWs (default: task shift15 ppo, in this order):
#   task      the teacher sees the task's own camera and colours
#   shift15   the teacher's camera rotated 15° about the scene (--teacher-camera-shift 15)
#   green     the cube painted green in the teacher's view, a colour it never saw in
#             fine-tuning (--teacher-object-color green)
#   ppo       plain PPO with the same settings (--no-teacher), the baseline
#
# STEPS overrides the recipe's 80k env steps (a smoke test of the chain).
# TEACHER (default WORK/quickstart/teacher) is a PushCube-v1 pixel teacher; when it is missing,
# the quickstart chain makes it (`rpd run --config quickstart --out WORK/quickstart`, which also
# trains the quickstart's own students). The teacher is first measured in every view at the
# students' horizon (50 episodes, `rpd eval --teacher T --horizon 50 [--camera-shift 15 |
# --object-color green]`). Each student is scored on 50 held-out episodes.
#
# Resumable: a finished run is skipped, an interrupted one resumes. Two chains side by side, each
# with its own VIEWs, share the CPU cores. Each finished run's config.json, eval.csv,
# student.json and held-out JSON, and the teacher's evaluations, are copied to RESULTS (default
# docs/results/PushCube-v1-robustness), whose report.md is regenerated from every run there.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 WORK [VIEW ...]" >&2; exit 2; }
work=$(realpath -m -- "$1"); shift  # before the cd below: WORK is relative to where it was given
teacher=$(realpath -m -- "${TEACHER:-$work/quickstart/teacher}")
cd "$(dirname "$0")/.."
rpd=("${PYTHON:-.venv/bin/python}" -m rpd.cli)
source benchmarks/chain_lib.sh
env=PushCube-v1
results=${RESULTS:-docs/results/$env-robustness}
case $results in
  docs/results/*) ;;
  *) echo "RESULTS=$results: give a folder under docs/results/, relative to the repository" >&2
     exit 2 ;;
esac
recipe=docs/results/quickstart/rpd-s0/config.json  # the quickstart's RPD student
views=(task shift15 green ppo)
[ $# -gt 0 ] || set -- task shift15 ppo
for v in "$@"; do
  [[ " ${views[*]} " == *" $v "* ]] || { echo "unknown view '$v': pick from ${views[*]}" >&2; exit 2; }
done
for s in ${SEEDS:-0 1 2}; do
  [[ $s =~ ^(0|[1-9][0-9]*)$ ]] || { echo "SEEDS: '$s' is not a whole number" >&2; exit 2; }
done

view_args() {  # view_args VIEW train|eval: the options that make a view, into the array `view`
  view=()
  case $1:$2 in
    ppo:train) view=(--no-teacher) ;;
    *:train) view=(--teacher "$teacher") ;;
  esac
  case $1:$2 in
    shift15:train) view+=(--teacher-camera-shift 15) ;;
    shift15:eval) view+=(--camera-shift 15) ;;
    green:train) view+=(--teacher-object-color green) ;;
    green:eval) view+=(--object-color green) ;;
  esac
}
view_suffix() { case $1 in shift15) echo -shift15 ;; green) echo -green ;; esac; }

if [ ! -f "$teacher/teacher.json" ]; then
  [ -z "${TEACHER:-}" ] || { echo "TEACHER=$TEACHER: no teacher.json there" >&2; exit 2; }
  "${rpd[@]}" run --config quickstart --out "$work/quickstart"
fi
mkdir -p "$work/runs" "$results"
for v in "$@"; do
  [ "$v" = ppo ] && continue
  ev=$teacher/eval/$env-h50$(view_suffix "$v").json
  view_args "$v" eval
  [ -f "$ev" ] || "${rpd[@]}" eval --teacher "$teacher" --env "$env" --episodes 50 \
    --horizon 50 --workers 1 ${view[@]+"${view[@]}"}
  cp "$ev" "$results/teacher-h50$(view_suffix "$v").json"
done

for s in ${SEEDS:-0 1 2}; do
  for v in "$@"; do
    name=$v-s$s
    out=$work/runs/$env-robust-$name
    if [ ! -f "$out/student.json" ]; then
      resume=()
      [ -f "$out/config.json" ] && resume=(--resume)
      echo "$name: training (log $work/robust-$name.log)"
      view_args "$v" train
      "${rpd[@]}" train --config "$recipe" --seed "$s" ${STEPS:+--steps "$STEPS"} \
        "${view[@]}" ${resume[@]+"${resume[@]}"} --out "$out" >>"$work/robust-$name.log" 2>&1
    fi
    held=$out/eval/$env-h50-heldout.json
    if ! held_out_current "$held" "$out/student.json"; then  # none, or an earlier run's
      "${rpd[@]}" eval --student "$out" --env "$env" --episodes 50 --held-out --workers 1 \
        >>"$work/robust-$name.log" 2>&1
    fi
    mkdir -p "$results/$name/eval"
    cp "$out/config.json" "$out/eval.csv" "$out/student.json" "$results/$name/"
    cp "$held" "$results/$name/eval/"
    echo "$name: done, files in $results/$name"
  done
done

# the report of every run in RESULTS, each view beside its teacher's success in that view
args=()
for run in "$results"/*/; do args+=("${run%/}"); done
for v in task shift15 green; do  # the teacher's success in each view a student was trained in
  ev=$results/teacher-h50$(view_suffix "$v").json
  if [ -f "$ev" ] && compgen -G "$results/$v-s*/" >/dev/null; then args+=(--teacher-eval "$ev"); fi
done
printf '%q ' "${args[@]}" | sed 's/ $/\n/' > "$results/report-args.txt"
"${rpd[@]}" report "${args[@]}" --out "$results"
