"""`rpd train`: train the RPD student (or plain PPO with --no-teacher)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rpd.commands._common import PhaseBars, Progress, device_option, sim_backend_option
from rpd.data.seeds import EVALUATION


@click.command("train")
@click.option("--env", "env_id", required=True, help="Task id, e.g. PushCube-v1.")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="Teacher checkpoint directory (not needed with --no-teacher).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Teacher-action store (`rpd cache`) to read and write live labels back to "
                   "[default: a new one in OUT/cache].")
@click.option("--steps", type=int, required=True, help="Total env steps.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--no-teacher", is_flag=True, help="Plain PPO with identical settings.")
@click.option("--reward", type=click.Choice(["dense", "sparse"]), default="dense",
              show_default=True)
@click.option("--obs", default="state", show_default=True,
              help="Student observation: state (MLP), rgb (camera frame alone, NatureCNN: the "
                   "paper's pixel student) or rgb+proprio (frame + joint positions/velocities).")
@click.option("--student-camera", default=None,
              help="A pixel student's camera: render or a sensor camera of the task "
                   "[default: the teacher's; render when the teacher sees no camera].")
@click.option("--student-image-size", type=int, default=None,
              help="A pixel student's image side in pixels, ≥ 36 [default: the teacher "
                   "camera's; 64 when the teacher sees no camera].")
@click.option("--critic-state", is_flag=True,
              help="Asymmetric critic: a pixel student's critic also reads the flat simulator "
                   "state (the actor never does).")
@click.option("--envs", type=int, default=8, show_default=True, help="Parallel envs.")
@click.option("--env-workers", type=int, default=None,
              help="CPU: processes stepping the envs, each a block of them [default: one per "
                   "core, at most one per env]. Results do not depend on it.")
@click.option("--horizon", type=int, default=None, help="Episode length (default: task's).")
@click.option("--offline-steps", type=int, default=None,
              help="Supervised steps on the cached labels first [default: 2000 with --cache].")
@click.option("--lambda", "lam", type=float, default=1.0, show_default=True,
              help="Weight λ of the distill term.")
@click.option("--lambda-schedule",
              type=click.Choice(["constant", "linear", "cosine", "adaptive"]),
              default="constant", show_default=True,
              help="adaptive: λ held while the student's evaluations are below its teacher's "
                   "success (+ --lambda-margin), halved once they stay ahead.")
@click.option("--lambda-decay-steps", type=int, default=None,
              help="Env step where a decaying λ reaches 0.")
@click.option("--teacher-success", type=float, default=None,
              help="The adaptive schedule's reference success [default: the teacher's "
                   "TEACHER/eval/ENV-hH.json at the student's horizon].")
@click.option("--lambda-margin", type=float, default=0.05, show_default=True,
              help="How far above its teacher the student must be before adaptive λ falls.")
@click.option("--distill", type=click.Choice(["mse", "l1", "bc"]), default="mse",
              show_default=True)
@click.option("--live-budget", type=int, default=None, help="Max live teacher calls per rollout.")
@click.option("--cache-radius", type=float, default=None,
              help="Lookup hit radius [default: exact match; with --no-label-model 0.05 (RMS "
                   "key distance per dim, in key-scale units) for a `rpd cache` store].")
@click.option("--label-model/--no-label-model", default=True, show_default=True,
              help="Let an ensemble fitted to the store's labels answer the states no stored "
                   "key is near, where its members agree (never written back as labels).")
@click.option("--label-model-spread", type=float, default=0.05, show_default=True,
              help="The ensemble answers when its members' RMS std is at most this.")
@click.option("--answer-audit", type=int, default=0, show_default=True,
              help="Per rollout, check this many store/model answers against the live "
                   "teacher and log their error (calls counted apart as audit_calls).")
@click.option("--label-replay", type=int, default=0, show_default=True,
              help="Keep this many labelled transitions of earlier rollouts and fit the "
                   "distill term on them too (0: the current rollout only, the paper's).")
@click.option("--n-epochs", type=int, default=8, show_default=True, help="PPO epochs per rollout.")
@click.option("--n-steps", type=int, default=64, show_default=True,
              help="Steps per env per rollout.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--max-grad-norm", type=float, default=0.5, show_default=True)
@click.option("--target-kl", type=float, default=0.0, show_default=True,
              help="Stop an update's epochs once the policy's KL from the rollout policy "
                   "exceeds 1.5x this; 0 = never stop early.")
@click.option("--eval-every", type=int, default=10_000, show_default=True)
@click.option("--eval-episodes", type=int, default=10, show_default=True)
@click.option("--eval-seed", type=int, default=EVALUATION.start, show_default=True,
              help="First seed of the in-training evaluations, in the seed plan's evaluation "
                   f"range [{EVALUATION.start:,}, {EVALUATION.stop:,}).")
@click.option("--checkpoint-every", type=int, default=None,
              help="Also checkpoint (without evaluating) every this many env steps, so a "
                   "killed run loses less [default: with each evaluation].")
@click.option("--net-arch", default="256,256", show_default=True, help="Hidden layer sizes.")
@click.option("--log-std-init", type=float, default=-1.5, show_default=True,
              help="Initial log std of the policy's Gaussian (ManiSkill's PPO baseline: -0.5).")
@click.option("--normalize-obs/--raw-obs", default=True, show_default=True,
              help="Standardise observations inside the policy with running statistics.")
@click.option("--teacher-camera-shift", type=float, default=0.0, show_default=True,
              help="The teacher sees its camera rotated by this many degrees (robustness).")
@click.option("--teacher-object-color", default=None,
              help="The teacher sees the task's object in this colour: green, red or yellow "
                   "(a task variation it was not fine-tuned on).")
@sim_backend_option
@device_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
def train(env_id: str, teacher: Path | None, cache: Path | None, steps: int, out: Path,
          no_teacher: bool, reward: str, obs: str, student_camera: str | None,
          student_image_size: int | None, critic_state: bool, envs: int,
          env_workers: int | None, horizon: int | None,
          offline_steps: int | None, lam: float, lambda_schedule: str,
          teacher_success: float | None, lambda_margin: float,
          lambda_decay_steps: int | None, distill: str, live_budget: int | None,
          cache_radius: float | None, label_model: bool, label_model_spread: float,
          answer_audit: int, label_replay: int,
          n_epochs: int, n_steps: int, batch_size: int,
          max_grad_norm: float, target_kl: float, eval_every: int, eval_episodes: int,
          eval_seed: int, checkpoint_every: int | None, net_arch: str,
          log_std_init: float, normalize_obs: bool, teacher_camera_shift: float,
          teacher_object_color: str | None, sim_backend: str, device: str, seed: int,
          resume: bool) -> None:
    """Train a PPO student distilling --teacher's actions (RPD, arXiv 2503.05833)."""
    from rpd.errors import InputError, sigterm_as_interrupt
    from rpd.pipeline.train import TrainConfig
    from rpd.pipeline.train import train as run_train

    try:
        arch = tuple(int(x) for x in net_arch.split(","))
    except ValueError:
        raise InputError(
            f"--net-arch {net_arch!r}: use comma-separated sizes, e.g. 256,256") from None
    cfg = TrainConfig(env_id=env_id, out=out, teacher=teacher, steps=steps, cache=cache,
                      no_teacher=no_teacher, reward=reward, obs=obs,
                      student_camera=student_camera, student_image_size=student_image_size,
                      critic_state=critic_state, envs=envs, env_workers=env_workers,
                      horizon=horizon,
                      offline_steps=offline_steps, lam=lam, lambda_schedule=lambda_schedule,
                      teacher_success=teacher_success, lambda_margin=lambda_margin,
                      lambda_decay_steps=lambda_decay_steps, distill=distill,
                      live_budget=live_budget, cache_radius=cache_radius,
                      label_model=label_model, label_model_spread=label_model_spread,
                      answer_audit=answer_audit, label_replay=label_replay,
                      n_epochs=n_epochs,
                      n_steps=n_steps, batch_size=batch_size, max_grad_norm=max_grad_norm,
                      target_kl=target_kl or None, eval_every=eval_every,
                      eval_episodes=eval_episodes, eval_seed=eval_seed,
                      checkpoint_every=checkpoint_every,
                      net_arch=arch,
                      log_std_init=log_std_init, normalize_obs=normalize_obs,
                      teacher_camera_shift=teacher_camera_shift,
                      teacher_object_color=teacher_object_color,
                      sim_backend=sim_backend, device=device, seed=seed, resume=resume)
    offline_bars = {"render": ("offline phase: render stored states", "frame"),
                    "fit": ("offline phase: fit", "step")}
    with PhaseBars(offline_bars) as offline, Progress(steps, f"train {env_id}", "step") as bar:
        def trained(n: int) -> None:
            offline.close()  # the offline phase is over once env steps run
            bar.update(n)

        def evaluated(row: dict[str, Any]) -> None:  # a background run's log says how it goes
            calls = "" if no_teacher else f", {row['live_teacher_calls']:,} live calls"
            bar.set_postfix(f"eval {row['success']:.2f} at {row['step']:,}{calls}")

        with sigterm_as_interrupt():  # a scheduler's stop: workers closed, work kept
            meta = run_train(cfg, progress=trained, offline_progress=offline.update,
                             evaluated=evaluated)
    m = meta["metrics"]
    click.echo(f"wrote {out}: {m['steps']} steps, eval success {m['eval_success']:.2f}, "
               f"live teacher calls {m['live_teacher_calls']}")
