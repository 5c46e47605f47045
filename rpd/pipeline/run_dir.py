"""A training run's directory: creating or checking it, its checkpoints (the model, the label
replay, the random states and label model) and what a resume reads back, so a resumed run
equals an uninterrupted one."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.rundir import (
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    EVAL_CSV,
    LATEST_JSON,
    LATEST_ZIP,
    REPLAY_NPZ,
    TRAIN_STATE,
)
from rpd.errors import InputError, disk_writes
from rpd.pipeline.train_config import ABSENT_MEANS, FIXED_PATHS, RESUME_FIXED, TrainConfig

logger = logging.getLogger(__name__)


TRAIN_STATE_VERSION = 1



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



def trim_eval_rows(out: Path, info: dict[str, Any]) -> dict[str, Any] | None:
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



def checkpoint(model: Any, cfg: TrainConfig, state: RunState, wall: float) -> None:
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



def load_replay(model: Any, path: Path) -> None:
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



def read_train_state(path: Path, step: int) -> dict[str, Any] | None:
    """The random states and label model saved with the checkpoint of `step`, ready for
    `apply_train_state`; None (a warning: the run goes on, though not exactly as one never
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



def apply_train_state(model: Any, state: dict[str, Any]) -> None:
    """Restore what `_save_train_state` saved (`read_train_state`'s form); last before
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



def resumed_config(cfg: TrainConfig) -> dict[str, Any]:
    """config.json of a resumed run: its new settings, with the teacher and store paths as the
    run first wrote them (`rpd report` groups seeds by them, however a resume spelt them)."""
    new = cfg.to_dict()
    try:
        saved = json.loads((cfg.out / CONFIG_JSON).read_text())
    except (OSError, ValueError):
        return new
    if isinstance(saved, dict):
        new.update({k: saved[k] for k in FIXED_PATHS if k in saved})
    return new


def _same_setting(saved: Any, new: Any, is_path: bool) -> bool:
    """Whether a resume keeps a setting: equal values, or for a path (the teacher, the store)
    the same file however it is written (relative or absolute, `./x` or `x`)."""
    if saved == new:
        return True
    if not (is_path and isinstance(saved, str) and isinstance(new, str)):
        return False
    try:
        return os.path.samefile(saved, new)
    except OSError:  # either is gone: only an equal string would have matched
        return False


def prepare_run_dir(cfg: TrainConfig) -> dict[str, Any] | None:
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
            if not _same_setting(saved.get(k), new.get(k), k in FIXED_PATHS):
                where = (" (a relative path is read from the current directory)"
                         if k in FIXED_PATHS else "")
                raise InputError(f"--resume: {cfg.out} was trained with {k}={saved.get(k)!r}, "
                                 f"now {new.get(k)!r}{where}; pass the same options (only "
                                 "--steps and evaluation options may change)")
        info_path = cfg.out / CHECKPOINTS_DIR / LATEST_JSON
        if not info_path.is_file():
            logger.warning("%s has no checkpoint yet; starting it again", cfg.out)
            write_json_atomic(cfg_path, resumed_config(cfg))
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
