#!/usr/bin/env bash
# The PickCube recipe screen: which lever lets RPD build on a weak teacher on dense PickCube-v1
# (the paper's headline task)? One seed each, a state student, the scripted 18 % teacher
# (`--offset 0.0275 0 0`), up to STEPS env steps (default 300000), against the published runs
# whose λ fell to 0 by 60k (docs/results/PickCube-v1-dense-evals/).
#
#     [TASK=T] [STEPS=N] [SEED=S] [RESULTS=DIR] nice -n 10 bash benchmarks/dense_screen.sh WORK [RUN ...]
#
# TASK (default PickCube-v1) may also be StackCube-v1: the same recipes on dense StackCube, with
# the scripted stack teacher `--offset 0.015 0 0` (10 % at horizon 50), results in
# docs/results/StackCube-v1-dense-screen.
#
# RUNs (default: the first seven, in this order), each the recipe `pickcube-RUN` (`rpd recipes`):
#   const     rpd's defaults with λ = 1 constant (the paper's λ)
#   ref       the reference code's recipe: λ = 1 constant, 50-step rollouts, target KL 0.2,
#             log std -0.5, 32 envs x 50 = 1,600 samples per update in 4 minibatches
#   envs32    rpd's defaults, λ = 1 constant, 32 envs (2,048 samples per update)
#   replay    rpd's defaults, λ = 1 constant, --label-replay 20000
#   ppo-ref, ppo-const   plain PPO with the same recipe (--no-teacher), the baselines
#   adaptive  rpd's defaults, --lambda-schedule adaptive (λ held until the student passes
#             the teacher's measured success, then halved per evaluation while it stays ahead)
#   ref-adaptive  the reference recipe with --lambda-schedule adaptive (`pickcube-ref-adaptive`):
#             does a λ that decays once the student is ahead keep it from being pulled back
#             toward its teacher late in the run?
#   pixel     the reference recipe with a pixel student (`pickcube-pixel`: 64 px rgb, the
#             asymmetric critic): the paper's own student setting. Render-bound, ≈ 25–45 env
#             steps/s on 2 cores, so hours per 100k steps; run it with its own RESULTS folder
#   copy      the copy bar: rpd's defaults with λ = 1 constant (`pickcube-const`) and the
#             exact scripted teacher (`--offset 0 0 0`, measured into teacher-exact-h50.json):
#             can the student copy a teacher that succeeds? (the bar: ≥ 0.8 held out within
#             100k, so STEPS=100000, with its own RESULTS folder)
#
# SEED (default 0) is the training seed; a run with SEED=S > 0 is named RUN-sS, so further seeds
# of a screened recipe (the RPD/PPO comparison: `ref` and `ppo-ref` with SEED=1 and 2) sit beside
# seed 0, and `rpd report` pools them as seeds of one group.
#
# Resumable: a finished run is skipped, an interrupted one resumes from its last checkpoint
# (every 10k steps). Two chains side by side, each with its own RUNs, share the CPU cores. When a
# run finishes, its final policy and its best evaluation's (`--checkpoint best`) are each scored
# on 50 held-out episodes (`rpd eval --held-out`), and its config.json, eval.csv, student.json
# and held-out JSONs (in eval/) are copied to RESULTS/RUN/
# (default docs/results/TASK-dense-screen), the files the published table is made from;
# add RUN to that folder's report-args.txt and regenerate its report.md with `rpd report`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 WORK [RUN ...]" >&2; exit 2; }
work=$1; shift
rpd=("${PYTHON:-.venv/bin/python}" -m rpd.cli)
source benchmarks/chain_lib.sh
task=${TASK:-PickCube-v1}
case $task in
  PickCube-v1) teacher=$work/teachers/pick-x275; offset=(0.0275 0 0) ;;
  StackCube-v1) teacher=$work/teachers/stack-x015; offset=(0.015 0 0) ;;
  *) echo "TASK=$task: pick PickCube-v1 or StackCube-v1" >&2; exit 2 ;;
esac
exact=$work/teachers/${task%%-*}-exact
results=${RESULTS:-docs/results/$task-dense-screen}
steps=${STEPS:-300000}

