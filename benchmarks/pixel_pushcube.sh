#!/usr/bin/env bash
# Reproduce the README's "Pixel students on sparse PushCube" results, one run after
# another, resumable: a finished step is skipped, an interrupted run resumes from its last
# checkpoint (`rpd train --resume`). Pixel runs are render-bound on a CPU (≈ 35 env steps/s
# alone on 2 cores, 3–6 h per 300k run), so run this in the background under nice:
#
#     [STEPS=N] [PREP=N] nice -n 10 bash benchmarks/pixel_pushcube.sh WORK [RUN ...]
#
# Two chains side by side, each with its own RUNs, finish sooner than one with all of them:
# on 2026-12-02 two runs made ≈ 21–26 env steps/s each, one alone ≈ 29.
# PREP is the processes and torch threads for making the demos and teacher B (default 1: two
# chains side by side share 2 cores). A chain alone can take 2: on 2026-12-02 that made the
# demos in 1 min and teacher B in ≈ 31 min (50 min with 1 beside a training run).
# STEPS is each run's budget (default 300000, the issue's). A run finished at a smaller budget
# continues to a larger one when the chain runs again with it (`rpd train --resume --steps`);
# its held-out files are then made again, and those of the smaller budget are renamed
# RUN/heldout-final-STEP.json and RUN/heldout-best-STEP.json.
# WORK holds the demos, the teachers and runs/ (created if missing). RUN names which runs to
# do, in order (default: all of them, in the order below). Each run logs to WORK/RUN.log.
# A finished run is then evaluated on held-out episodes (`rpd eval --held-out`: 50 from the seed
# plan's held-out range, the task's horizon of 50; the training evaluations use the evaluation
# range), its final policy and its best checkpoint: RUN/heldout-final.json and
# RUN/heldout-best.json.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 WORK [RUN ...]" >&2; exit 2; }
work=$1; shift
rpd=(.venv/bin/rpd)

demos=$work/demos/PushCube-v1/trajectory.x4.none.pd_ee_delta_pose.physx_cpu.h5
teacher_a=$work/teachers/push-y035
teacher_b=$work/teachers/octo64-p4t8
prep=${PREP:-1}

need_demos() {
  [ -f "$demos" ] && return
  "${rpd[@]}" demos generate --env PushCube-v1 --num 100 --seed 0 --workers "$prep" \
    --out "$work/demos/PushCube-v1" --speedup 4
}
need_teacher_a() {
  [ -f "$teacher_a/teacher.json" ] && return
  "${rpd[@]}" scripted-teacher --env PushCube-v1 --offset 0 0.035 0 --out "$teacher_a"
}
need_teacher_b() {
  local resume=()
  if [ -f "$teacher_b/train_state.pt" ]; then resume=(--resume)
  elif [ -f "$teacher_b/teacher.json" ]; then return; fi
  need_demos
  "${rpd[@]}" finetune-teacher --demos "$demos" --out "$teacher_b" --image-size 64 \
    --threads "$prep" --workers "$prep" --option patch=4 --option image_tokens_side=8 \
    "${resume[@]}"
}

steps=${STEPS:-300000}
common=(--env PushCube-v1 --reward sparse --steps "$steps" --envs 8 --eval-every 10000
        --eval-episodes 20 --obs rgb --student-image-size 64 --checkpoint-every 2048)
rpd_args=(--lambda 1 --lambda-schedule cosine --lambda-decay-steps 60000 --label-replay 20000)

heldout() {  # heldout RUN_DIR NAME
  local which
  for which in final best; do
    [ -f "$1/heldout-$which.json" ] && continue
    echo "$2: held-out evaluation of its $which policy"
    "${rpd[@]}" eval --student "$1" --env PushCube-v1 --episodes 50 --held-out \
      --checkpoint "$which" --json "$1/heldout-$which.json" >>"$work/$2.log" 2>&1 \
      || echo "$2: held-out evaluation failed, see $work/$2.log (the chain goes on)"
  done
}

