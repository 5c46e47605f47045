"""`rpd report`: learning curves and a results table from `rpd train` runs."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Directory for report.md, report.json and one PNG per task.")
@click.option("--teacher-eval", "teacher_evals", multiple=True, type=click.Path(path_type=Path),
              help="`rpd eval --teacher` JSON to draw as the teacher's success (repeatable) "
                   "[default: TEACHER/eval/ENV-hH.json of the runs' teacher].")
@click.option("--threshold", "thresholds", multiple=True, type=float,
              help="Success level to report env steps to (repeatable) [default: 0.6, 0.8].")
@click.option("--band", type=click.Choice(["minmax", "std"]), default="minmax",
              show_default=True, help="Spread over seeds drawn around each mean curve.")
def report(runs: tuple[Path, ...], out: Path, teacher_evals: tuple[Path, ...],
           thresholds: tuple[float, ...], band: str) -> None:
    """Compare runs: learning curves and a results table.

    RUN... are `rpd train --out` directories; the seeds of one setting are aggregated (groups:
    task, rpd/ppo, teacher, reward, and any other option the runs differ in)."""
    from rpd.pipeline.report import DEFAULT_THRESHOLDS, ReportConfig, make_report

    cfg = ReportConfig(runs=list(runs), out=out, teacher_evals=list(teacher_evals),
                       thresholds=thresholds or DEFAULT_THRESHOLDS, band=band)
    result = make_report(cfg)
    for g in result["groups"]:
        s = g["final_success"]
        click.echo(f"{g['env_id']:<18} {g['label']:<40} final success {s['mean']:.2f} "
                   f"({g['n_seeds']} seeds)")
    click.echo(f"wrote {out / 'report.md'}, {out / 'report.json'} and "
               f"{len(result['plots'])} plot(s)")
