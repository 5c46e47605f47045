#!/usr/bin/env bash
# The state students of sparse PushCube and PullCube: RPD against plain PPO with identical
# settings, three independent seeds each, scripted teachers of controlled error, on the seed
# plan (held-out episodes no demo, training or in-training evaluation used).
#
#     [SEEDS=0,1,2] [RESULTS=DIR] nice -n 10 bash benchmarks/state_students.sh WORK TASK
#
# TASK is push (PushCube-v1, teacher `--offset 0 0.035 0`) or pull (PullCube-v1, teacher
# `--offset 0 0.045 0`). Each is one `rpd run`: the teacher measured at the students' horizon
# (50 episodes), then per seed an RPD run (λ 1 -> 0 cosine by 60k, every transition labelled
# while λ > 0) and a PPO run (`--no-teacher`), 100k env steps, 8 envs, 20 evaluation episodes
# every 10k, each final student scored on 50 held-out episodes. Two tasks side by side share
# the CPU cores. Resumable: re-running the same command continues where the chain stopped.
#
# The files the published table is made from (each run's config.json, eval.csv, student.json
# and held-out JSON, the teacher's evaluation) are copied to RESULTS/RUN/ (default
# docs/results/ENV-sparse-seeds), and its report.md is regenerated from them.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 WORK push|pull" >&2; exit 2; }
work=$(realpath -m -- "$1")  # before the cd below: WORK is relative to where it was given
cd "$(dirname "$0")/.."
case $2 in
  push) env=PushCube-v1; offset=(0 0.035 0); teacher=$work/teachers/push-y035 ;;
  pull) env=PullCube-v1; offset=(0 0.045 0); teacher=$work/teachers/pull-y045 ;;
  *) echo "unknown task '$2': pick push or pull" >&2; exit 2 ;;
esac
rpd=("${PYTHON:-.venv/bin/python}" -m rpd.cli)
results=${RESULTS:-docs/results/$env-sparse-seeds}
case $results in
  docs/results/*) ;;
  *) echo "RESULTS=$results: give a folder under docs/results/, relative to the repository" >&2
     exit 2 ;;
esac
chain=$work/$env-sparse

[ -f "$teacher/teacher.json" ] || "${rpd[@]}" scripted-teacher --env "$env" \
  --offset "${offset[@]}" --out "$teacher"
"${rpd[@]}" run --env "$env" --reward sparse --teacher "$teacher" --teacher-horizon 50 \
  --steps 100000 --seeds "${SEEDS:-0,1,2}" --envs 8 --lambda-decay-steps 60000 \
  --eval-every 10000 --eval-episodes 20 --heldout-episodes 50 --out "$chain"

mkdir -p "$results"
cp "$chain/eval/teacher-$env-h50.json" "$results/teacher-h50.json"
args=()
for run in "$chain"/runs/*/; do
  name=$(basename "$run")
  held=$run/eval/$env-h50-heldout.json
  if [ ! -f "$run/student.json" ] || [ ! -f "$held" ]; then
    echo "$name: unfinished (no student.json or held-out evaluation), left out" >&2
    continue
  fi
  mkdir -p "$results/$name/eval"
  cp "$run/config.json" "$run/eval.csv" "$run/student.json" "$results/$name/"
  cp "$held" "$results/$name/eval/"
  args+=("$results/$name")
done
args+=(--teacher-eval "$results/teacher-h50.json")
printf '%q ' "${args[@]}" | sed 's/ $/\n/' > "$results/report-args.txt"
"${rpd[@]}" report "${args[@]}" --out "$results"
