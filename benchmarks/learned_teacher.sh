#!/usr/bin/env bash
# A learned pixel teacher for a task, made as the quickstart makes its PushCube teacher: 100
# motion-planned demos made 4x faster (`rpd demos speedup`), a `cnn-tiny` teacher fine-tuned on
# them for 3,000 steps at 64 px, measured on 50 episodes at horizon 50 on the
# teacher-evaluation seeds. The paper's teachers are VLAs fine-tuned on such demos; this is
# the small one a CPU can make.
#
#     [TASK=T] [KIND=K] [DEMOS=N] [TEACHER_STEPS=K] [IMAGE=PX] [SPEEDUP=F] [MODES="receding ensemble"] [RESULTS=DIR] \
#         nice -n 10 bash benchmarks/learned_teacher.sh WORK
#
# KIND: cnn-tiny (default; batch 64, lr 1e-3, the quickstart's) or octo-small (rpd's default
# kind with the pixel students' teacher B options: 64 px, patch 4, 8 x 8 image tokens, batch 32,
# lr 3e-4).
# TASK: PickCube-v1 (default) or StackCube-v1 (any task with a motion-planning solution). DEMOS
# (default 100) planned demos, of which the fast copy keeps those whose merged replay succeeds;
# TEACHER_STEPS (default 3000) fine-tuning steps; IMAGE (default 64) the teacher's frame side in
# pixels (a PickCube cube is a few pixels wide at 64); SPEEDUP (default 4, 2 to 8) the actions
# merged into one (PickCube's planned demos take ≈ 78 steps: 4 makes ≈ 20, 2 ≈ 39 with finer moves
# and more kept). The teacher is WORK/teachers/TASK-NAME, NAME = KIND-dN-sK (with -xF when SPEEDUP
# is not 4, -pxPX when IMAGE is not 64); its evaluation is copied to
# RESULTS/teacher-NAME-h50.json (default
# docs/results/TASK-learned-teacher), whose teachers.json `benchmarks/teacher_rows.py` remakes,
# and the fast demos' summary (`rpd demos info --json`: episodes kept, lengths) to
# RESULTS/demos-dN-xF.json. MODES (default none) are further chunk modes to measure the
# teacher in besides labelling (`rpd eval --chunk-mode`: receding, ensemble), each copied to
# RESULTS/teacher-NAME-h50-MODE.json.
# Resumable: each finished step is skipped, an interrupted fine-tuning resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 WORK" >&2; exit 2; }
work=$1
rpd=("${PYTHON:-.venv/bin/python}" -m rpd.cli)
task=${TASK:-PickCube-v1}
results=${RESULTS:-docs/results/$task-learned-teacher}
num=${DEMOS:-100}
steps=${TEACHER_STEPS:-3000}
image=${IMAGE:-64}
factor=${SPEEDUP:-4}
read -ra modes <<<"${MODES:-}"
for m in "${modes[@]}"; do
  [[ $m =~ ^(receding|ensemble)$ ]] || { echo "MODES: '$m' is not a chunk mode; give receding and/or ensemble" >&2; exit 2; }
done
[[ $factor =~ ^[2-8]$ ]] || { echo "SPEEDUP=$factor: give a factor from 2 to 8" >&2; exit 2; }
for v in "DEMOS=$num" "TEACHER_STEPS=$steps" "IMAGE=$image"; do
  [[ ${v#*=} =~ ^[1-9][0-9]*$ ]] || { echo "$v: give a whole number above 0" >&2; exit 2; }
done
demos_dir=$work/demos/$task-d$num
fast=$demos_dir/trajectory.x$factor.none.pd_ee_delta_pose.physx_cpu.h5
kind=${KIND:-cnn-tiny}
case $kind in
  cnn-tiny) kind_args=(--kind cnn-tiny --size small --batch-size 64 --lr 1e-3) ;;
  octo-small) kind_args=(--kind octo-small --option patch=4 --option image_tokens_side=8) ;;
  *) echo "KIND=$kind: pick cnn-tiny or octo-small" >&2; exit 2 ;;
esac
name=$kind-d$num-s$steps
[ "$factor" = 4 ] || name=$name-x$factor
[ "$image" = 64 ] || name=$name-px$image
teacher=$work/teachers/$task-$name

planned=$demos_dir/trajectory.none.pd_ee_delta_pose.physx_cpu.h5
if [ ! -f "$planned" ]; then
  "${rpd[@]}" demos generate --env "$task" --num "$num" --seed 0 --workers 1 --out "$demos_dir" \
    --speedup "$factor"
elif [ ! -f "$fast" ]; then  # planned, but the fast copy was cut off (or another factor)
  "${rpd[@]}" demos speedup "$planned" --factor "$factor" --out "$fast"
fi
if [ ! -f "$teacher/teacher.json" ]; then
  resume=()
  [ -f "$teacher/train_state.pt" ] && resume=(--resume)
  "${rpd[@]}" finetune-teacher --demos "$fast" --out "$teacher" "${kind_args[@]}" \
    --steps "$steps" --image-size "$image" --workers 1 --threads 1 "${resume[@]}"
fi
if [ ! -f "$teacher/eval/$task-h50.json" ]; then
  "${rpd[@]}" eval --teacher "$teacher" --env "$task" --episodes 50 --horizon 50 --workers 1
fi
mkdir -p "$results"
"${rpd[@]}" demos info --json "$fast" >"$results/demos-d$num-x$factor.json"
cp "$teacher/eval/$task-h50.json" "$results/teacher-$name-h50.json"
echo "teacher $teacher: evaluation in $results/teacher-$name-h50.json"
for m in "${modes[@]}"; do
  if [ ! -f "$teacher/eval/$task-h50-$m.json" ]; then
    "${rpd[@]}" eval --teacher "$teacher" --env "$task" --episodes 50 --horizon 50 --workers 1 \
      --chunk-mode "$m"
  fi
  cp "$teacher/eval/$task-h50-$m.json" "$results/teacher-$name-h50-$m.json"
  echo "teacher $teacher: $m evaluation in $results/teacher-$name-h50-$m.json"
done