run() {  # run NAME SEED ARGS...
  local name=$1 seed=$2; shift 2
  local out=$work/runs/PushCube-v1-sparse-$name
  local done_steps=0
  [ -f "$out/student.json" ] && done_steps=$(.venv/bin/python -c \
    "import json, sys; print(json.load(open(sys.argv[1]))['metrics']['steps'])" \
    "$out/student.json")
  if [ "$done_steps" -ge "$steps" ]; then
    echo "$name: finished at $done_steps steps"
  else
    local resume=()
    [ -f "$out/config.json" ] && resume=(--resume)
    local f  # the held-out results of a smaller budget stay, named by its step
    for f in "$out/heldout-final.json" "$out/heldout-best.json"; do
      if [ -f "$f" ]; then mv "$f" "${f%.json}-$done_steps.json"; fi
    done
    echo "$name: training (log $work/$name.log)"
    "${rpd[@]}" train "${common[@]}" --seed "$seed" "$@" "${resume[@]}" --out "$out" \
      >>"$work/$name.log" 2>&1
  fi
  heldout "$out" "$name"
}

do_run() {
  case $1 in
    ppo-s0)          run ppo-s0 0 --no-teacher ;;
    ppo-s1)          run ppo-s1 1 --no-teacher ;;
    rpdA-s0)         need_teacher_a; run rpdA-s0 0 --teacher "$teacher_a" "${rpd_args[@]}" ;;
    rpdA-critic-s0)  need_teacher_a  # the asymmetric critic against rpdA-s0, same seed
                     run rpdA-critic-s0 0 --teacher "$teacher_a" "${rpd_args[@]}" --critic-state ;;
    rpdB-s0)         need_teacher_b; run rpdB-s0 0 --teacher "$teacher_b" "${rpd_args[@]}" ;;
    rpdB-s1)         need_teacher_b; run rpdB-s1 1 --teacher "$teacher_b" "${rpd_args[@]}" ;;
    rpdB-shift15-s0) need_teacher_b
                     run rpdB-shift15-s0 0 --teacher "$teacher_b" --teacher-camera-shift 15 \
                       "${rpd_args[@]}" ;;
    # The asymmetric critic (--critic-state) with teacher B and without a teacher: the
    # baseline for both critic RPD runs, and the robustness run with the recommended recipe.
    ppo-critic-s0)   run ppo-critic-s0 0 --no-teacher --critic-state ;;
    rpdB-critic-s0)  need_teacher_b
                     run rpdB-critic-s0 0 --teacher "$teacher_b" "${rpd_args[@]}" --critic-state ;;
    # Second seeds of the critic comparison (teacher B with and without the teacher).
    ppo-critic-s1)   run ppo-critic-s1 1 --no-teacher --critic-state ;;
    rpdB-critic-s1)  need_teacher_b
                     run rpdB-critic-s1 1 --teacher "$teacher_b" "${rpd_args[@]}" --critic-state ;;
    rpdB-critic-shift15-s0) need_teacher_b
                     run rpdB-critic-shift15-s0 0 --teacher "$teacher_b" --teacher-camera-shift 15 \
                       "${rpd_args[@]}" --critic-state ;;
    teacher-b)       need_teacher_b ;;
  esac
}

runs=(rpdB-s0 ppo-s0 rpdB-s1 ppo-s1 rpdB-shift15-s0 rpdA-s0 rpdA-critic-s0 ppo-critic-s0
      rpdB-critic-s0 rpdB-critic-shift15-s0 rpdB-critic-s1 ppo-critic-s1)
[ $# -gt 0 ] || set -- "${runs[@]}"
for r in "$@"; do
  [[ " ${runs[*]} teacher-b " == *" $r "* ]] \
    || { echo "unknown run '$r': pick from ${runs[*]} teacher-b" >&2; exit 2; }
done
# Two chains side by side (one per core) may need the same demos or teacher at once: the one
# that comes second waits for the first to make them, then skips the step.
mkdir -p "$work/runs"
exec {lock}>"$work/.make.lock"
for r in "$@"; do
  flock "$lock"
  case $r in rpdA-*) need_teacher_a ;; rpdB-*|teacher-b) need_teacher_b ;; esac
  flock -u "$lock"
  do_run "$r"
done
