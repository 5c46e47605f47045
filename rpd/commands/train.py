"""`rpd train`: train the RPD student (or plain PPO with --no-teacher)."""

from __future__ import annotations

from typing import Any

import click

from rpd.commands._common import PhaseBars, Progress
from rpd.config import click_options, from_command_line
from rpd.pipeline.train_config import TrainConfig


@click.command("train")
@click_options(TrainConfig)
@click.pass_context
def train(ctx: click.Context, config_file: str | None, **options: Any) -> None:
    """Train a PPO student distilling --teacher's actions (RPD, arXiv 2503.05833).

    Every option can also come from a YAML or JSON file (--config FILE), a run's own
    config.json (repeat a run: --config runs/X/config.json --seed 2 --out runs/Y) or a shipped
    recipe (--config reference; `rpd recipes` lists them); options on the command line win.
    """
    from rpd.errors import sigterm_as_interrupt
    from rpd.pipeline.train import train as run_train

    cfg = from_command_line(TrainConfig, ctx, options, config_file)
    offline_bars = {"render": ("offline phase: render stored states", "frame"),
                    "fit": ("offline phase: fit", "step")}
    with PhaseBars(offline_bars) as offline, \
            Progress(cfg.steps, f"train {cfg.env_id}", "step") as bar:
        def trained(n: int) -> None:
            offline.close()  # the offline phase is over once env steps run
            bar.update(n)

        def evaluated(row: dict[str, Any]) -> None:  # a background run's log says how it goes
            calls = "" if cfg.no_teacher else f", {row['live_teacher_calls']:,} live calls"
            bar.set_postfix(f"eval {row['success']:.2f} at {row['step']:,}{calls}")

        with sigterm_as_interrupt():  # a scheduler's stop: workers closed, work kept
            meta = run_train(cfg, progress=trained, offline_progress=offline.update,
                             evaluated=evaluated)
    m = meta["metrics"]
    click.echo(f"wrote {cfg.out}: {m['steps']} steps, eval success {m['eval_success']:.2f}, "
               f"live teacher calls {m['live_teacher_calls']}")
