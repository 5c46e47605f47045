#!/usr/bin/env bash
# Every figure on the Benchmarks and Deployment pages, measured in one sitting and written as
# records (`benchmarks/record.py`) to RESULTS (default docs/results/benchmarks), which those
# pages show through the docs hook. Give it the machine: other work skews every row.
#
#     [RESULTS=DIR] bash benchmarks/measure_all.sh [NAME ...]
#
# NAMEs (default: all, in this order): throughput pixels export
# teacher lookup labels.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${RESULTS:-docs/results/benchmarks}
names=(throughput pixels export teacher lookup labels)
[ $# -gt 0 ] || set -- "${names[@]}"
for n in "$@"; do
  [[ " ${names[*]} " == *" $n "* ]] || { echo "unknown benchmark '$n': pick from ${names[*]}" >&2; exit 2; }
done
for n in "$@"; do
  echo "== $n"
  case $n in
    throughput) "$py" benchmarks/bench_throughput.py --steps 8192 --vec-envs 8 --workers 2 \
                  --out "$out" ;;
    pixels) "$py" benchmarks/bench_pixels.py --steps 2048 --sizes 64 --lp-threads 1 \
              --env-counts 8 --out "$out" ;;
    export) "$py" benchmarks/bench_export.py --out "$out" ;;
    teacher) "$py" benchmarks/bench_teacher.py --size small --batch 1 32 128 --out "$out" ;;
    lookup) "$py" benchmarks/bench_cache_lookup.py --out "$out" ;;
    labels) "$py" benchmarks/bench_cache_labels.py --out "$out" ;;
  esac
done
