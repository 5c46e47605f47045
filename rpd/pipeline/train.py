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

import csv
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.devices import limit_cpu_threads, resolve_device
from rpd.data.rundir import (
    BEST_JSON,
    BEST_ZIP,
    CACHE_DIR,
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    EVAL_CSV,
    LATEST_JSON,
    LATEST_ZIP,
    REPLAY_NPZ,
    STUDENT_JSON,
    STUDENT_ZIP,
    TB_DIR,
    TRAIN_STATE,
)
from rpd.data.vec_envs import make_env, make_vec_env
from rpd.data.views import CameraSpec
from rpd.errors import InputError, disk_writes
from rpd.labels.protocol import LabelSource
from rpd.pipeline.evaluate import load_model, run_episodes_student
from rpd.pipeline.train_config import ABSENT_MEANS, RESUME_FIXED, TrainConfig

logger = logging.getLogger(__name__)

TRAIN_STATE_VERSION = 1
EXACT_RADIUS = 1e-5
"""Hit radius of the run's own store: exact matches only (RMS distance per observation dim)."""
EVAL_COLUMNS = ("step", "success", "return", "wall_time_s", "live_teacher_calls")


@dataclass
class RunState:
    """What the evaluation callback, evaluation and checkpointing share during one invocation
    of `train` (a resumed run starts from its checkpoint's values).

    Attributes:
        t0: `time.perf_counter()` when this invocation started.
        wall_offset: Wall seconds of the run's earlier invocations (resume).
        last_eval: Env step of the last evaluation.
        last_checkpoint: Env step of the last checkpoint.
        last_result: That evaluation's eval.csv row (None before the first).
        offline: The offline phase's summary (student.json), if it ran.
        eval_time: Seconds this invocation spent evaluating (excluded from steps/s).
        env: The student's env (student.json's "env"), recorded with every checkpoint so
            `rpd eval --checkpoint latest|best` can run a run still training.
    """

    t0: float = field(default_factory=time.perf_counter)
    wall_offset: float = 0.0
    last_eval: int = 0
    last_checkpoint: int = 0
    last_result: dict[str, Any] | None = None
    offline: dict[str, float] | None = None
    eval_time: float = 0.0
    env: dict[str, Any] | None = None

    @property
    def wall(self) -> float:
        """Wall seconds of the whole run so far."""
        return self.wall_offset + time.perf_counter() - self.t0


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


def _make_callback(cfg: TrainConfig, eval_env: Any, state: RunState,
                   progress: Callable[[int], None] | None,
                   evaluated: Callable[[dict[str, Any]], None] | None) -> Any:
    from rpd.student.rpdppo import UpdateEndCallback

    class StudentEvalCallback(UpdateEndCallback):
        """After the update of every `eval_every` env steps: deterministic eval on fixed seeds
        -> eval.csv and TensorBoard (eval/), then a checkpoint, then every env restarts its
        episodes as a run resumed there does (`RPDPPO.restart_episodes`). Reports progress
        after each rollout and each evaluation's row (a resumed run's latest first)."""

        def _on_training_start(self) -> None:
            self._last_steps = self.num_timesteps
            if progress is not None and self.num_timesteps:
                progress(self.num_timesteps)  # a resumed run's bar starts where it stopped
            if evaluated is not None and state.last_result is not None:
                evaluated(state.last_result)

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if progress is not None:
                progress(self.num_timesteps - self._last_steps)
            self._last_steps = self.num_timesteps

        def _on_update_end(self) -> None:
            model = self.model
            if model.num_timesteps - state.last_eval >= cfg.eval_every:
                row = evaluate_and_checkpoint(model, eval_env, cfg, state)
                if evaluated is not None:
                    evaluated(row)
            elif (cfg.checkpoint_every is not None
                  and model.num_timesteps - state.last_checkpoint >= cfg.checkpoint_every):
                _checkpoint(model, cfg, state, state.wall)
            else:
                return
            if model.num_timesteps < model._total_timesteps:
                model.restart_episodes(model.num_timesteps)

    return StudentEvalCallback()


