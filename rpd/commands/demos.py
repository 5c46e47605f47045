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
def demos_generate(env_id: str, num: int, out: Path, seed: int, workers: int,
                   control_mode: str, force: bool) -> None:
    """Motion-planned demos from ManiSkill's solutions, converted to --control-mode."""
    from rpd.data.demos import GenerateConfig, generate_demos

    cfg = GenerateConfig(env_id=env_id, num=num, out=out, seed=seed, workers=workers,
                         control_mode=control_mode, force=force)
    with Progress(num, f"{env_id} demos", "ep") as bar:
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
    with Progress(total, "converting", "ep") as bar:
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
