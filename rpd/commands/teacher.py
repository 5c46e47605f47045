"""`rpd finetune-teacher` and `rpd eval`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rpd.commands._common import Progress, device_option, sim_backend_option


@click.command("finetune-teacher")
@click.option("--demos", "demos", multiple=True, required=True, type=click.Path(path_type=Path),
              help="ManiSkill trajectory .h5 (repeat for several tasks).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Checkpoint directory to write.")
@click.option("--kind", default="octo-small", show_default=True, help="Teacher backend.")
@click.option("--size", default="small", show_default=True, help="Model size: tiny or small.")
@click.option("--steps", type=int, default=3000, show_default=True, help="Optimiser steps.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True, help="Peak learning rate.")
@click.option("--chunk-size", type=int, default=8, show_default=True,
              help="Future actions predicted per call.")
@click.option("--image-size", type=int, default=128, show_default=True,
              help="Teacher camera resolution (square).")
@click.option("--camera", default="render", show_default=True,
              help="Teacher camera: 'render' (sees goal markers) or a sensor camera name.")
@click.option("--no-proprio", is_flag=True, help="Do not feed joint positions to the teacher.")
@click.option("--eval-every", type=int, default=250, show_default=True,
              help="Validation every N steps.")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True)
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Start from this teacher checkpoint.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Processes rendering demo frames.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None,
              help="torch threads [default: one per core]; 1 on a busy machine.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Backend option (repeat): octo-small architecture fields (patch=4, "
                   "image_tokens_side=8, ...); openvla/pi0 pretrained=DIR, lora_rank=N.")
@device_option
def finetune_teacher_cmd(demos: tuple[Path, ...], out: Path, kind: str, size: str, steps: int,
                         batch_size: int, lr: float, chunk_size: int, image_size: int,
                         camera: str, no_proprio: bool, eval_every: int, checkpoint_every: int,
                         init: Path | None, resume: bool, workers: int, seed: int,
                         threads: int | None, options: tuple[str, ...], device: str) -> None:
    """Fine-tune a VLA teacher on demonstrations; writes a checkpoint directory."""
    from rpd.pipeline.finetune import FinetuneConfig, finetune_teacher, parse_backend_options

    cfg = FinetuneConfig(demos=list(demos), out=out, kind=kind, size=size, steps=steps,
                         batch_size=batch_size, lr=lr, chunk_size=chunk_size,
                         image_size=image_size, camera=camera, use_proprio=not no_proprio,
                         eval_every=eval_every, checkpoint_every=checkpoint_every, init=init,
                         resume=resume, render_workers=workers, seed=seed,
                         threads=threads, extra=parse_backend_options(options), device=device)
    from rpd.data.trajectories import open_trajectory

    episodes = sum(len(open_trajectory(p, option="--demos").episodes) for p in demos)
    with Progress(episodes, "rendering demo frames", "ep") as render_bar, \
            Progress(steps, "fine-tuning", "step") as bar:
        last: dict[str, float] = {}

        def on_step(step: int, metrics: dict[str, float]) -> None:
            last.update(metrics)
            bar.update(1)
            if bar.bar is not None:
                bar.bar.set_postfix({k.replace("/", "_"): f"{v:.4f}" for k, v in last.items()
                                     if k in ("train/loss", "val/l1")}, refresh=False)

        done = finetune_teacher(cfg, progress=on_step, render_progress=render_bar.update)
    meta = json.loads((done / "teacher.json").read_text())
    click.echo(f"wrote teacher to {done} (val L1 {meta['metrics'].get('val/l1', float('nan')):.4f}"
               f", {meta['training']['parameters']:,} parameters)")


@click.command("eval")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="Teacher checkpoint directory.")
@click.option("--student", type=click.Path(path_type=Path), default=None,
              help="Student run directory (from `rpd train`).")
@click.option("--policy", type=click.Path(path_type=Path), default=None,
              help="Exported student (FILE.onnx or FILE.pt from `rpd export`), run on the CPU "
                   "in the episodes --student runs.")
@click.option("--env", "env_id", required=True, help="Task id.")
@click.option("--episodes", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=None,
              help="First episode seed [default: the first of the seed plan's teacher-"
                   "evaluation range for a teacher, of its evaluation range for a student].")
@click.option("--held-out", is_flag=True,
              help="Episodes from the seed plan's held-out range, which no demo, cache "
                   "rollout, training episode or checkpoint choice used: the figure to publish.")
@click.option("--horizon", type=int, default=None,
              help="Steps per episode [default: 100 for a teacher (demos take 60-80 steps); "
                   "a student's training horizon].")
@click.option("--workers", type=int, default=2, show_default=True, help="Parallel processes.")
@click.option("--camera-shift", type=float, default=0.0, show_default=True,
              help="Rotate the teacher camera about the scene by DEG degrees.")
@click.option("--object-color", default=None,
              help="Show the teacher the task's object in this colour: green, red or yellow "
                   "(a task variation).")
@click.option("--stochastic", is_flag=True,
              help="Student: sample actions from the policy instead of taking its mean.")
@click.option("--checkpoint", type=click.Choice(["final", "best", "latest"]),
              default="final", show_default=True,
              help="Student: its final policy, the one of its best evaluation so far "
                   "(RUN/checkpoints/best.zip) or its latest checkpoint; best and latest work "
                   "on a run still training.")
@click.option("--chunk-mode", type=click.Choice(["label", "receding", "ensemble"]),
              default="label", show_default=True,
              help="How action chunks are executed: 'label' asks the teacher every step and "
                   "executes its first action (the policy RPD distils), 'receding' 4 actions "
                   "per call, 'ensemble' temporal ensembling.")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Write one mp4 per episode to this directory: the teacher's view, a pixel "
                   "student's own frames, or a state student's render camera (128 px).")
@sim_backend_option
@device_option
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Where to write the results [default: DIR/eval/ENV-hH.json, named apart "
                   "(-shiftD, -COLOR, -stochastic, -best, -seedS ...) when such an option is "
                   "given].")
def eval_cmd(teacher: Path | None, student: Path | None, policy: Path | None, env_id: str,
             episodes: int,
             seed: int | None, held_out: bool, horizon: int | None, workers: int,
             camera_shift: float,
             object_color: str | None, stochastic: bool, checkpoint: str, chunk_mode: str,
             video: Path | None, sim_backend: str, device: str,
             json_out: Path | None) -> None:
    """Closed-loop success of a teacher (or a student) on a task."""
    from rpd.data.devices import check_sim_backend, resolve_device
    from rpd.data.rundir import EVAL_DIR, view_suffix
    from rpd.data.seeds import EVALUATION, HELD_OUT
    from rpd.errors import InputError
    from rpd.pipeline.eval_teacher import DEFAULT_EVAL_SEED, TeacherEvalConfig, evaluate_teacher

    check_sim_backend(sim_backend)
    resolve_device(device)
    if sum(x is not None for x in (teacher, student, policy)) != 1:
        raise InputError("give exactly one of --teacher DIR, --student RUN or --policy FILE")
    if policy is not None and (stochastic or checkpoint != "final"):
        raise InputError(f"--policy {policy}: an exported policy is one checkpoint's mean "
                         "action; drop --stochastic/--checkpoint (see `rpd export --checkpoint`)")
    if teacher is None and (camera_shift or object_color):
        raise InputError("--camera-shift/--object-color change what a teacher sees; a state "
                         "student sees no camera: use them with --teacher")
    if teacher is not None and stochastic:
        raise InputError("--stochastic samples a student's actions; teachers act as they are")
    if teacher is not None and checkpoint != "final":
        raise InputError(f"--checkpoint {checkpoint} picks a student run's policy; a teacher "
                         "directory holds one model")
    if held_out and seed is not None:
        raise InputError(f"--held-out and --seed {seed}: give one (--held-out starts at "
                         f"{HELD_OUT.start:,})")
    default_seed = DEFAULT_EVAL_SEED if teacher is not None else EVALUATION.start
    seed = HELD_OUT.start if held_out else default_seed if seed is None else seed
    if teacher is not None and horizon is None:
        horizon = 100
    with Progress(episodes, f"eval {env_id}", "ep") as bar:
        if teacher is not None:
            result = evaluate_teacher(
                TeacherEvalConfig(teacher=teacher, env_id=env_id, episodes=episodes, seed=seed,
                                  horizon=horizon, workers=workers,
                                  camera_shift=camera_shift, object_color=object_color,
                                  chunk_mode=chunk_mode, video_dir=video,
                                  sim_backend=sim_backend, device=device),
                progress=bar.update)
        elif policy is not None:
            from rpd.pipeline.export import evaluate_policy

            result = evaluate_policy(policy, env_id, episodes, seed, horizon, video_dir=video,
                                     sim_backend=sim_backend, workers=workers)
        else:
            from rpd.pipeline.evaluate import evaluate_student

            result = evaluate_student(student, env_id, episodes, seed, horizon,
                                      stochastic=stochastic, video_dir=video,
                                      sim_backend=sim_backend, device=device,
                                      workers=workers, checkpoint=checkpoint)
    base = teacher if teacher is not None else student
    suffix = view_suffix(camera_shift, object_color) + ("-stochastic" if stochastic else "") + (
        "" if checkpoint == "final" else f"-{checkpoint}") + (
        "" if seed == default_seed else "-heldout" if seed == HELD_OUT.start
        else f"-seed{seed}")  # held-out runs apart
    if teacher is not None and chunk_mode != "label":
        suffix += f"-{chunk_mode}"  # beside the labelling figure, not over it
    if policy is not None:  # beside the exported file, named after it
        base, suffix = policy.parent, f"{suffix}-{policy.name}"
    horizon = result.get("horizon", horizon)
    path = json_out or base / EVAL_DIR / f"{env_id}-h{horizon}{suffix}.json"  # type: ignore[operator]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    def pick(*keys: str) -> float:
        return float(next((result[k] for k in keys if k in result), float("nan")))

    rows = [("env", env_id), ("episodes", result["episodes"]),
            ("horizon", horizon),
            ("seeds", f"{seed:,}.. ({result.get('seed_range')} range)"),
            ("success rate", f"{pick('success_rate', 'success'):.1%}")]
    if "success_at_end" in result:
        rows.append(("success at end", f"{pick('success_at_end'):.1%}"))
    if "actions" in result:
        rows.append(("actions", result["actions"]))
    if "chunk_mode" in result:
        rows.append(("chunks", f"{result['chunk_mode']} ({result['teacher_calls_per_step']:.2f} "
                               "teacher calls per step)"))
    rows += [("mean return", f"{pick('mean_return', 'return'):.2f}"),
             ("mean length", f"{pick('mean_length', 'length'):.1f}"), ("results", str(path))]
    for k, v in rows:
        click.echo(f"{k:<16} {v}")


@click.command("scripted-teacher")
@click.option("--env", "env_id", required=True,
              help="Task: PushCube-v1, PullCube-v1, PickCube-v1 or StackCube-v1.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Teacher directory to write (teacher.json).")
@click.option("--offset", type=float, nargs=3, default=(0.0, 0.0, 0.0), show_default=True,
              help="DX DY DZ (m): where the teacher believes the object is, relative to where "
                   "it is (a perception error).")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="Largest step as a fraction of the controller's 0.1 m (a slow teacher).")
@click.option("--force", is_flag=True, help="Replace a teacher already in --out.")
def scripted_teacher_cmd(env_id: str, out: Path, offset: tuple[float, float, float],
                         speed: float, force: bool) -> None:
    """Write a state-based scripted teacher of controlled error.

    It reads object and gripper poses from the simulator instead of an image, so it
    separates what RPD does from how good a VLA teacher is. Use the directory as --teacher
    anywhere (rpd eval, cache, train).
    """
    from rpd.data.schema import check_teacher_out
    from rpd.teachers.scripted import ScriptedTeacher

    check_teacher_out(out, force)
    teacher = ScriptedTeacher.build(env_id, offset=offset, speed=speed)
    teacher.save(out)
    click.echo(f"wrote scripted teacher to {out}: {env_id}, offset {list(offset)} m, "
               f"speed {speed}, fingerprint {teacher.fingerprint}")