def evaluate_and_checkpoint(model: Any, env: Any, cfg: TrainConfig,
                            state: RunState) -> dict[str, Any]:
    """Evaluate deterministically, append a row to eval.csv, log eval/, save a checkpoint."""
    t_eval = time.perf_counter()
    res = run_episodes_student(model, env, cfg.eval_episodes, cfg.eval_seed)
    observe = getattr(model.lambda_schedule, "observe", None)
    if observe is not None and model.label_source is not None:  # adaptive λ, before the save
        reason = observe(model.num_timesteps, res["success"])
        if reason is not None:
            logger.info("step %d: adaptive λ: %s", model.num_timesteps, reason)
    wall = state.wall
    row = dict(step=model.num_timesteps, success=res["success"], ret=res["ret"],
               wall_time_s=round(wall, 2), live_teacher_calls=model.live_teacher_calls)
    with open(cfg.out / EVAL_CSV, "a", newline="") as f:
        csv.writer(f).writerow([row[k] for k in
                                ("step", "success", "ret", "wall_time_s", "live_teacher_calls")])
    model.logger.record("eval/success", res["success"])
    model.logger.record("eval/return", res["ret"])
    model.logger.record("eval/live_teacher_calls", model.live_teacher_calls)
    model.logger.dump(model.num_timesteps)  # at its step, with the update it evaluates
    state.last_eval = model.num_timesteps
    state.last_result = row
    logger.info("step %d: success %.2f return %.2f live teacher calls %d", row["step"],
                row["success"], row["ret"], row["live_teacher_calls"])
    _checkpoint(model, cfg, state, wall)
    _keep_if_best(cfg.out / CHECKPOINTS_DIR, row)
    state.eval_time += time.perf_counter() - t_eval
    return row


def _keep_if_best(ckpt: Path, row: dict[str, Any]) -> None:
    """Copy the checkpoint just written to best.zip (+ best.json: its eval.csv row, under the
    same column names) when its evaluation success beats every earlier one (a tie keeps the
    earlier). Students often peak and then decay (the README's pixel runs), so the
    final policy is not always the one to deploy; choosing on the evaluation seeds, then
    measuring on held-out ones, keeps the figure honest."""
    import shutil

    from rpd.data.schema import write_json_atomic

    best_json = ckpt / BEST_JSON
    if best_json.is_file():
        try:
            best = json.loads(best_json.read_text())
            if row["success"] <= float(best["success"]):
                return
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("%s is unreadable; replacing it with step %d's", best_json,
                           row["step"])
    kept = f"{ckpt / 'latest.zip'} is intact"
    with disk_writes(f"copying the best checkpoint (step {row['step']}) in {ckpt}", kept):
        try:
            shutil.copyfile(ckpt / LATEST_ZIP, ckpt / ".best.tmp.zip")
            (ckpt / ".best.tmp.zip").replace(ckpt / BEST_ZIP)
        finally:
            (ckpt / ".best.tmp.zip").unlink(missing_ok=True)
        write_json_atomic(best_json, {col: row["ret" if col == "return" else col]
                                      for col in EVAL_COLUMNS})


def _trim_eval_rows(out: Path, info: dict[str, Any]) -> dict[str, Any] | None:
    """On resume: drop eval.csv rows written after the checkpoint (a run killed between its
    evaluation and its checkpoint) and return the checkpoint's own evaluation row, so a
    finished run resumed with the same --steps is not evaluated (and listed) twice."""
    path = out / EVAL_CSV
    if not path.is_file():
        return None
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["step"]) <= int(info["num_timesteps"])]
        for r in kept:
            float(r["success"]), float(r["return"]), float(r["wall_time_s"])
            int(r["live_teacher_calls"])
    except (KeyError, ValueError, TypeError, csv.Error) as e:
        raise InputError(f"--resume: {path} is malformed ({type(e).__name__}: {str(e)[:80]}); "
                         f"repair it (columns {', '.join(EVAL_COLUMNS)}) or delete it") from None
    if len(kept) != len(rows):
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(EVAL_COLUMNS)
            writer.writerows([r[k] for k in EVAL_COLUMNS] for r in kept)
        tmp.replace(path)
    last = [r for r in kept if int(r["step"]) == int(info["last_eval"])]
    if not last:
        return None
    r = last[-1]
    return dict(step=int(r["step"]), success=float(r["success"]), ret=float(r["return"]),
                wall_time_s=float(r["wall_time_s"]),
                live_teacher_calls=int(r["live_teacher_calls"]))


