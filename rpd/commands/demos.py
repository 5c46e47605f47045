"""`rpd demos`: generate, import and inspect ManiSkill demonstrations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rpd.commands._common import Progress


@click.group("demos")
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
@click.option("--speedup", type=int, default=None,
              help="Also write fast demos: every K actions merged into one, the episodes "
                   "whose replay succeeds (as `rpd demos speedup --factor K`).")
def demos_generate(env_id: str, num: int, out: Path, seed: int, workers: int,
                   control_mode: str, force: bool, speedup: int | None) -> None:
    """Motion-planned demos from ManiSkill's solutions, converted to --control-mode."""
    from rpd.data.demos import GenerateConfig, generate_demos
    from rpd.data.speedup import SpeedupConfig

    cfg = GenerateConfig(env_id=env_id, num=num, out=out, seed=seed, workers=workers,
                         control_mode=control_mode, force=force)
    if speedup is not None:  # check the factor before hours of planning
        SpeedupConfig(src=cfg.out / "x.h5", factor=speedup, force=True)
    with Progress(num, f"{env_id} demos", "ep") as bar:
        result = generate_demos(cfg, progress=bar.update)
    click.echo(f"wrote {result.episodes} successful episodes to {result.path} "
               f"({result.attempts} attempts, {result.planning_failures} planning failures, "
               f"{result.conversion_failures} conversion failures)")
    if speedup is not None:
        _speed_up(result.path, speedup, None, force=True)


def _speed_up(file: Path, factor: int, out: Path | None, force: bool) -> None:
    from rpd.data.speedup import SpeedupConfig, speed_up
    from rpd.data.trajectories import open_trajectory

    cfg = SpeedupConfig(src=file, factor=factor, out=out, force=force)
    total = len(open_trajectory(file).episodes)
    with Progress(total, f"speedup x{factor}", "ep") as bar:
        result = speed_up(cfg, progress=bar.update)
    click.echo(f"wrote {result.kept} of {result.episodes} episodes to {result.path} "
               f"(mean length {result.length_before:.1f} -> {result.length_after:.1f} steps; "
               f"{result.episodes - result.kept} dropped: the merged replay failed)")


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
    with Progress(total, "converting", "ep") as bar:
        result = import_demos(cfg, progress=bar.update)
    click.echo(f"wrote {result.episodes} episodes to {result.path} "
               f"({result.conversion_failures} dropped: no success after conversion)")


@demos.command("speedup")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--factor", type=int, required=True,
              help="Merge this many consecutive actions into one (2..8).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output .h5 [default: trajectory.x<factor>.<name> beside FILE].")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def demos_speedup(file: Path, factor: int, out: Path | None, force: bool) -> None:
    """Fast demos: merge every --factor end-effector deltas of FILE into one, keep the
    episodes whose replay still succeeds."""
    _speed_up(file, factor, out, force)


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
