"""The `rpd` command line. Each command parses options into a config and calls one function."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from rpd import __version__
from rpd.errors import RpdError


class _RpdGroup(click.Group):
    """Turns RpdError into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RpdError as e:
            click.echo(f"rpd: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            # on a line of its own: the interrupt may land while a progress bar is mid-line
            click.echo("\nrpd: interrupted; finished work is kept: run the same command again "
                       "(rpd train: with --resume) to continue", err=True)
            ctx.exit(130)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # ManiSkill warns on every CPU-only env ("CUDA device was not found"): keep it for -vv.
    logging.getLogger("mani_skill").setLevel(logging.WARNING if verbose >= 2 else logging.ERROR)


@click.group(cls=_RpdGroup, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(__version__, prog_name="rpd")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """rpd: distil a vision-language-action teacher into a small, fast PPO student.

    Refined Policy Distillation (Jülg et al., arXiv 2503.05833) on ManiSkill tasks.
    """
    _setup_logging(verbose)


@main.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tasks_cmd(as_json: bool) -> None:
    """List the supported tasks and their instructions."""
    from dataclasses import asdict

    from rpd.data.tasks import TASKS

    if as_json:
        click.echo(json.dumps([asdict(t) for t in TASKS.values()], indent=2))
        return
    for t in TASKS.values():
        planner = "demos" if t.motion_planner else "     "
        click.echo(f"{t.env_id:<22} {planner}  {t.instruction}")


@main.command("recipes")
def recipes_cmd() -> None:
    """List the shipped recipes: config files to start from (`--config NAME`)."""
    from rpd.config import RECIPES_DIR, list_recipes

    for name, command, description in list_recipes():
        click.echo(f"{name:<24} rpd {command:<6} {description}")
    click.echo(f"\n(files in {RECIPES_DIR}; `rpd train --config NAME`, `rpd run --config NAME`)")


def _register() -> None:
    from rpd.commands import cache, demos, export, remote, report, run, teacher, train

    # `rpd eval` (teacher.eval_cmd) serves teachers and students alike.
    for command in (demos.demos, teacher.finetune_teacher_cmd, teacher.eval_cmd, cache.cache,
                    train.train, report.report, run.run):
        main.add_command(command)
    main.add_command(teacher.scripted_teacher_cmd)
    main.add_command(remote.serve_teacher_cmd)
    main.add_command(remote.connect_teacher_cmd)
    main.add_command(export.export_cmd)


_register()

if __name__ == "__main__":
    main()
