"""Evaluation: a student (SB3 PPO/RPDPPO) on fixed seeds. (Teacher evaluation joins here.)

Success is "succeeded at some step of the episode"; episodes end on success (ManiSkill's
termination) or at the horizon. Deterministic: the policy's mean action, seeds seed..seed+N-1.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rpd.data.devices import resolve_device
from rpd.data.rundir import (
    BEST_ZIP,
    CHECKPOINTS_DIR,
    LATEST_JSON,
    LATEST_ZIP,
    STUDENT_JSON,
    STUDENT_ZIP,
)
from rpd.data.seeds import EVALUATION, HELD_OUT, range_of
from rpd.data.vec_envs import EnvConfig, make_env
from rpd.data.views import CameraSpec, teacher_image
from rpd.errors import InputError

logger = logging.getLogger(__name__)

CHECKPOINTS = ("final", "best", "latest")
"""What `rpd eval --student --checkpoint` can evaluate (see `resolve_student`)."""
REMAKE_STUDENT = "re-run `rpd train` for it (or resume the run with --resume)"
"""What to do about a student model file that cannot be read."""


VIDEO_CAMERA = CameraSpec("render", 128, 128)
"""What a state student's episode videos show (a pixel student's show its own frames)."""


def run_episodes_student(model: Any, env: Any, episodes: int, seed: int,
                         deterministic: bool = True, video_dir: Path | None = None
                         ) -> dict[str, float]:
    """Roll out `model` in a single ManiSkill env (batched torch API, 1 env).

    Args:
        model: An SB3 algorithm (anything with `predict(obs, deterministic=True)`).
        env: From `make_env` (num_envs=1).
        episodes: N episodes, seeds `seed` .. `seed + N - 1`.
        seed: First episode seed.
        deterministic: The policy's mean action (default), or actions sampled from its
            Gaussian (torch seeded with each episode's seed, so repeatable however the
            episodes are split between processes).
        video_dir: Write one mp4 per episode here (`ENV_seedN.mp4`): a pixel student's own
            frames, else `VIDEO_CAMERA` (the env must then render it, see `make_env`).

    Returns:
        success (fraction of episodes that succeeded at any step), return (mean undiscounted),
        length (mean steps), episodes.
    """
    results = [_episode(model, env, seed + ep, deterministic, video_dir)
               for ep in range(episodes)]
    successes, returns, lengths = zip(*results, strict=True)
    return dict(success=float(np.mean(successes)), ret=float(np.mean(returns)),
                length=float(np.mean(lengths)), episodes=episodes)


def _episode(model: Any, env: Any, seed: int, deterministic: bool,
             video_dir: Path | None) -> tuple[bool, float, int]:
    """One episode from `env.reset(seed=seed)`: (succeeded at some step, return, length)."""
    if not deterministic:
        import torch

        torch.manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    done, success, ret, steps = False, False, 0.0, 0
    frames: list[np.ndarray] = []
    while not done:
        obs_np = ({k: _to_np(v) for k, v in obs.items()} if isinstance(obs, dict)
                  else _to_np(obs))
        if video_dir is not None:
            frames.append(obs_np["rgb"][0] if isinstance(obs_np, dict)
                          else teacher_image(env, VIDEO_CAMERA)[0])
        action, _ = model.predict(obs_np, deterministic=deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += float(reward.reshape(-1)[0])
        success |= bool(np.asarray(_to_np(info["success"])).reshape(-1)[0])
        done = bool(_to_np(terminated).reshape(-1)[0] or _to_np(truncated).reshape(-1)[0])
        steps += 1
    if video_dir is not None:
        import imageio

        video_dir.mkdir(parents=True, exist_ok=True)
        imageio.mimwrite(video_dir / f"{env.unwrapped.spec.id}_seed{seed}.mp4", frames,
                         fps=20)
    return success, ret, steps


def _time_limit(env: Any) -> int | None:
    """The episode length the env's time-limit wrapper enforces (None if there is none)."""
    while env is not None:
        if getattr(env, "_max_episode_steps", None):
            return int(env._max_episode_steps)
        env = getattr(env, "env", None)
    return None


