"""`rpd export`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.option("--student", type=click.Path(path_type=Path), required=True,
              help="Student run directory (from `rpd train`).")
@click.option("--format", "fmt", required=True, metavar="onnx|torchscript",
              help="onnx (onnxruntime, any language) or torchscript (torch.jit).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="File to write: FILE.onnx or FILE.pt; its description goes to FILE.json "
                   "beside it.")
@click.option("--checkpoint", default="final", show_default=True, metavar="final|best|latest",
              help="The run's final policy, the one of its best evaluation "
                   "(RUN/checkpoints/best.zip) or its latest checkpoint.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
@click.option("--verify-steps", type=int, default=48, show_default=True,
              help="Steps of the student in its task's env whose observations the exported "
                   "policy must act on as the student does.")
def export_cmd(student: Path, fmt: str, out: Path, checkpoint: str, force: bool,
               verify_steps: int) -> None:
    """Write a student as a self-contained policy: the env's observation in, the action out.

    Observation normalisation, image preprocessing and the clip to the action bounds are in
    the graph; rpd, SB3 and ManiSkill are not needed to run it.
    """
    from rpd.pipeline.export import ExportConfig, export_student, meta_path

    meta = export_student(ExportConfig(student=student, format=fmt, out=out,
                                       checkpoint=checkpoint, force=force,
                                       verify_steps=verify_steps))
    inputs = ", ".join(f"{i['name']} {i['dtype']}{list(i['shape'])}" for i in meta["inputs"])
    verified = meta["verified"]
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {fmt}) and {meta_path(out)}")
    click.echo(f"  {meta['task']} {meta['control_mode']}, {meta['checkpoint']} policy at step "
               f"{meta['step']:,}; inputs: {inputs}")
    click.echo(f"  max |exported - student| action: {verified['max_abs_diff']:.3g} on "
               f"{verified['observations']} recorded observations")
