"""The `rpd` command line. Each command parses options into a config and calls one function."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
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
            click.echo("rpd: interrupted; finished work is kept, re-run to resume", err=True)
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


class _Progress:
    """A tqdm bar that appears on the first update, so input errors print alone."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self._args = dict(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
        self._bar: Any = None

    def update(self, n: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(**self._args)
        self._bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


@main.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tasks_cmd(as_json: bool) -> None:
    """List the supported tasks and their instructions."""
    from dataclasses import asdict

    from rpd.data.envs import TASKS

    if as_json:
        click.echo(json.dumps([asdict(t) for t in TASKS.values()], indent=2))
        return
    for t in TASKS.values():
        planner = "demos" if t.motion_planner else "     "
        click.echo(f"{t.env_id:<22} {planner}  {t.instruction}")


@main.group("demos")
def demos() -> None:
    """Generate, import and inspect ManiSkill demonstrations."""


@demos.command("generate")
@click.option("--env", "env_id", required=True, help="Task id, e.g. PickCube-v1 (see `rpd tasks`).")
@click.option("--num", type=int, required=True, help="Successful episodes to keep.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--seed", type=int, default=0, show_default=True, help="First episode seed.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes.")
@click.option("--control-mode", default="pd_ee_delta_pose", show_default=True,
              help="Control mode of the converted demos.")
@click.option("--force", is_flag=True, help="Overwrite demos already in --out.")
def demos_generate(env_id: str, num: int, out: Path, seed: int, workers: int,
                   control_mode: str, force: bool) -> None:
    """Motion-planned demos from ManiSkill's solutions, converted to --control-mode."""
    from rpd.data.demos import GenerateConfig, generate_demos

    cfg = GenerateConfig(env_id=env_id, num=num, out=out, seed=seed, workers=workers,
                         control_mode=control_mode, force=force)
    with _Progress(num, f"{env_id} demos", "ep") as bar:
        result = generate_demos(cfg, progress=bar.update)
    click.echo(f"wrote {result.episodes} successful episodes to {result.path} "
               f"({result.attempts} attempts, {result.planning_failures} planning failures, "
               f"{result.conversion_failures} conversion failures)")


@demos.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--control-mode", default="pd_ee_delta_pose", show_default=True,
              help="Control mode to convert to.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes.")
@click.option("--force", is_flag=True, help="Overwrite a converted file already in --out.")
def demos_import(file: Path, out: Path, control_mode: str, workers: int, force: bool) -> None:
    """Validate a ManiSkill trajectory FILE (.h5 + .json) and convert it for rpd."""
    from rpd.data.demos import ImportConfig, import_demos
    from rpd.data.trajectories import open_trajectory

    cfg = ImportConfig(src=file, out=out, control_mode=control_mode, workers=workers, force=force)
    total = len(open_trajectory(file).episodes)
    with _Progress(total, "converting", "ep") as bar:
        result = import_demos(cfg, progress=bar.update)
    click.echo(f"wrote {result.episodes} episodes to {result.path} "
               f"({result.conversion_failures} dropped: no success after conversion)")


@demos.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def demos_info(file: Path, as_json: bool) -> None:
    """Summarise a trajectory FILE: env, control mode, episodes, success, lengths."""
    from rpd.data.trajectories import open_trajectory, summarize

    info = summarize(open_trajectory(file))
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return
    rows = [
        ("file", info.path), ("env", info.env_id), ("control mode", info.control_mode),
        ("obs mode", info.obs_mode), ("action dim", info.action_dim),
        ("episodes", info.episodes), ("success rate", f"{info.success_rate:.1%}"),
        ("length min/mean/max", f"{info.length_min} / {info.length_mean:.1f} / {info.length_max}"),
    ]
    for k, v in rows:
        click.echo(f"{k:<20} {v}")


if __name__ == "__main__":
    main()