def _to_np(x: Any) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def resolve_student(run_dir: str | Path, option: str = "--student",
                    checkpoint: str = "final") -> tuple[Path, dict[str, Any]]:
    """The model file of a student run and its metadata: the final model (student.zip) and
    student.json of a finished run, or a checkpoint (`checkpoint="best"`: the policy of its
    best evaluation, checkpoints/best.zip; `"latest"`: checkpoints/latest.zip) of any run,
    finished or not, with the env its checkpoints record (`{"env": ...}` while unfinished).

    Raises:
        InputError: not a run directory, a final model asked of an unfinished run, a missing
            checkpoint, or an unfinished run whose checkpoints do not record their env (runs
            of an older rpd).
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"--checkpoint {checkpoint!r}: use one of {', '.join(CHECKPOINTS)}")
    meta_path, zip_path = run_dir / STUDENT_JSON, run_dir / STUDENT_ZIP
    finished = meta_path.is_file() and zip_path.is_file()
    latest_json = run_dir / CHECKPOINTS_DIR / LATEST_JSON
    if not finished and (checkpoint == "final" or not latest_json.is_file()):
        raise InputError(f"{option} {run_dir}: no {STUDENT_JSON} and {STUDENT_ZIP}; pass a run "
                         "directory finished by `rpd train` (resume it with --resume), or "
                         "--checkpoint latest|best for a run still training")
    if checkpoint != "final":
        zip_path = run_dir / CHECKPOINTS_DIR / (BEST_ZIP if checkpoint == "best" else LATEST_ZIP)
        if not zip_path.is_file():
            raise InputError(f"--checkpoint {checkpoint}: {run_dir} has no "
                             f"checkpoints/{zip_path.name} (runs before it existed); "
                             "evaluate its final policy")
    path = meta_path if finished else latest_json
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); re-run `rpd train`") from None
    if finished and not (isinstance(meta, dict) and isinstance(meta.get("env"), dict)
                         and "env_id" in meta["env"]):
        raise InputError(f"{path}: records no env (env.env_id); it was not written by "
                         "`rpd train`: train the run again, or evaluate --checkpoint latest")
    if not finished:
        if not isinstance(meta, dict) or "env" not in meta:
            raise InputError(f"{option} {run_dir}: its checkpoints predate rpd recording their "
                             "env; resume the run (its next checkpoint records it) or let it "
                             "finish")
        meta = {"env": meta["env"]}
    return zip_path, meta


def load_student(run_dir: str | Path, option: str = "--student",
                 device: str = "cpu", checkpoint: str = "final") -> tuple[Any, dict[str, Any]]:
    """Load a student run's model (see `resolve_student` for `checkpoint`) and its metadata.

    Raises:
        InputError: as `resolve_student`, or an unreadable model.
    """
    zip_path, meta = resolve_student(run_dir, option, checkpoint)
    model = load_model(zip_path, option, REMAKE_STUDENT, device=resolve_device(device))
    return model, meta


def load_model(path: Path, option: str, fix: str, **kwargs: Any) -> Any:
    """`RPDPPO.load(path, **kwargs)`, or an InputError naming the file and `fix` when it is
    not a readable SB3 model (truncated, corrupt, another file)."""
    import zipfile

    from rpd.student.rpdppo import RPDPPO

    try:
        return RPDPPO.load(path, **kwargs)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError, OSError,
            AttributeError) as e:
        raise InputError(f"{option}: {path} is not a readable student model "
                         f"({type(e).__name__}: {str(e)[:80]}); {fix}") from None


def evaluate_student(run_dir: str | Path, env_id: str | None = None, episodes: int = 50,
                     seed: int = EVALUATION.start, horizon: int | None = None,
                     stochastic: bool = False, video_dir: Path | None = None,
                     sim_backend: str = "auto", device: str = "cpu",
                     workers: int = 1, checkpoint: str = "final") -> dict[str, Any]:
    """Score a trained student on fixed seeds.

    Args:
        run_dir: A run directory written by `rpd train`.
        env_id: Task to evaluate on; None = the task it was trained on. Must have the same
            observation and action sizes.
        episodes: Number of episodes (seeds seed .. seed+episodes-1).
        seed: First seed, in the seed plan's evaluation range (what a run's in-training
            evaluations use) or its held-out range (`rpd.data.seeds.HELD_OUT`: the published
            figure, from seeds no demo, cache, training episode or checkpoint choice used).
        horizon: Episode length; None = the horizon the student was trained with.
        stochastic: Sample actions from the policy instead of taking its mean.
        video_dir: Write one mp4 per episode here (see `run_episodes_student`).
        sim_backend: auto, cpu or gpu (`EnvConfig.sim_backend`).
        device: Torch device of the policy (`rpd.data.devices.resolve_device`).
        workers: Processes the episodes are split between (each loads the student and one
            env; results do not depend on the split).
        checkpoint: "final" (student.zip), "latest" (checkpoints/latest.zip, also of a run still
            training) or "best" (checkpoints/best.zip, the policy of the run's best evaluation
            so far); the file is copied first, so a run still training may replace it.

    Returns:
        dict with env, episodes, seed, seed_range (the seed plan's name for it), horizon,
        success, return, length, workers, checkpoint, step (the env steps the policy was
        trained for), wall_time_s, per_episode [{seed, success, return, length}].
    """
    _check_episodes(episodes, seed, workers)
    zip_path, meta = resolve_student(run_dir, checkpoint=checkpoint)
    with tempfile.TemporaryDirectory(prefix="rpd-eval-") as tmp:
        # every worker reads this copy: a run still training may replace its checkpoint
        frozen = Path(tmp) / zip_path.name
        shutil.copyfile(zip_path, frozen)
        step = int(load_model(frozen, "--student", REMAKE_STUDENT,
                              device=resolve_device(device)).num_timesteps)
        return run_evaluation(frozen, meta["env"], step, checkpoint, env_id=env_id,
                              episodes=episodes, seed=seed, horizon=horizon,
                              stochastic=stochastic, video_dir=video_dir,
                              sim_backend=sim_backend, device=device, workers=workers)


def _check_episodes(episodes: int, seed: int, workers: int) -> None:
    if episodes <= 0:
        raise InputError(f"--episodes {episodes}: must be a positive number")
    if workers <= 0:
        raise InputError(f"--workers {workers}: must be a positive number")
    EVALUATION.check(seed, episodes, "--seed", allowed=(HELD_OUT,))


def run_evaluation(model_path: Path, env: dict[str, Any], step: int, checkpoint: str, *,
                   env_id: str | None, episodes: int, seed: int, horizon: int | None,
                   stochastic: bool, video_dir: Path | None, sim_backend: str, device: str,
                   workers: int) -> dict[str, Any]:
    """The episodes of `evaluate_student` (see there for the arguments and the result) for a
    policy file: a student's .zip, or an exported .onnx/.pt (`rpd.pipeline.export`), acting
    in `env` (student.json's "env"); `step` and `checkpoint` are reported as they are."""
    _check_episodes(episodes, seed, workers)
    env_cfg_d = dict(env)
    if env_id is not None:
        env_cfg_d["env_id"] = env_id
    if horizon is not None:
        env_cfg_d["max_episode_steps"] = horizon
    env_cfg_d["sim_backend"] = sim_backend
    seeds = list(range(seed, seed + episodes))
    workers = min(workers, episodes)
    t0 = time.perf_counter()
    job = dict(model_path=str(model_path), trained_on=env["env_id"], env_cfg=env_cfg_d,
               deterministic=not stochastic, video_dir=video_dir, device=device)
    if workers == 1:
        results, time_limit = _student_episodes(seeds=seeds, **job)  # type: ignore[arg-type]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [seeds[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_student_episodes_job,
                                  [dict(job, seeds=c) for c in chunks]))
        by_seed = {s: r for (rs, _), c in zip(parts, chunks, strict=True)
                   for s, r in zip(c, rs, strict=True)}
        results, time_limit = [by_seed[s] for s in seeds], parts[0][1]
    successes, returns, lengths = zip(*results, strict=True)
    return {"env": env_cfg_d["env_id"], "episodes": episodes, "seed": seed,
            "seed_range": range_of(seed).name,  # type: ignore[union-attr]
            "horizon": env_cfg_d.get("max_episode_steps") or time_limit,
            "actions": "sampled" if stochastic else "mean",
            "success": float(np.mean(successes)), "return": float(np.mean(returns)),
            "length": float(np.mean(lengths)), "workers": workers, "checkpoint": checkpoint,
            "step": step, "wall_time_s": round(time.perf_counter() - t0, 2),
            "per_episode": [dict(seed=s, success=bool(ok), ret=float(r), length=int(n))
                            for s, (ok, r, n) in zip(seeds, results, strict=True)]}


