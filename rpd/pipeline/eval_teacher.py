"""`rpd eval --teacher`: closed-loop success of a teacher on a task, in parallel processes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.parallel import run_in_processes
from rpd.data.seeds import HELD_OUT, TEACHER_EVALUATION, range_of
from rpd.errors import InputError

logger = logging.getLogger(__name__)

CHUNK_MODES = ("label", "receding", "ensemble")
DEFAULT_EVAL_SEED = TEACHER_EVALUATION.start
"""The first seed of the seed plan's teacher-evaluation range (`rpd.data.seeds`)."""


@dataclass
class TeacherEvalConfig:
    """`rpd eval --teacher`.

    Attributes:
        teacher: Teacher checkpoint directory.
        env_id: Task to evaluate on (the teacher must know its instruction).
        episodes: Number of episodes, seeds seed..seed+episodes-1.
        seed: First episode seed, in the seed plan's teacher-evaluation range, or its held-out
            range to score the teacher on the episodes students are published on.
        horizon: Steps per episode. Motion-planned demos take 60-80 steps, so ~100.
        workers: Parallel processes.
        camera_shift: Rotate the teacher camera by this many degrees (robustness test).
        object_color: Paint the task's object in this colour (a task variation).
        chunk_mode: "label" (the teacher is asked every step and its chunk's first action is
            executed: the policy `rpd train` and `rpd cache` take labels from, so its success
            is the teacher RPD distils), "receding" (`execute` actions per call) or
            "ensemble" execution of action chunks.
        execute: Actions executed per chunk in receding mode.
        video_dir: Write one mp4 of the teacher's view per episode here.
        sim_backend: auto, cpu or gpu (`EnvConfig.sim_backend`).
        device: Torch device of the teacher (`rpd.teachers.base.place_teacher`).
    """

    teacher: Path
    env_id: str
    episodes: int = 50
    seed: int = DEFAULT_EVAL_SEED
    horizon: int = 100
    workers: int = 2
    camera_shift: float = 0.0
    object_color: str | None = None
    chunk_mode: str = "label"
    execute: int = 4
    video_dir: Path | None = None
    sim_backend: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        from rpd.data.devices import check_sim_backend, resolve_device

        self.teacher = Path(self.teacher)
        check_sim_backend(self.sim_backend)
        resolve_device(self.device)
        if self.episodes <= 0:
            raise InputError(f"--episodes {self.episodes}: must be > 0")
        if self.horizon <= 0:
            raise InputError(f"--horizon {self.horizon}: must be > 0")
        TEACHER_EVALUATION.check(self.seed, self.episodes, "--seed", allowed=(HELD_OUT,))
        if self.workers <= 0:
            raise InputError(f"--workers {self.workers}: must be > 0")
        if self.object_color is not None:
            from rpd.data.views import CameraSpec

            CameraSpec(object_color=self.object_color)  # checks the name before any work
        if self.chunk_mode not in CHUNK_MODES:
            raise InputError(f"--chunk-mode {self.chunk_mode!r}: use one of "
                             f"{', '.join(CHUNK_MODES)}")


def _eval_worker(cfg: TeacherEvalConfig, seeds: list[int], ticks: Any) -> list[dict[str, Any]]:
    import torch

    from rpd.data.env_state import get_env_state
    from rpd.data.vec_envs import EnvConfig, make_env
    from rpd.data.views import robot_proprio, teacher_image
    from rpd.teachers.base import TeacherBatch, load_teacher, no_images, place_teacher
    from rpd.teachers.chunking import ChunkedPolicy

    torch.set_num_threads(1)
    teacher = place_teacher(load_teacher(cfg.teacher), cfg.device)
    instruction = teacher.spec.instruction(cfg.env_id)
    camera = replace(teacher.spec.camera, shift_deg=cfg.camera_shift,
                     object_color=cfg.object_color)
    sees = not teacher.uses_env_state  # a state-reading teacher needs no rendering
    p = teacher.spec.proprio_dim  # the teacher's own proprio size, as the labeller passes it
    render = sees or cfg.video_dir is not None
    env = make_env(EnvConfig(cfg.env_id, control_mode=teacher.spec.control_mode,
                             sim_backend=cfg.sim_backend,
                             max_episode_steps=cfg.horizon, camera=camera if render else None))
    policy = ChunkedPolicy(teacher, mode=cfg.chunk_mode, execute=cfg.execute)  # type: ignore[arg-type]
    results = []
    for seed in seeds:
        env.reset(seed=seed)
        policy.reset(1)
        calls_before = policy.teacher_calls
        frames, ret, success_once, length = [], 0.0, False, 0
        for t in range(cfg.horizon):
            img = teacher_image(env, camera) if render else no_images(1)
            if cfg.video_dir is not None:
                frames.append(img[0])
            batch = TeacherBatch(img if sees else no_images(1), [instruction],
                                 robot_proprio(env)[:, :p] if p else None,
                                 None if sees else get_env_state(env))
            action = policy.act(batch)
            _, reward, terminated, truncated, info = env.step(action)
            ret += float(reward[0])
            length = t + 1
            success_once = success_once or bool(info["success"][0])
            if bool(terminated[0]) or bool(truncated[0]):
                break
        results.append(dict(seed=seed, success=success_once,
                            success_at_end=bool(info["success"][0]), ret=ret, length=length,
                            teacher_calls=policy.teacher_calls - calls_before))
        if frames:
            import imageio

            cfg.video_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            imageio.mimwrite(cfg.video_dir / f"{cfg.env_id}_seed{seed}.mp4", frames, fps=20)  # type: ignore[operator]
        if ticks is not None:
            ticks.put(1)
    env.close()
    return results


def evaluate_teacher(cfg: TeacherEvalConfig,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the episodes; returns a JSON-able summary with per-episode results."""
    from rpd.teachers.base import load_teacher

    teacher = load_teacher(cfg.teacher)  # validate before starting workers
    teacher.spec.instruction(cfg.env_id)
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    n = min(cfg.workers, cfg.episodes)
    t0 = time.time()
    parts = run_in_processes([(_eval_worker, (cfg, seeds[i::n])) for i in range(n)], n, progress)
    episodes = sorted((e for part in parts for e in part), key=lambda e: e["seed"])
    return summarize_episodes(episodes) | dict(
        teacher=str(cfg.teacher), fingerprint=teacher.fingerprint, env_id=cfg.env_id,
        horizon=cfg.horizon, seed=cfg.seed,
        seed_range=range_of(cfg.seed).name,  # type: ignore[union-attr]
        camera=teacher.spec.camera.name,
        camera_shift=cfg.camera_shift, object_color=cfg.object_color,
        chunk_mode=cfg.chunk_mode, execute=cfg.execute,
        wall_time_s=round(time.time() - t0, 1), per_episode=episodes)


def summarize_episodes(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate (success at any step), success at the end, mean return and length."""
    return dict(
        episodes=len(episodes),
        success_rate=float(np.mean([e["success"] for e in episodes])),
        success_at_end=float(np.mean([e["success_at_end"] for e in episodes])),
        mean_return=float(np.mean([e["ret"] for e in episodes])),
        mean_length=float(np.mean([e["length"] for e in episodes])),
        teacher_calls_per_step=(sum(e["teacher_calls"] for e in episodes)
                                / max(sum(e["length"] for e in episodes), 1)),
    )