def _checkpoint(model: Any, cfg: TrainConfig, state: RunState, wall: float) -> None:
    from rpd.data.schema import write_json_atomic

    ckpt = cfg.out / CHECKPOINTS_DIR
    ckpt.mkdir(exist_ok=True)
    kept = (f"the last good checkpoint ({ckpt / 'latest.zip'}) and every published store part "
            "are intact")
    with disk_writes(f"writing the checkpoint of step {model.num_timesteps} in {ckpt}", kept):
        _save_replay(model, ckpt / REPLAY_NPZ)
        _save_train_state(model, ckpt / TRAIN_STATE)
        try:
            model.save(ckpt / ".latest.tmp.zip")
        except BaseException:
            (ckpt / ".latest.tmp.zip").unlink(missing_ok=True)
            raise
        (ckpt / ".latest.tmp.zip").replace(ckpt / LATEST_ZIP)
        write_json_atomic(ckpt / LATEST_JSON, dict(num_timesteps=model.num_timesteps,
                                                   wall_time_s=wall,
                                                   last_eval=state.last_eval, env=state.env))
        state.last_checkpoint = model.num_timesteps
        if model.label_source is not None:
            model.label_source.flush()


def _save_replay(model: Any, path: Path) -> None:
    """The label replay beside the checkpoint while λ > 0, so a resume continues with the
    labels it had (20,000 64 px frames: 245 MB); once λ is 0 the replay is unused and the
    file goes."""
    lam = model.lambda_schedule(model.num_timesteps) if model.label_source is not None else 0.0
    if model.replay is not None and len(model.replay) and lam > 0:
        model.replay.save(path, model.num_timesteps)
    else:
        path.unlink(missing_ok=True)


def _load_replay(model: Any, path: Path) -> None:
    """Give a resumed model the replay saved with its checkpoint, if it matches (step and
    capacity: a changed --label-replay, or a run killed between the two writes, starts it
    empty). An unreadable file is an InputError: the run would go on without its labels."""
    import zipfile

    from rpd.labels.replay import LabelReplay

    if model.label_replay <= 0 or not path.is_file():
        return
    try:
        replay = LabelReplay.load(path, model.num_timesteps, model.label_replay)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise InputError(f"--resume: {path} is unreadable ({type(e).__name__}: {str(e)[:80]}); "
                         "delete it to resume with an empty label replay") from None
    if replay is None:
        logger.warning("%s belongs to another step or --label-replay; the label replay starts "
                       "empty", path)
        return
    model.replay = replay
    logger.info("label replay restored: %d labelled transitions", len(replay))


