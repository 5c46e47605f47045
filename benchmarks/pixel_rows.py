"""The README's per-run rows for the pixel-student results, read from run dirs.

For each `rpd train` run directory, one markdown table row:

    | NAME | evaluations (eval.csv) | training-episode success per bin | critic's explained
      variance per bin | held out: final / best checkpoint | live teacher calls |

- evaluations: every row of eval.csv (20 episodes each in the chain), to the last step;
- per bin: means of the TensorBoard scalars `rollout/ep_rew_mean` (with the sparse reward and
  episodes that end at success, the success rate of the last 100 training episodes) and
  `train/explained_variance`, over bins of `--bin` env steps (10,240 = 20 rollouts of the
  chain's 8 envs by 64 steps; a bin without a value is left out);
- held out: RUN/heldout-final.json and heldout-best.json, which the chain writes
  (`rpd eval --student RUN --episodes 50 --held-out --checkpoint final|best`), with the
  best checkpoint's step.

    python benchmarks/pixel_rows.py WORK/runs/PushCube-v1-sparse-rpdB-s0 ... [--bin 10240]

With `--evals DIR --out DIR`, it reads the committed files instead (DIR/RUN.csv: a run's
eval.csv; RUN-heldout[-best][-100k].json: its held-out results, final or best checkpoint, at the
end or at 100k; runs.json: each run's setting in words and the teacher evaluation JSON it is
compared with) and writes DIR/pixel_runs.json, a record (`benchmarks/record.py`) of one row per
run that the Pixel students page shows and the test suite regenerates:

    python benchmarks/pixel_rows.py --evals docs/results/PushCube-v1-sparse-rgb-evals \
        --out docs/results/PushCube-v1-sparse-rgb-evals
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

SCALARS = ("rollout/ep_rew_mean", "train/explained_variance")


def fmt(x: float) -> str:
    """0 -> "0", 0.05 -> ".05", -0.32 -> ".32" after a minus sign (U+2212): the README's style."""
    if round(x, 2) == 0:
        return "0"
    s = f"{abs(x):.2f}".lstrip("0")
    return f"\u2212{s}" if x < 0 else s


