"""Building the student of a training run: its label source, a new RPDPPO model or the one a
resume loads from its checkpoint, how its live labels are made, and what student.json says
it sees."""

from __future__ import annotations

import logging
from typing import Any

from rpd.data.devices import resolve_device
from rpd.data.rundir import (
    CACHE_DIR,
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    LATEST_ZIP,
    REPLAY_NPZ,
    TB_DIR,
    TRAIN_STATE,
)
from rpd.data.views import CameraSpec
from rpd.labels.protocol import LabelSource
from rpd.pipeline.evaluate import load_model
from rpd.pipeline.run_dir import (
    RunState,
    load_replay,
    read_train_state,
    resumed_config,
    trim_eval_rows,
)
from rpd.pipeline.train_config import TrainConfig

logger = logging.getLogger(__name__)


EXACT_RADIUS = 1e-5
"""Hit radius of the run's own store: exact matches only (RMS distance per observation dim)."""



def open_label_source(cfg: TrainConfig, teacher: Any, obs_dim: int) -> LabelSource:
    """The run's label source.

    A `rpd cache` Zarr store given with --cache, or (no --cache) an empty Zarr store created
    in RUN/cache and filled live.
    """
    from rpd.data.store import KeySpec
    from rpd.labels.lookup import DEFAULT_RADIUS, TeacherCache

    if cfg.cache is None:
        # exact match (up to float rounding in the index) unless a radius is given
        cache = TeacherCache.open(cfg.out / CACHE_DIR, teacher, env_id=cfg.env_id,
                                  radius=cfg.cache_radius or EXACT_RADIUS, create=True,
                                  key_spec=KeySpec.fixed(obs_dim))
    else:
        # the label model answers more states, better, than neighbours (measured in the README)
        default = EXACT_RADIUS if cfg.label_model else DEFAULT_RADIUS
        radius = default if cfg.cache_radius is None else cfg.cache_radius
        cache = TeacherCache.open(cfg.cache, teacher, env_id=cfg.env_id, radius=radius)
    cache.sim_backend = cfg.sim_backend
    if cfg.label_model:
        from rpd.labels.model import EnsembleConfig, LabelEnsemble

        cache.model = LabelEnsemble(EnsembleConfig(max_spread=cfg.label_model_spread),
                                    seed=cfg.seed)
    return cache



def new_model(cfg: TrainConfig, venv: Any, source: LabelSource | None) -> tuple[Any, RunState]:
    """A fresh student for a new run."""
    from rpd.student.rpdppo import RPDPPO

    model = RPDPPO(
        cfg.policy, venv, label_source=source, distill=cfg.distill,
        lambda_schedule=cfg.schedule, live_budget=cfg.live_budget,
        answer_audit=cfg.answer_audit, label_replay=cfg.label_replay,
        n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate, gamma=cfg.resolved_gamma,
        gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range, target_kl=cfg.target_kl,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm, ent_coef=cfg.ent_coef, policy_kwargs=cfg.policy_kwargs,
        tensorboard_log=str(cfg.out / TB_DIR), seed=cfg.seed, device=resolve_device(cfg.device),
        verbose=0)
    return model, RunState()



def resume_model(cfg: TrainConfig, venv: Any, source: LabelSource | None,
                  info: dict[str, Any]) -> tuple[Any, RunState, dict[str, Any] | None]:
    """The student of a resumed run, from its last checkpoint (`info`: latest.json), with the
    options a resume may change applied, and the checkpoint's train state (`read_train_state`)
    to apply last. Every checkpoint file is read before eval.csv is trimmed or config.json
    rewritten. (`prepare_run_dir` has checked the options that must not change.)"""
    from rpd.data.schema import write_json_atomic

    ckpt = cfg.out / CHECKPOINTS_DIR
    model = load_model(ckpt / LATEST_ZIP, "--resume",
                       f"delete {ckpt} to start the run again",
                       env=venv, device=resolve_device(cfg.device), label_source=source,
                       tensorboard_log=str(cfg.out / TB_DIR))
    model.live_budget = cfg.live_budget  # a changed budget applies from here on
    model.answer_audit = cfg.answer_audit
    model.label_replay = cfg.label_replay
    load_replay(model, ckpt / REPLAY_NPZ)
    train_state = read_train_state(ckpt / TRAIN_STATE, model.num_timesteps)
    state = RunState(wall_offset=info["wall_time_s"], last_eval=info["last_eval"],
                     last_checkpoint=info["num_timesteps"],
                     last_result=trim_eval_rows(cfg.out, info))
    write_json_atomic(cfg.out / CONFIG_JSON, resumed_config(cfg))
    logger.info("resuming %s at step %d", cfg.out, model.num_timesteps)
    return model, state, train_state



def attach_labellers(model: Any, cfg: TrainConfig, teacher: Any,
                      view: CameraSpec | None) -> None:
    """How the model's live labels are made: from a pixel student's own frames when it sees
    exactly the teacher's view (camera, size, no shift or colour change), else by restoring
    each state and (for a teacher with a camera) rendering it, counted in teacher_renders."""
    if teacher is None:
        return
    model.label_renders = not teacher.uses_env_state
    if view is not None and model.label_renders and teacher.spec.camera == view:
        from rpd.labels.live import TeacherLabeler

        labeler = TeacherLabeler(teacher, cfg.env_id, batch_size=cfg.teacher_batch)
        model.frame_labeller = labeler.label_frames
        logger.info("labels from the student's own frames (%s %dx%d, the teacher's view)",
                    view.name, view.width, view.height)



def obs_spec(model: Any, cfg: TrainConfig, view: CameraSpec | None) -> dict[str, Any]:
    """student.json's description of what the student sees."""
    space = model.observation_space
    if view is None:
        return dict(mode=cfg.obs, shape=list(space.shape), key="flat state observation")
    return dict(mode=cfg.obs, camera=view.to_dict(),
                shapes={k: list(v.shape) for k, v in space.spaces.items()},
                actor_keys=list(model.policy.actor_keys),
                critic_keys=list(model.policy.critic_keys),
                key="flat state observation ('state')")