need_teacher() {  # need_teacher DIR FILE OFFSET...: a scripted teacher measured at horizon 50
  local dir=$1 file=$2; shift 2
  if [ ! -f "$dir/teacher.json" ]; then
    "${rpd[@]}" scripted-teacher --env "$task" --offset "$@" --out "$dir"
  fi
  if [ ! -f "$dir/eval/$task-h50.json" ]; then
    "${rpd[@]}" eval --teacher "$dir" --env "$task" --episodes 50 --horizon 50 \
      --workers 1
  fi
  mkdir -p "$results"
  cp "$dir/eval/$task-h50.json" "$results/$file"
}

seed=${SEED:-0}
[[ $seed =~ ^(0|[1-9][0-9]*)$ ]] || { echo "SEED=$seed: give a whole number" >&2; exit 2; }
common=(--env "$task" --steps "$steps" --seed "$seed")
suffix=""
[ "$seed" = 0 ] || suffix="-s$seed"


run() {  # run NAME ARGS...
  local name=$1$suffix; shift
  local out=$work/runs/$task-dense-$name
  local done_steps=0
  [ -f "$out/student.json" ] && done_steps=$("${rpd[0]}" -c \
    "import json, sys; print(json.load(open(sys.argv[1]))['metrics']['steps'])" \
    "$out/student.json")
  if [ "$done_steps" -lt "$steps" ]; then
    local resume=()
    [ -f "$out/config.json" ] && resume=(--resume)
    echo "$name: training (log $work/$task-$name.log)"
    local teacher_args=(--teacher "${run_teacher:-$teacher}")
    [[ " $* " == *" --no-teacher "* ]] && teacher_args=()
    "${rpd[@]}" train "${common[@]}" "${teacher_args[@]}" "$@" "${resume[@]}" --out "$out" \
      >>"$work/$task-$name.log" 2>&1
  fi
  local held=$out/eval/$task-h50-heldout.json
  if ! held_out_current "$held" "$out/student.json"; then  # none, or an earlier run's
    echo "$name: held-out evaluation"
    "${rpd[@]}" eval --student "$out" --env "$task" --episodes 50 --held-out \
      --workers 1 >>"$work/$task-$name.log" 2>&1
  fi
  local best=$out/eval/$task-h50-best-heldout.json  # the best evaluation's policy, held out
  if [ -f "$out/checkpoints/best.json" ] && ! held_out_current "$best" "$out/checkpoints/best.json"
  then
    echo "$name: held-out evaluation of the best checkpoint"
    "${rpd[@]}" eval --student "$out" --env "$task" --episodes 50 --held-out \
      --checkpoint best --workers 1 >>"$work/$task-$name.log" 2>&1
  fi
  mkdir -p "$results/$name/eval"
  cp "$out/config.json" "$out/eval.csv" "$out/student.json" "$results/$name/"
  cp "$held" "$results/$name/eval/"
  [ ! -f "$best" ] || cp "$best" "$results/$name/eval/"
  echo "$name: done, files in $results/$name"
}

do_run() {  # each run's settings are the recipe rpd ships as pickcube-RUN (`rpd recipes`)
  case $1 in
    ppo-*) run "$1" --config "pickcube-${1#ppo-}" --no-teacher ;;  # the same recipe, no teacher
    copy)  # the copy bar: rpd's defaults (pickcube-const) with the exact scripted teacher
      need_teacher "$exact" teacher-exact-h50.json 0 0 0
      run_teacher=$exact run copy --config pickcube-const ;;
    *)     run "$1" --config "pickcube-$1" ;;
  esac
}

runs=(const ref envs32 replay adaptive ppo-ref ppo-const ref-adaptive pixel copy)
[ $# -gt 0 ] || set -- "${runs[@]:0:7}"  # the screen; the others when named
for r in "$@"; do
  [[ " ${runs[*]} " == *" $r "* ]] || { echo "unknown run '$r': pick from ${runs[*]}" >&2; exit 2; }
done
mkdir -p "$work/runs"
for r in "$@"; do  # the offset teacher, unless the copy bar is all that runs
  [ "$r" = copy ] || { need_teacher "$teacher" teacher-h50.json "${offset[@]}"; break; }
done
for r in "$@"; do do_run "$r"; done