def _save_train_state(model: Any, path: Path) -> None:
    """What the checkpoint's .zip leaves out and the rest of the run depends on: the random
    states of torch (action noise), numpy (minibatch order) and Python, and the label model
    (its weights and fit count), as tensors and plain values (read with weights_only=True)."""
    import random

    import torch as th

    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    version, py_state, gauss_next = random.getstate()
    ensemble = model.label_source.model if model.label_source is not None else None
    state = dict(version=TRAIN_STATE_VERSION, num_timesteps=int(model.num_timesteps),
                 torch=th.get_rng_state(),
                 cuda=th.cuda.get_rng_state_all() if th.cuda.is_initialized() else [],
                 numpy=dict(kind=str(kind), keys=th.from_numpy(np.asarray(keys, np.int64)),
                            pos=int(pos), has_gauss=int(has_gauss), gauss=float(gauss)),
                 python=dict(version=int(version), state=th.tensor(py_state, dtype=th.int64),
                             gauss_next=gauss_next),
                 label_model=None if ensemble is None else ensemble.state_dict())
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        th.save(state, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_train_state(path: Path, step: int) -> dict[str, Any] | None:
    """The random states and label model saved with the checkpoint of `step`, ready for
    `_apply_train_state`; None (a warning: the run goes on, though not exactly as one never
    stopped) for a checkpoint without one (an older rpd) or with another step's (a run killed
    between the writes). An unreadable file is an InputError."""
    import pickle
    import zipfile

    import torch as th

    fix = ("delete it to resume with fresh random states (the resumed run then differs from "
           "one never stopped)")
    if not path.is_file():
        logger.warning("%s is missing (a checkpoint of an older rpd): the run resumes with fresh "
                       "random states and label model", path)
        return None
    try:
        state = th.load(path, weights_only=True)
        if not isinstance(state, dict) or state.get("version") != TRAIN_STATE_VERSION:
            raise ValueError(f"not a version {TRAIN_STATE_VERSION} train state")
        n, p = state["numpy"], state["python"]
        ready = dict(
            step=int(state["num_timesteps"]), torch=state["torch"], cuda=list(state["cuda"]),
            numpy=(n["kind"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                   int(n["has_gauss"]), float(n["gauss"])),
            python=(int(p["version"]), tuple(int(x) for x in p["state"].tolist()),
                    p["gauss_next"]),
            label_model=state["label_model"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
            TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise InputError(f"--resume: {path} is unreadable ({type(e).__name__}: "
                         f"{str(e)[:80]}); {fix}") from None
    if ready["step"] != step:
        logger.warning("%s belongs to step %d, the checkpoint to %d: the run resumes with fresh "
                       "random states and label model", path, ready["step"], step)
        return None
    return ready


def _apply_train_state(model: Any, state: dict[str, Any]) -> None:
    """Restore what `_save_train_state` saved (`_read_train_state`'s form); last before
    learning, after everything that seeds or draws (loading the model reseeds all three)."""
    import random

    import torch as th

    th.set_rng_state(state["torch"])
    if state["cuda"] and th.cuda.is_available() and len(state["cuda"]) == th.cuda.device_count():
        th.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    ensemble = model.label_source.model if model.label_source is not None else None
    if ensemble is not None and state["label_model"] is not None:
        ensemble.load_state_dict(state["label_model"])


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    """A run file's JSON object, or an InputError naming the file and `fix`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--resume: {path} is unreadable ({type(e).__name__}: "
                         f"{str(e)[:80]}); {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"--resume: {path} holds no JSON object; {fix}")
    return data


def _prepare_run_dir(cfg: TrainConfig) -> dict[str, Any] | None:
    """Create the run dir, or check a resumed one. Returns the checkpoint info when resuming."""
    from rpd.data.schema import write_json_atomic

    cfg_path = cfg.out / CONFIG_JSON
    if cfg.resume:
        if not cfg_path.is_file():
            raise InputError(f"--resume: {cfg.out} has no {CONFIG_JSON}; pass the --out of a run "
                             "started by `rpd train`")
        saved = _read_json(cfg_path, "start a new run with another --out")
        new = cfg.to_dict()
        for k, v in ABSENT_MEANS.items():  # a run from before the option trained with v
            saved.setdefault(k, v)
        for k in RESUME_FIXED:
            if saved.get(k) != new.get(k):
                raise InputError(f"--resume: {cfg.out} was trained with {k}={saved.get(k)!r}, "
                                 f"now {new.get(k)!r}; pass the same options (only --steps and "
                                 "evaluation options may change)")
        info_path = cfg.out / CHECKPOINTS_DIR / LATEST_JSON
        if not info_path.is_file():
            logger.warning("%s has no checkpoint yet; starting it again", cfg.out)
            write_json_atomic(cfg_path, new)
            return None
        # config.json is rewritten (for a grown --steps) once the checkpoint has loaded
        return _read_json(info_path, f"delete {info_path.parent} to start the run again")
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise InputError(f"--out {cfg.out}: already exists and is not empty; pass --resume to "
                         "continue that run or choose another --out")
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg_path, cfg.to_dict())
    with open(cfg.out / EVAL_CSV, "w", newline="") as f:
        csv.writer(f).writerow(EVAL_COLUMNS)
    return None


OfflineProgress = Callable[[str, int, int], None]
"""(phase, newly done, phase total): the offline phase's progress, phase "render" (a pixel
student's frames of the stored states) then "fit" (supervised steps)."""


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
    teacher = None
    if not cfg.no_teacher:
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
    view = cfg.student_view(teacher)
    env_cfg = cfg.env_config(view)
    # before the run dir: a bad camera or a store made for another teacher leaves nothing
    eval_env = make_env(env_cfg)
    space = eval_env.observation_space
    obs_dim = int((space["state"] if view is not None else space).shape[-1])
    source = None
    try:
        if teacher is not None and cfg.cache is not None:
            source = open_label_source(cfg, teacher, obs_dim)
        resume_info = _prepare_run_dir(cfg)
        if teacher is not None and source is None:  # the run's own store, in the run dir
            source = open_label_source(cfg, teacher, obs_dim)
    except BaseException:
        eval_env.close()
        if source is not None:
            source.close()
        raise
    # a resumed run's envs start their episodes as the uninterrupted run's did after the
    # checkpoint (RPDPPO.restart_episodes)
    start_step = int(resume_info["num_timesteps"]) if resume_info is not None else 0
    venv = VecMonitor(make_vec_env(env_cfg, cfg.envs, seed=cfg.seed,
                                   with_env_state=not cfg.no_teacher, start_step=start_step,
                                   workers=cfg.env_workers))
    try:
        model, state, train_state = (
            _resume_model(cfg, venv, source, resume_info) if resume_info is not None
            else (*_new_model(cfg, venv, source), None))
        _attach_labellers(model, cfg, teacher, view)
        state.env = dict(env_id=env_cfg.env_id, obs_mode=env_cfg.obs_mode,
                         control_mode=env_cfg.control_mode, reward_mode=env_cfg.reward_mode,
                         max_episode_steps=env_cfg.max_episode_steps,
                         camera=view.to_dict() if view is not None else None)
        if resume_info is None:
            state.offline = _offline_phase(model, source, cfg, view, offline_progress)
        callback = _make_callback(cfg, eval_env, state, progress, evaluated)
        remaining = cfg.steps - model.num_timesteps
        steps_before, t_learn = model.num_timesteps, time.perf_counter()
        update_before = model.update_seconds
        if remaining > 0:
            if train_state is not None:
                _apply_train_state(model, train_state)
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
        wall = state.wall
        final = state.last_result
        assert final is not None
        meta = dict(
            env=state.env,
            obs_spec=_obs_spec(model, cfg, view),
            action_dim=int(model.action_space.shape[0]),
            device=next(model.policy.parameters()).device.type,  # where it trained
            teacher=None if teacher is None else dict(path=str(cfg.teacher), kind=teacher.kind,
                                                      fingerprint=teacher.fingerprint),
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
        write_json_atomic(cfg.out / STUDENT_JSON, meta)
        return meta
    finally:
        venv.close()
        eval_env.close()
        if source is not None:
            source.close()


def _new_model(cfg: TrainConfig, venv: Any, source: LabelSource | None) -> tuple[Any, RunState]:
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


def _resume_model(cfg: TrainConfig, venv: Any, source: LabelSource | None,
                  info: dict[str, Any]) -> tuple[Any, RunState, dict[str, Any] | None]:
    """The student of a resumed run, from its last checkpoint (`info`: latest.json), with the
    options a resume may change applied, and the checkpoint's train state (`_read_train_state`)
    to apply last. Every checkpoint file is read before eval.csv is trimmed or config.json
    rewritten. (`_prepare_run_dir` has checked the options that must not change.)"""
    from rpd.data.schema import write_json_atomic

    ckpt = cfg.out / CHECKPOINTS_DIR
    model = load_model(ckpt / LATEST_ZIP, "--resume",
                       f"delete {ckpt} to start the run again",
                       env=venv, device=resolve_device(cfg.device), label_source=source,
                       tensorboard_log=str(cfg.out / TB_DIR))
    model.live_budget = cfg.live_budget  # a changed budget applies from here on
    model.answer_audit = cfg.answer_audit
    model.label_replay = cfg.label_replay
    _load_replay(model, ckpt / REPLAY_NPZ)
    train_state = _read_train_state(ckpt / TRAIN_STATE, model.num_timesteps)
    state = RunState(wall_offset=info["wall_time_s"], last_eval=info["last_eval"],
                     last_checkpoint=info["num_timesteps"],
                     last_result=_trim_eval_rows(cfg.out, info))
    write_json_atomic(cfg.out / CONFIG_JSON, cfg.to_dict())
    logger.info("resuming %s at step %d", cfg.out, model.num_timesteps)
    return model, state, train_state


def _attach_labellers(model: Any, cfg: TrainConfig, teacher: Any,
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


def _obs_spec(model: Any, cfg: TrainConfig, view: CameraSpec | None) -> dict[str, Any]:
    """student.json's description of what the student sees."""
    space = model.observation_space
    if view is None:
        return dict(mode=cfg.obs, shape=list(space.shape), key="flat state observation")
    return dict(mode=cfg.obs, camera=view.to_dict(),
                shapes={k: list(v.shape) for k, v in space.spaces.items()},
                actor_keys=list(model.policy.actor_keys),
                critic_keys=list(model.policy.critic_keys),
                key="flat state observation ('state')")


PIXEL_OFFLINE_STATES = 20_000
"""At most this many stored states (a seeded random subset) are rendered for a pixel student's
offline phase: 245 MB of frames at 64 px, 1 GB at 128 px, ≈ 4 min of renders on 2 CPU cores."""


def _offline_phase(model: Any, source: LabelSource | None, cfg: TrainConfig,
                   view: CameraSpec | None = None,
                   progress: OfflineProgress | None = None) -> dict[str, float] | None:
    """Fit the policy mean to the cached labels before any env step (if a cache has some).

    A pixel student (`view`) first gets its frame of every cached state (at most
    `PIXEL_OFFLINE_STATES` of them): one restore and render per state, in `--env-workers`
    processes. With a label replay, the fitted labels also go into it (the latest of them
    when they outnumber its capacity), so the online updates keep fitting them.
    """
    steps = cfg.resolved_offline_steps
    if steps <= 0 or source is None:
        return None
    if view is None:
        obs, actions = source.entries()
        states = None
    else:
        obs, states, actions = source.entries_with_states()
    if len(obs) == 0:
        logger.info("offline phase skipped: the cache is empty")
        return None
    space = model.observation_space
    obs_dim = int((space["state"] if view is not None else space).shape[0])
    if obs.shape[1] != obs_dim:
        raise InputError(f"--cache {cfg.cache}: its observations have {obs.shape[1]} dims, the "
                         f"student's {obs_dim}; use a store made for {cfg.env_id} with state "
                         "observations")
    render_s, stored = 0.0, len(actions)
    if view is not None:
        from rpd.data.vec_envs import render_states

        if stored > PIXEL_OFFLINE_STATES:  # a seeded subset keeps memory and renders bounded
            keep = np.sort(np.random.default_rng(cfg.seed).choice(stored, PIXEL_OFFLINE_STATES,
                                                                  replace=False))
            obs, states, actions = obs[keep], states[keep], actions[keep]
        t0 = time.perf_counter()
        logger.info("offline phase: rendering the student's view (%s, %d px) of %d cached "
                    "states", view.name, view.width, len(obs))
        workers = cfg.env_workers or min(cfg.envs, os.cpu_count() or 1)
        total = len(actions)
        rendered = None if progress is None else (lambda n: progress("render", n, total))
        rgb, proprio = render_states(cfg.env_config(view), states, workers, rendered)
        render_s = time.perf_counter() - t0
        obs = dict(rgb=rgb, proprio=proprio, state=obs)
    # frames are shifted by up to 1/16 of their side (4 px at 64): measured on a 1,500-state
    # PushCube store, the held-out action error after the fit fell from 0.37 to 0.23 with it
    shift = 0 if view is None else max(1, round(view.width / 16))
    fitted = None if progress is None else (lambda n: progress("fit", n, steps))
    history = model.fit_offline(obs, actions, steps, batch_size=256, seed=cfg.seed, shift=shift,
                                progress=fitted)
    logger.info("offline phase: %d steps on %d cached labels, MSE %.4f -> %.4f", steps,
                len(actions), history[0], history[-1])
    summary = dict(steps=steps, entries=len(actions), mse_start=history[0], mse_end=history[-1])
    replay = model.label_replay_buffer()
    if replay is not None:  # the online updates keep fitting the stored labels too
        if view is not None:  # as the rollout buffer holds them: its keys, frames channel-first
            from rpd.student.rpdppo import channel_first

            obs = channel_first({k: obs[k] for k in space.spaces})
        replay.add(obs, actions)
        summary.update(replayed=len(replay))
    if view is not None:
        summary.update(render_s=round(render_s, 1), shift_px=shift, stored=stored)
    return summary
