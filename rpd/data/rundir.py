"""File names of a run directory (`rpd train --out RUN`), and of the folder `rpd eval` writes
its results to beside what it scored. `rpd train` writes them; `rpd eval`, `rpd report` and
`rpd run` read them.

    RUN/config.json                 the run's configuration (resume and report read it)
    RUN/student.zip, student.json   the final policy and its metrics (written last)
    RUN/eval.csv                    one row per in-training evaluation
    RUN/checkpoints/latest.zip      the policy at the last checkpoint, latest.json its step
    RUN/checkpoints/best.zip        the policy of the best evaluation so far, best.json its row
    RUN/checkpoints/replay.npz      the label replay at the last checkpoint (--label-replay)
    RUN/checkpoints/train_state.pt  the random states and the label model, for --resume
    RUN/cache/                      live teacher labels when no --cache is given
    RUN/tb/                         TensorBoard logs
    RUN/eval/                       `rpd eval` results (`heldout_path`)
"""

from __future__ import annotations

from pathlib import Path

CONFIG_JSON = "config.json"
STUDENT_ZIP = "student.zip"
STUDENT_JSON = "student.json"
EVAL_CSV = "eval.csv"
CHECKPOINTS_DIR = "checkpoints"
LATEST_ZIP, LATEST_JSON = "latest.zip", "latest.json"
BEST_ZIP, BEST_JSON = "best.zip", "best.json"
"""In RUN/checkpoints: the policy of a run's best evaluation so far, and that evaluation's row."""
REPLAY_NPZ = "replay.npz"
TRAIN_STATE = "train_state.pt"
"""The resume state of a run: a student run's (in RUN/checkpoints) or a teacher fine-tune's."""
CACHE_DIR = "cache"
TB_DIR = "tb"
EVAL_DIR = "eval"
"""Where `rpd eval` writes its results, inside the run or teacher directory it scored."""


def heldout_path(run_dir: str | Path, env_id: str, horizon: int,
                 checkpoint: str = "final") -> Path:
    """Where `rpd eval --student RUN --held-out [--checkpoint C]` writes its result by default,
    and where `rpd run` and `rpd report` read a run's held-out success from (the final policy's;
    `rpd report` also reads the best checkpoint's, ENV-hH-best-heldout.json)."""
    mark = "" if checkpoint == "final" else f"-{checkpoint}"
    return Path(run_dir) / EVAL_DIR / f"{env_id}-h{horizon}{mark}-heldout.json"


def view_suffix(camera_shift: float | None, object_color: str | None) -> str:
    """What names a teacher evaluation in a changed view apart (`rpd eval --teacher
    --camera-shift D --object-color C` writes ENV-hH-shiftD-C.json): "" for the task's own."""
    return (f"-shift{camera_shift:g}" if camera_shift else "") + (
        f"-{object_color}" if object_color else "")


def teacher_eval_path(teacher_dir: str | Path, env_id: str, horizon: int,
                      camera_shift: float | None = None, object_color: str | None = None) -> Path:
    """Where `rpd eval --teacher` writes its result by default (labelling mode, the
    teacher-evaluation seeds), in the view it was given."""
    return (Path(teacher_dir) / EVAL_DIR
            / f"{env_id}-h{horizon}{view_suffix(camera_shift, object_color)}.json")
