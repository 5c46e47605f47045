"""`rpd train`: the RPD student, from a teacher (and optionally a store) to a run directory.

Run directory:

    RUN/config.json          the TrainConfig (a resumed run must match it; --steps may grow)
    RUN/eval.csv             step, success, return, wall_time_s, live_teacher_calls
    RUN/tb/                  TensorBoard events (SB3 logger: rollout/ train/ distill/ eval/ time/)
    RUN/checkpoints/latest.zip (+ latest.json)   for --resume
    RUN/checkpoints/best.zip (+ best.json)       the policy of the best evaluation so far
                                                 (`rpd eval --student RUN --checkpoint best`)
    RUN/checkpoints/replay.npz   the label replay while λ > 0 (--label-replay), for --resume
    RUN/checkpoints/train_state.pt   the random states and the label model, for --resume
    RUN/cache/               live teacher labels (the run's own Zarr store) when no --cache is given
    RUN/student.zip          the final SB3 model
    RUN/student.json         env, obs spec, teacher fingerprint, λ schedule, final metrics

The config (every option, its default and whether a resume may change it) is
`rpd.pipeline.train_config.TrainConfig`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rpd.data.devices import limit_cpu_threads
from rpd.data.rundir import (
    STUDENT_JSON,
    STUDENT_ZIP,
)
from rpd.data.vec_envs import make_env, make_vec_env
from rpd.data.views import CameraSpec
from rpd.errors import InputError, disk_writes
from rpd.pipeline.offline import OfflineProgress, offline_phase
from rpd.pipeline.run_dir import RunState, apply_train_state, prepare_run_dir
from rpd.pipeline.student_model import (
    attach_labellers,
    new_model,
    obs_spec,
    open_label_source,
    resume_model,
)
from rpd.pipeline.train_config import TrainConfig
from rpd.pipeline.train_eval import evaluate_and_checkpoint, make_callback

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig, progress: Callable[[int], None] | None = None,
          offline_progress: OfflineProgress | None = None,
          evaluated: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train an RPD student (or plain PPO with `no_teacher`) and write the run directory.

    Args:
        cfg: The run configuration.
        progress: Called with the number of new env steps after each rollout (a progress bar).
        offline_progress: The offline phase's progress (`OfflineProgress`).
        evaluated: Called with each evaluation's eval.csv row during training (keys step,
            success, ret, wall_time_s, live_teacher_calls), and first with a resumed run's
            latest one.

    Returns:
        The contents of student.json.
    """
    from stable_baselines3.common.vec_env import VecMonitor

    from rpd.data.schema import write_json_atomic

    limit_cpu_threads()
    teacher = None if cfg.no_teacher else _load_teacher(cfg)
    view = cfg.student_view(teacher)
    env_cfg = cfg.env_config(view)
    # before the run dir: a bad camera, a store made for another teacher or an adaptive λ
    # without the teacher's success leaves nothing
    if cfg.lambda_schedule == "adaptive" and not cfg.resume:
        cfg.resolved_teacher_success()
    eval_env = make_env(env_cfg)
    space = eval_env.observation_space
    obs_dim = int((space["state"] if view is not None else space).shape[-1])
    source = None
    try:
        if teacher is not None and cfg.cache is not None:
            source = open_label_source(cfg, teacher, obs_dim)
        resume_info = prepare_run_dir(cfg)
        if teacher is not None and source is None:  # the run's own store, in the run dir
            source = open_label_source(cfg, teacher, obs_dim)
        # a resumed run's envs start their episodes as the uninterrupted run's did after the
        # checkpoint (RPDPPO.restart_episodes)
        start_step = int(resume_info["num_timesteps"]) if resume_info is not None else 0
        venv = VecMonitor(make_vec_env(env_cfg, cfg.envs, seed=cfg.seed,
                                       with_env_state=not cfg.no_teacher,
                                       start_step=start_step, workers=cfg.env_workers))
    except BaseException:
        eval_env.close()
        if source is not None:
            source.close()
        _close_teacher(teacher)
        raise
    tracker = _start_wandb(cfg) if cfg.wandb else None
    try:
        model, state, train_state = (
            resume_model(cfg, venv, source, resume_info) if resume_info is not None
            else (*new_model(cfg, venv, source), None))
        attach_labellers(model, cfg, teacher, view)
        state.env = dict(env_id=env_cfg.env_id, obs_mode=env_cfg.obs_mode,
                         control_mode=env_cfg.control_mode, reward_mode=env_cfg.reward_mode,
                         max_episode_steps=env_cfg.max_episode_steps,
                         camera=view.to_dict() if view is not None else None)
        if resume_info is None:
            state.offline = offline_phase(model, source, cfg, view, offline_progress)
        callback = make_callback(cfg, eval_env, state, progress, evaluated)
        remaining = cfg.steps - model.num_timesteps
        steps_before, t_learn = model.num_timesteps, time.perf_counter()
        update_before = model.update_seconds
        if remaining > 0:
            if train_state is not None:
                apply_train_state(model, train_state)
            model.learn(remaining, callback=callback, tb_log_name="rpd",
                        reset_num_timesteps=False)
        # env steps/s of this invocation's training (rollouts, labels, updates; not evals)
        learn_s = time.perf_counter() - t_learn - state.eval_time
        trained = model.num_timesteps - steps_before
        steps_per_s = trained / learn_s if learn_s > 0 and trained > 0 else None
        update_share = ((model.update_seconds - update_before) / learn_s
                        if steps_per_s is not None else None)
        if state.last_result is None or state.last_eval != model.num_timesteps:
            evaluate_and_checkpoint(model, eval_env, cfg, state)
        with disk_writes(f"writing {cfg.out / STUDENT_ZIP}",
                         "the last checkpoint (checkpoints/latest.zip) is intact"):
            model.save(cfg.out / f".{STUDENT_ZIP}.tmp.zip")  # atomic: no half-written student
            (cfg.out / f".{STUDENT_ZIP}.tmp.zip").replace(cfg.out / STUDENT_ZIP)
        meta = _student_json(model, cfg, teacher, view, state, steps_per_s, update_share)
        write_json_atomic(cfg.out / STUDENT_JSON, meta)
        return meta
    finally:
        venv.close()
        eval_env.close()
        if source is not None:
            source.close()
        _close_teacher(teacher)
        if tracker is not None:
            _finish_wandb(tracker)