def binned_scalars(run: Path, size: int) -> dict[str, list[float]]:
    """Per TensorBoard scalar tag, the mean of each bin of `size` env steps, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bins: dict[str, dict[int, list[float]]] = {}
    for events in sorted((run / "tb").glob("*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in SCALARS:
            if tag in acc.Tags()["scalars"]:
                for e in acc.Scalars(tag):
                    bins.setdefault(tag, {}).setdefault(e.step // size, []).append(e.value)
    return {tag: [sum(v) / len(v) for _, v in sorted(b.items())] for tag, b in bins.items()}


def heldout(run: Path) -> str:
    parts = []
    for which in ("final", "best"):
        path = run / f"heldout-{which}.json"
        if not path.is_file():
            parts.append("—")
            continue
        h = json.loads(path.read_text())
        step = f" ({h['step'] / 1000:.0f}k)" if which == "best" and h.get("step") else ""
        parts.append(f"{h['success']:.0%}{step}")
    return " / ".join(parts)


def row(run: Path, size: int) -> str:
    with open(run / "eval.csv") as f:
        evals = list(csv.DictReader(f))
    if not evals:
        raise SystemExit(f"{run}/eval.csv: no evaluation yet; wait for the run's first one")
    seq = " ".join(fmt(float(r["success"])) for r in evals)
    finished = (run / "student.json").is_file()
    seq += f" (to {int(evals[-1]['step']):,}{', finished' if finished else ''})"
    scalars = binned_scalars(run, size)
    cols = [" ".join(fmt(v) for v in scalars.get(tag, [])) or "—" for tag in SCALARS]
    name = run.name.split("-", 3)[-1] if run.name.count("-") >= 3 else run.name
    return (f"| `{name}` | {seq} | {cols[0]} | {cols[1]} | {heldout(run)} | "
            f"{int(evals[-1]['live_teacher_calls']):,} |")


def _held(path: Path) -> str | None:
    """"76 %" (or "70 % (131k)" with the checkpoint's step) from a held-out JSON, if any."""
    if not path.is_file():
        return None
    h = json.loads(path.read_text())
    text = f"{h['success']:.0%}".replace("%", " %")
    if h.get("checkpoint") == "best" and h.get("step"):
        text += f" ({h['step'] / 1000:.0f}k)"
    return text


def evals_rows(folder: Path) -> list[dict[str, object]]:
    """One row per run of a folder of committed evaluation files (see the module docstring)."""
    runs = json.loads((folder / "runs.json").read_text()) if (folder / "runs.json").is_file() \
        else {}
    rows = []
    for csv_path in sorted(folder.glob("*.csv")):
        name = csv_path.stem
        if name.endswith("-100k"):
            continue  # a snapshot of the run below, whose held-out results at 100k are a column
        with open(csv_path) as f:
            evals = list(csv.DictReader(f))
        if not evals:
            continue
        best = max(evals, key=lambda r: float(r["success"]))  # the first of the best
        about = runs.get(name, {})
        teacher = None
        if about.get("teacher_eval"):
            t = json.loads((folder / about["teacher_eval"]).read_text())
            teacher = f"{t['success_rate']:.0%}".replace("%", " %") + f" (h{t['horizon']})"
        rows.append(dict(
            run=name, setting=about.get("setting"), teacher=teacher, steps=int(evals[-1]["step"]),
            evaluations=" ".join(fmt(float(r["success"])) for r in evals),
            best_evaluation=f"{float(best['success']):.2f} ({int(best['step']) / 1000:.0f}k)",
            held_out=_held(folder / f"{name}-heldout.json"),
            held_out_best=_held(folder / f"{name}-heldout-best.json"),
            held_out_100k=", best ".join(h for h in (
                _held(folder / f"{name}-heldout-100k.json"),
                _held(folder / f"{name}-heldout-best-100k.json")) if h) or None,
            live_teacher_calls=int(evals[-1]["live_teacher_calls"])))
    return rows


EVALS_COLUMNS = [("run", "run", "`{}`"), ("setting", "setting", "{}"),
                 ("teacher", "teacher", "{}"), ("steps", "env steps", "{:,}"),
                 ("evaluations", "evaluations every ≈ 10k (20 episodes)", "{}"),
                 ("best_evaluation", "best evaluation", "{}"),
                 ("held_out", "held out, final (50 episodes)", "{}"),
                 ("held_out_best", "held out, best checkpoint", "{}"),
                 ("held_out_100k", "held out at 100k (final, best)", "{}"),
                 ("live_teacher_calls", "live teacher calls", "{:,}")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="*", help="`rpd train` run directories.")
    p.add_argument("--bin", type=int, default=10_240, help="Env steps per bin.")
    p.add_argument("--evals", type=Path, default=None,
                   help="A folder of committed RUN.csv and RUN-heldout*.json files instead.")
    p.add_argument("--out", type=Path, default=None, help="Where --evals writes its record.")
    args = p.parse_args()
    if args.evals is not None:
        import record

        rows = evals_rows(args.evals)
        if not rows:
            sys.exit(f"--evals {args.evals}: no RUN.csv with evaluation rows there")
        path = record.write(args.out or args.evals, "pixel_runs", rows, EVALS_COLUMNS,
                            measured=False)
        print(f"wrote {path}")
        return
    if not args.runs:
        p.error("give run directories, or --evals DIR")
    for run in args.runs:
        if not (run / "eval.csv").is_file():
            sys.exit(f"{run}: not an rpd train run directory (no eval.csv)")
    print("| run | evaluations | training-episode success per bin | critic's explained variance "
          "per bin | held out: final / best | live teacher calls |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in args.runs:
        print(row(run, args.bin))


if __name__ == "__main__":
    main()
