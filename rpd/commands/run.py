"""`rpd run`: demos -> teacher -> teacher eval -> (cache) -> RPD and PPO students -> report."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click


@click.command("run")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Chain directory (re-running with it resumes).")
@click.option("--env", "env_id", default="PushCube-v1", show_default=True, help="Task id.")
@click.option("--reward", type=click.Choice(["sparse", "dense"]), default="sparse",
              show_default=True)
@click.option("--steps", type=int, default=80_000, show_default=True,
              help="Env steps per student run.")
@click.option("--seeds", default="0", show_default=True,
              help="Comma-separated student seeds (an RPD and a PPO run each).")
@click.option("--envs", type=int, default=8, show_default=True, help="Parallel envs per run.")
@click.option("--methods", default="rpd,ppo", show_default=True,
              help="Student runs per seed: rpd, ppo or both.")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="Use this teacher checkpoint (skips demos and fine-tuning).")
@click.option("--teacher-kind", default="cnn-tiny", show_default=True,
              help="Backend of the teacher to fine-tune (octo-small: a small VLA, hours on CPU).")
@click.option("--teacher-size", default="small", show_default=True)
@click.option("--teacher-steps", type=int, default=3000, show_default=True,
              help="Teacher fine-tuning steps.")
@click.option("--teacher-args", default=None,
              help="Extra `rpd finetune-teacher` options [default for cnn-tiny: "
                   "--batch-size 64 --lr 1e-3, the measured recipe].")
@click.option("--image-size", type=int, default=64, show_default=True,
              help="Teacher camera resolution.")
@click.option("--demos-num", type=int, default=100, show_default=True,
              help="Motion-planned demos to generate.")
@click.option("--demo-speedup", type=int, default=4, show_default=True,
              help="Fine-tune the teacher on fast demos: every K planner actions merged into "
                   "one (`rpd demos speedup`); 1 = the planner's pace.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Processes for demos, rendering, teacher eval and cache.")
@click.option("--teacher-episodes", type=int, default=50, show_default=True)
@click.option("--teacher-horizon", type=int, default=50, show_default=True)
@click.option("--cache", is_flag=True, help="Precompute teacher labels (`rpd cache`) first.")
@click.option("--cache-rollouts", type=int, default=20, show_default=True)
@click.option("--live-budget", type=int, default=0, show_default=True,
              help="Max live teacher calls per RPD rollout; 0 = unlimited.")
@click.option("--lambda-decay-steps", type=int, default=None,
              help="λ falls from 1 to 0 (cosine) by this step [default: 60% of --steps].")
@click.option("--eval-every", type=int, default=10_000, show_default=True)
@click.option("--eval-episodes", type=int, default=20, show_default=True)
@click.option("--heldout-episodes", type=int, default=50, show_default=True,
              help="Held-out episodes per finished student (the published success).")
@click.option("--obs", default="state", show_default=True,
              help="Student observation (`rpd train --obs`).")
@click.option("--train-args", default="", help="Extra `rpd train` options for every run.")
@click.option("--dry-run", is_flag=True, help="Print the stage commands, run nothing.")
def run(out: Path, env_id: str, reward: str, steps: int, seeds: str, envs: int, methods: str,
        teacher: Path | None, teacher_kind: str, teacher_size: str, teacher_steps: int,
        teacher_args: str | None, image_size: int, demos_num: int,
        demo_speedup: int, workers: int,
        teacher_episodes: int, teacher_horizon: int, cache: bool, cache_rollouts: int,
        live_budget: int, lambda_decay_steps: int | None, eval_every: int,
        eval_episodes: int, heldout_episodes: int, obs: str, train_args: str,
        dry_run: bool) -> None:
    """The whole job in one command: demos, teacher, RPD and PPO students, report.

    With no options beyond --out: sparse PushCube, 100 motion-planned demos made 4x faster, a
    cnn-tiny teacher, RPD (λ 1 -> 0 cosine, every state labelled while λ > 0, most by the label
    model) and plain PPO on seed 0, 80k env steps each, and the report with its plot.
    Re-running the same command resumes.
    """
    from rpd.errors import InputError
    from rpd.pipeline.run import STAGES, RunConfig, check_made_by, execute, summary

    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
        raise InputError(f"--seeds {seeds!r}: use comma-separated integers, e.g. 0,1") from None
    cfg = RunConfig(out=out, env_id=env_id, reward=reward, steps=steps, seeds=seed_list,
                    envs=envs, methods=tuple(m.strip() for m in methods.split(",")),
                    teacher=teacher, teacher_kind=teacher_kind, teacher_size=teacher_size,
                    teacher_steps=teacher_steps, teacher_args=teacher_args,
                    image_size=image_size, demos_num=demos_num, demo_speedup=demo_speedup,
                    workers=workers, teacher_episodes=teacher_episodes,
                    teacher_horizon=teacher_horizon, cache=cache, cache_rollouts=cache_rollouts,
                    live_budget=live_budget or None, lambda_decay_steps=lambda_decay_steps,
                    eval_every=eval_every, eval_episodes=eval_episodes,
                    heldout_episodes=heldout_episodes, obs=obs,
                    train_args=train_args)
    resume = shlex.join(["rpd", *sys.argv[1:]]) if sys.argv[1:2] == ["run"] else "the same command"
    t_start = time.time()
    for plan in STAGES:
        for stage in plan(cfg):
            check_made_by(stage, cfg)
            if stage.skip is not None:
                click.echo(f"[{stage.name}] skipped: {stage.skip}")
                continue
            click.echo(f"[{stage.name}] {stage.command}")
            if dry_run:
                continue
            try:
                rc, wall, last = execute(stage, cfg, lambda text: click.echo(text, nl=False,
                                                                           err=True))
            except KeyboardInterrupt:
                raise InputError(f"interrupted in stage {stage.name}; finished stages are kept: "
                                 f"run {resume} to resume") from None
            if rc != 0:
                raise InputError(f"stage {stage.name} failed (exit code {rc}): {last or '?'}; "
                                 f"fix it and run {resume} to resume (finished stages are kept)")
            click.echo(f"[{stage.name}] done in {_duration(wall)}")
    if dry_run:
        return
    s = summary(cfg)
    click.echo(f"\nrpd run finished in {_duration(time.time() - t_start)} ({s['env']}, "
               f"{s['reward']} reward)")
    if s.get("teacher_success") is not None:
        click.echo(f"  teacher            success {s['teacher_success']:.0%} "
                   f"(horizon {cfg.teacher_horizon})")
    for name, m in s["students"].items():
        held = ("held-out success ?" if m["heldout_success"] is None else
                f"held-out success {m['heldout_success']:.0%} ({m['heldout_episodes']} episodes)")
        click.echo(f"  student {name:<10} {held} after {m['steps']} steps, "
                   f"{m['live_calls_per_step'] or 0:.3f} live teacher calls per env step, "
                   f"{_duration(m['wall_time_s'] or 0)}")
    click.echo(f"  report {s['report']}\n  plot   {s['plot']}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
