"""The evaluation schedule of a training run: after the update of every `eval_every` env steps a
deterministic evaluation on the seed plan's evaluation seeds, a row of eval.csv, a checkpoint,
the best checkpoint kept, and the adaptive λ told."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpd.data.rundir import (
    BEST_JSON,
    BEST_ZIP,
    CHECKPOINTS_DIR,
    EVAL_CSV,
    LATEST_ZIP,
)
from rpd.errors import disk_writes
from rpd.pipeline.evaluate import run_episodes_student
from rpd.pipeline.run_dir import EVAL_COLUMNS, RunState, checkpoint
from rpd.pipeline.train_config import TrainConfig

logger = logging.getLogger(__name__)


def make_callback(cfg: TrainConfig, eval_env: Any, state: RunState,
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
                checkpoint(model, cfg, state, state.wall)
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
    checkpoint(model, cfg, state, wall)
    keep_if_best(cfg.out / CHECKPOINTS_DIR, row)
    state.eval_time += time.perf_counter() - t_eval
    return row



def keep_if_best(ckpt: Path, row: dict[str, Any]) -> None:
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
