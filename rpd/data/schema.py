"""On-disk layouts rpd writes besides ManiSkill trajectories: teacher checkpoints.

Teacher checkpoint directory:

    teacher.json        {"schema_version", "kind", "spec", "config", "action_stats",
                         "training", "metrics"}
    model.safetensors   the weights

`spec` is `TeacherSpec.to_dict()`; `action_stats` holds q01/q99/mean/std per action dim (the
q01/q99 bounds map actions to [-1, 1], OpenVLA's convention).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rpd.errors import InputError

TEACHER_SCHEMA_VERSION = 1
TEACHER_JSON = "teacher.json"
TEACHER_WEIGHTS = "model.safetensors"
TEACHER_REQUIRED_KEYS = ("schema_version", "kind", "spec", "config", "action_stats")


def read_teacher_json(ckpt_dir: str | Path, option: str = "--teacher") -> dict[str, Any]:
    """Read and validate a checkpoint's teacher.json.

    Raises:
        InputError: missing dir/file, invalid JSON, missing keys, or a newer schema version.
    """
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / TEACHER_JSON
    if not ckpt_dir.is_dir():
        raise InputError(f"{option} {ckpt_dir}: no such checkpoint directory")
    if not path.is_file():
        raise InputError(
            f"{option} {ckpt_dir}: no {TEACHER_JSON}; pass a directory written by "
            "`rpd finetune-teacher`"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); re-create the checkpoint") from None
    missing = [k for k in TEACHER_REQUIRED_KEYS if k not in meta]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}; re-create the checkpoint")
    version = meta["schema_version"]
    if not isinstance(version, int) or version > TEACHER_SCHEMA_VERSION:
        raise InputError(
            f"{path}: schema version {version} is newer than this rpd understands "
            f"({TEACHER_SCHEMA_VERSION}); upgrade rpd"
        )
    return meta


def check_teacher_out(out: Path, force: bool) -> None:
    """--out of a command that writes a teacher directory: refuse a file, or a teacher that
    is already there unless `force`."""
    from rpd.errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a directory")
    if (out / TEACHER_JSON).exists() and not force:
        raise InputError(f"--out {out}: holds a teacher already; pass --force to replace it "
                         "or choose another directory")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