def _start_wandb(cfg: TrainConfig) -> Any:
    """A Weights & Biases run that mirrors the run's TensorBoard scalars (SB3 writes them;
    wandb's `sync_tensorboard` forwards them) and holds its config. Its id is derived from the
    run directory, so a resumed run continues the same wandb run."""
    import hashlib

    try:
        import wandb
    except ImportError:
        raise InputError("--wandb needs the wandb package: pip install wandb") from None
    run_id = "rpd-" + hashlib.sha1(str(cfg.out.resolve()).encode()).hexdigest()[:12]
    return wandb.init(project=cfg.wandb_project, name=cfg.out.name, id=run_id, resume="allow",
                      dir=str(cfg.out), config=cfg.to_dict(), sync_tensorboard=True)


def _finish_wandb(tracker: Any) -> None:
    """End the wandb run (exit code 1 when training is failing) and wait for wandb's service to
    write it out: `finish()` alone can return before an offline run's records reach OUT/wandb.
    A wandb failure here is logged, never raised over the run's own outcome."""
    import sys

    import wandb

    failing = sys.exc_info()[0] is not None
    try:
        tracker.finish(exit_code=1 if failing else 0)
    except Exception:  # wandb's own error; the run's files are already written
        logger.warning("wandb: finishing the run failed", exc_info=True)
    finally:
        try:
            wandb.teardown()
        except Exception:
            logger.warning("wandb: shutting down failed", exc_info=True)


def _close_teacher(teacher: Any) -> None:
    """Close what a teacher holds open (a remote teacher's connection)."""
    close = getattr(teacher, "close", None)  # only remote teachers hold a connection
    if close is not None:
        close()


def _load_teacher(cfg: TrainConfig) -> Any:
    """The run's teacher, on its device and with the view the run shows it, checked against
    the student's control mode and task."""
    from rpd.teachers.base import load_teacher, place_teacher

    teacher = place_teacher(load_teacher(cfg.teacher), cfg.device)  # type: ignore[arg-type]
    if cfg.teacher_camera_shift or cfg.teacher_object_color:
        teacher.with_view(shift_deg=cfg.teacher_camera_shift,
                          object_color=cfg.teacher_object_color)
    control_mode = cfg.env_config(cfg.student_view(teacher)).control_mode
    if teacher.spec.control_mode != control_mode:
        raise InputError(f"--teacher {cfg.teacher}: acts in {teacher.spec.control_mode}, the "
                         f"student in {control_mode}; use a teacher fine-tuned for "
                         f"{control_mode}")
    teacher.spec.instruction(cfg.env_id)
    return teacher


def _student_json(model: Any, cfg: TrainConfig, teacher: Any, view: CameraSpec | None,
                  state: RunState, steps_per_s: float | None,
                  update_share: float | None) -> dict[str, Any]:
    """student.json: what the student sees and acts in, its teacher, λ, and the run's metrics
    (its final evaluation, live teacher calls, answers, speed)."""
    wall = state.wall
    final = state.last_result
    assert final is not None
    return dict(
        env=state.env,
        obs_spec=obs_spec(model, cfg, view),
        action_dim=int(model.action_space.shape[0]),
        device=next(model.policy.parameters()).device.type,  # where it trained
        teacher=None if teacher is None else dict(
            path=str(cfg.teacher), kind=teacher.kind, fingerprint=teacher.fingerprint,
            checkpoint_fingerprint=teacher.checkpoint_fingerprint),
        distill=None if cfg.no_teacher else cfg.distill,
        lambda_schedule=None if cfg.no_teacher else model.lambda_schedule.to_dict(),
        metrics=dict(steps=int(model.num_timesteps), eval_success=final["success"],
                     eval_return=final["ret"], eval_episodes=cfg.eval_episodes,
                     eval_seed=cfg.eval_seed, wall_time_s=round(wall, 2),
                     live_teacher_calls=int(model.live_teacher_calls),
                     teacher_renders=int(model.teacher_renders),
                     own_frame_labels=model.frame_labeller is not None,
                     live_teacher_calls_per_step=(model.live_teacher_calls
                                                  / max(model.num_timesteps, 1)),
                     train_steps_per_s=steps_per_s,
                     update_share=update_share,
                     cache_hit_rate=(model.cache_hits / model.cache_lookups
                                     if model.cache_lookups else None),
                     answers=dict(model.answers, live=int(model.live_teacher_calls)),
                     audit_calls=int(model.audit_calls),
                     answer_error={k: total / n for k, (total, n)
                                   in model.answer_error.items() if n},
                     offline=state.offline),
        config=cfg.to_dict(),
    )