def _student_episodes_job(job: dict[str, Any]) -> tuple[list[tuple[bool, float, int]],
                                                       int | None]:
    return _student_episodes(**job)


def _student_episodes(model_path: str, trained_on: str, env_cfg: dict[str, Any],
                      seeds: list[int], deterministic: bool, video_dir: Path | None, device: str
                      ) -> tuple[list[tuple[bool, float, int]], int | None]:
    """Episodes of a student (in this process or a worker): per seed (success, return,
    length), and the env's time limit."""
    from rpd.data.devices import limit_cpu_threads

    limit_cpu_threads()
    logging.getLogger("mani_skill").setLevel(logging.ERROR)
    if Path(model_path).suffix == ".zip":
        model = load_model(Path(model_path), "--student", REMAKE_STUDENT,
                           device=resolve_device(device))
    else:  # an exported policy: runs on the CPU
        from rpd.pipeline.export import ExportedPolicy

        model = ExportedPolicy.load(model_path)
    env_cfg = dict(env_cfg)
    if env_cfg.get("camera") is not None:  # a pixel student's view
        env_cfg["camera"] = CameraSpec(**env_cfg["camera"])
    if video_dir is not None and env_cfg.get("camera") is None:
        env_cfg["camera"] = VIDEO_CAMERA  # a state student's env renders only for the video
    env = make_env(EnvConfig(**env_cfg))
    try:
        env_space, space = env.observation_space, model.observation_space
        if isinstance(env_space, gym.spaces.Dict):  # a pixel student: compare the state part
            env_space, space = env_space["state"], space["state"]
            obs_dim = int(np.prod(env_space.shape))
        else:
            obs_dim = int(np.prod(env_space.shape[1:]))
        if obs_dim != int(np.prod(space.shape)):
            raise InputError(f"--env {env_cfg['env_id']}: observations have {obs_dim} dims but "
                             f"the student was trained on {space.shape}; evaluate on "
                             f"{trained_on}")
        return ([_episode(model, env, s, deterministic, video_dir) for s in seeds],
                _time_limit(env))
    finally:
        env.close()
