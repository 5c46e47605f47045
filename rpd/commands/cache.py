"""`rpd cache`: build, inspect and compact teacher-action stores."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rpd.commands._common import Progress, device_option, sim_backend_option
from rpd.data.seeds import CACHE


@click.group("cache", invoke_without_command=True)
@click.option("--teacher", type=click.Path(path_type=Path), help="Teacher checkpoint directory.")
@click.option("--env", "env_id", help="Task id, e.g. PickCube-v1.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Store directory (created, or resumed if it exists).")
@click.option("--demos", multiple=True, type=click.Path(path_type=Path),
              help="ManiSkill trajectory .h5 whose states to label (repeatable).")
@click.option("--rollouts", type=int, default=0, show_default=True,
              help="Teacher closed-loop rollouts to label.")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Also label as many rollouts with N(0, NOISE^2) action noise.")
@click.option("--horizon", type=int, default=100, show_default=True,
              help="Maximum steps per rollout.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Local dask worker processes (on 127.0.0.1).")
@click.option("--scheduler", default=None,
              help="Use an existing dask cluster: tcp://HOST:PORT (shared filesystem).")
@click.option("--seed", type=int, default=CACHE.start, show_default=True,
              help="First rollout reset seed, in the seed plan's cache range "
                   f"[{CACHE.start:,}, {CACHE.stop:,}); also seeds the action noise.")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="States per teacher call.")
@click.option("--key-dims", default=None,
              help="Comma-separated observation dims forming the lookup key (default: all).")
@click.option("--key-scale", default="std", show_default=True,
              help="'std' (from the labelled demo observations) or a fixed number.")
@click.option("--allow-mismatch", is_flag=True,
              help="Use a store made for another teacher/env/key spec anyway.")
@sim_backend_option
@device_option
@click.pass_context
def cache(ctx: click.Context, teacher: Path | None, env_id: str | None, out: Path | None,
          demos: tuple[Path, ...], rollouts: int, noise: float, horizon: int, workers: int,
          scheduler: str | None, seed: int, batch_size: int, key_dims: str | None,
          key_scale: str, allow_mismatch: bool, sim_backend: str, device: str) -> None:
    """Precompute teacher actions for demo states and rollouts into a Zarr store.

    \b
    rpd cache --teacher T --env X --out STORE [--demos FILE...] [--rollouts N] [--noise S]
    rpd cache info STORE [--json]
    rpd cache compact STORE
    """
    if ctx.invoked_subcommand is not None:
        return
    from rpd.errors import InputError
    from rpd.pipeline.cache import CacheConfig, build_cache, plan_units

    for name, value in (("--teacher", teacher), ("--env", env_id), ("--out", out)):
        if value is None:
            raise InputError(f"{name} is required (see `rpd cache --help`)")
    dims = None
    if key_dims:
        try:
            dims = [int(d) for d in key_dims.split(",")]
        except ValueError:
            raise InputError(f"--key-dims {key_dims!r}: use comma-separated integers") from None
    cfg = CacheConfig(teacher=teacher, env_id=env_id, out=out, demos=list(demos),  # type: ignore[arg-type]
                      rollouts=rollouts, noise=noise, horizon=horizon, workers=workers,
                      scheduler=scheduler, seed=seed, batch_size=batch_size, key_dims=dims,
                      key_scale=key_scale, allow_mismatch=allow_mismatch,
                      sim_backend=sim_backend, device=device)
    with Progress(len(plan_units(cfg)), f"{env_id} labels", "ep") as bar:
        result = build_cache(cfg, progress=lambda units, rows: bar.update(units))
    success = ("" if result.rollout_success is None
               else f", teacher rollout success {result.rollout_success:.0%}")
    click.echo(f"labelled {result.units_done} episodes ({result.rows_written} states; "
               f"{result.units_skipped} already in the store; {result.rejected_nonfinite} "
               f"NaN/inf actions rejected{success}); {result.store} holds {result.entries} "
               "entries")


@cache.command("info")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_info_cmd(store: Path, as_json: bool) -> None:
    """Summarise a STORE: identity, entries by source, size on disk."""
    from rpd.pipeline.cache import cache_info

    info = cache_info(store)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return
    rows = [
        ("store", info.path), ("env", info.env_id), ("control mode", info.control_mode),
        ("teacher", f"{info.teacher_fingerprint} ({info.teacher_kind})"),
        ("key", f"{info.key_dim} dims, {info.key_method} scale"),
        ("obs/action/state dims", f"{info.obs_dim} / {info.action_dim} / {info.state_dim}"),
        ("entries", info.entries),
        *[(f"  {s}", n) for s, n in info.by_source.items()],
        ("episodes", info.units), ("parts", info.parts),
        ("rejected NaN/inf", info.rejected_nonfinite),
        ("size on disk", _size(info.size_bytes)), ("created", info.created),
        ("updated", info.updated),
    ]
    others = info.extra.get("other_teachers", {})
    if others:  # labelled with --allow-mismatch; never served to this teacher's runs
        rows.append(("other teachers", ", ".join(f"{fp} ({n} entries)"
                                                 for fp, n in others.items())))
    if info.staging:
        rows.append(("unfinished writes", f"{info.staging} (ignored; `compact` cleans old ones)"))
    for k, v in rows:
        click.echo(f"{k:<22} {v}")


@cache.command("compact")
@click.argument("store", type=click.Path(path_type=Path))
def cache_compact_cmd(store: Path) -> None:
    """Merge the parts of a STORE into one (safe while writers run)."""
    from rpd.pipeline.cache import compact

    merged, rows = compact(store)
    click.echo(f"merged {merged} parts into one ({rows} entries)" if merged
               else f"nothing to merge ({rows} entries)")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
