"""`rpd run`: demos -> teacher -> teacher eval -> (cache) -> RPD and PPO students -> report."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

import click

from rpd.config import click_options
from rpd.pipeline.run import RunConfig


@click.command("run")
@click_options(RunConfig)
@click.option("--dry-run", is_flag=True, help="Print the stage commands, run nothing.")
@click.pass_context
def run(ctx: click.Context, config_file: str | None, dry_run: bool, **options: Any) -> None:
    """The whole job in one command: demos, teacher, RPD and PPO students, report.

    With no options beyond --out: sparse PushCube, 100 motion-planned demos made 4x faster, a
    cnn-tiny teacher, RPD (λ 1 -> 0 cosine, every state labelled while λ > 0, most by the label
    model) and plain PPO on seed 0, 80k env steps each, held-out evaluations and the report with
    its plot. Re-running the same command resumes. A config file (--config FILE or a recipe)
    may hold a `train:` section of `rpd train` options for the student runs.
    """
    from rpd.config import from_command_line
    from rpd.errors import InputError
    from rpd.pipeline.run import STAGES, check_made_by, execute, summary

    cfg = from_command_line(RunConfig, ctx, options, config_file)
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
        shift, color = cfg.teacher_view
        view = (f", camera {shift:+g}°" if shift else "") + (f", {color} object" if color else "")
        click.echo(f"  teacher            success {s['teacher_success']:.0%} "
                   f"(horizon {cfg.teacher_horizon}{view})")
    for name, m in s["students"].items():
        held = ("held-out success ?" if m["heldout_success"] is None else
                f"held-out success {m['heldout_success']:.0%} ({m['heldout_episodes']} episodes)")
        click.echo(f"  student {name:<10} {held} after {m['steps']} steps, "
                   f"{m['live_calls_per_step'] or 0:.3f} live teacher calls per env step, "
                   f"{_duration(m['wall_time_s'] or 0)}")
    click.echo(f"  report {s['report']}\n  plot   {s['plot']}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
