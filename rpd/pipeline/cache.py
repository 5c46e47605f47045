"""`rpd cache`: precompute teacher actions into a Zarr store, in parallel with dask.

(The lookup the student trainer uses, `TeacherCache`, lives in `rpd.labels.lookup`.)

The coordinator decides the units of work — one per demo episode, teacher rollout and
noisy rollout — skips units already in the store (resume), and hands the rest to dask
workers. Each worker process loads the teacher once (`_labeler`, a per-process cache), keeps
one env open, labels its unit and writes it to the store as its own part (`rpd.data.store`):
no big arrays pass through the scheduler, and a killed worker loses only its in-flight unit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.seeds import CACHE
from rpd.data.store import (
    SOURCES,
    KeySpec,
    Rows,
    StoreIdentity,
    StoreSummary,
    TeacherStore,
    compact_store,
    source_code,
)
from rpd.errors import InputError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (finished units, rows written) after each unit."""


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------


@dataclass
class CacheConfig:
    """`rpd cache`.

    Attributes:
        teacher: Teacher checkpoint directory (`Teacher.save` / `rpd finetune-teacher`).
        env_id: Task whose states to label.
        out: The store (created if missing, resumed if it exists).
        demos: ManiSkill trajectory .h5 files whose recorded states are labelled.
        rollouts: Teacher closed-loop episodes (reset seeds seed..seed+rollouts-1, in the seed
            plan's cache range, `rpd.data.seeds.CACHE`).
        noise: With > 0, as many extra rollouts whose executed actions get N(0, noise²) noise
            per dim (env units); their states are labelled with the clean teacher action.
        horizon: Maximum steps per rollout (demos imitate 60-80 step episodes: use ~100).
        workers: Local dask worker processes (ignored with `scheduler`).
        scheduler: Address of an existing dask scheduler (tcp://HOST:PORT); its workers must
            see `teacher`, `out` and `demos` at the same paths (shared filesystem).
        seed: First rollout reset seed (cache range) and the seed of action noise.
        batch_size: States per teacher call.
        key_dims: Observation dims that form the lookup key; None = all.
        key_scale: "std" (mean/std of the labelled demo observations, or of random-action
            episodes without demos) or a number (fixed scale, offset 0).
        allow_mismatch: Use a store made for another teacher/env/key spec anyway.
        sim_backend: auto, cpu or gpu (`EnvConfig.sim_backend`) for the labelling envs.
        device: Torch device of the teacher on every worker (`place_teacher`).
    """

    teacher: Path
    env_id: str
    out: Path
    demos: list[Path] = field(default_factory=list)
    rollouts: int = 0
    noise: float = 0.0
    horizon: int = 100
    workers: int = 2
    scheduler: str | None = None
    seed: int = CACHE.start
    batch_size: int = 32
    key_dims: list[int] | None = None
    key_scale: str = "std"
    allow_mismatch: bool = False
    sim_backend: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        from rpd.data.devices import check_sim_backend, resolve_device

        self.teacher, self.out = Path(self.teacher), Path(self.out)
        check_sim_backend(self.sim_backend)
        resolve_device(self.device)
        self.demos = [Path(d) for d in self.demos]
        if self.rollouts < 0:
            raise InputError(f"--rollouts {self.rollouts}: must be 0 or more")
        if not math.isfinite(self.noise) or self.noise < 0:
            raise InputError(f"--noise {self.noise}: must be 0 or a positive number")
        if self.noise > 0 and self.rollouts == 0:
            raise InputError(f"--noise {self.noise} needs --rollouts N (noisy rollouts are made "
                             "around the teacher's own rollouts)")
        if not self.demos and self.rollouts == 0:
            raise InputError("nothing to label: pass --demos FILE and/or --rollouts N")
        CACHE.check(self.seed, max(self.rollouts, 8), "--seed")
        if self.horizon <= 0:
            raise InputError(f"--horizon {self.horizon}: must be a positive number")
        if self.workers <= 0:
            raise InputError(f"--workers {self.workers}: must be a positive number")
        if self.batch_size <= 0:
            raise InputError(f"--batch-size {self.batch_size}: must be a positive number")
        if self.scheduler is not None and not self.scheduler.startswith(("tcp://", "tls://")):
            raise InputError(f"--scheduler {self.scheduler!r}: use tcp://HOST:PORT")
        if self.key_scale != "std":
            try:
                v = float(self.key_scale)
            except ValueError:
                v = -1.0
            if not (v > 0 and math.isfinite(v)):
                raise InputError(f"--key-scale {self.key_scale!r}: use 'std' or a positive number")


@dataclass
class CacheResult:
    """What `build_cache` did."""

    store: str
    units_total: int
    units_skipped: int
    units_done: int
    rows_written: int
    rejected_nonfinite: int
    rollout_success: float | None
    entries: int
    by_source: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------
# Units of work
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One episode to label, written as one store part.

    Attributes:
        id: Unique, stable name (the part name); re-running skips finished ids.
        kind: "demo", "teacher-rollout" or "noisy-rollout" (the rows' source).
        demo: (h5 path, episode id) for demo units.
        seed: Reset seed (rollouts); noise: action noise sigma (noisy rollouts).
    """

    id: str
    kind: str
    demo: tuple[str, int] | None = None
    seed: int = 0
    noise: float = 0.0


def plan_units(cfg: CacheConfig) -> list[Unit]:
    """Every unit of a build, in a fixed order (demos first)."""
    from rpd.data.trajectories import open_trajectory

    units: list[Unit] = []
    for path in cfg.demos:
        traj = open_trajectory(path, option="--demos")
        if traj.env_id != cfg.env_id:
            raise InputError(f"--demos {path}: demos of {traj.env_id}, not --env {cfg.env_id}; "
                             f"pass {cfg.env_id} demos")
        tag = hashlib.sha1(traj.json_path.read_bytes()).hexdigest()[:8]
        units += [Unit(f"demo-{tag}-{ep['episode_id']}", "demo",
                       demo=(str(path.resolve()), int(ep["episode_id"])))
                  for ep in traj.episodes]
    for i in range(cfg.rollouts):
        s = cfg.seed + i
        units.append(Unit(f"rollout-s{s}-h{cfg.horizon}", "teacher-rollout", seed=s))
    if cfg.noise > 0:
        for i in range(cfg.rollouts):
            s = cfg.seed + i
            units.append(Unit(f"noisy-n{cfg.noise:g}-s{s}-h{cfg.horizon}", "noisy-rollout",
                              seed=s, noise=cfg.noise))
    return units


# ------------------------------------------------------------------------------------------
# Worker side (runs in dask worker processes)
# ------------------------------------------------------------------------------------------

_LABELERS: dict[tuple[str, str, int, int, str, str, str], tuple[Any, threading.Lock]] = {}
"""Per process: (checkpoint, env, horizon, batch, fingerprint, sim backend, device) -> labeller.
Keyed by fingerprint, so a teacher re-fine-tuned in the same directory gets a new labeller."""
_LABELERS_LOCK = threading.Lock()


def _labeler(ckpt: str, env_id: str, horizon: int, batch_size: int,
             fingerprint: str, sim_backend: str = "auto",
             device: str = "auto") -> tuple[Any, threading.Lock]:
    """This process's labeler for a teacher: the teacher is loaded once per process."""
    from rpd.labels.live import TeacherLabeler
    from rpd.teachers.base import load_teacher, place_teacher

    key = (ckpt, env_id, horizon, batch_size, fingerprint, sim_backend, device)
    with _LABELERS_LOCK:
        if key not in _LABELERS:
            logging.getLogger("mani_skill").setLevel(logging.ERROR)
            teacher = place_teacher(load_teacher(ckpt), device)
            if teacher.fingerprint != fingerprint:
                raise InputError(f"--teacher {ckpt}: on this worker the checkpoint has "
                                 f"fingerprint {teacher.fingerprint}, the coordinator saw "
                                 f"{fingerprint}; do not change it during a build")
            _LABELERS[key] = (TeacherLabeler(teacher, env_id, batch_size=batch_size,
                                             max_episode_steps=horizon,
                                             sim_backend=sim_backend), threading.Lock())
        return _LABELERS[key]


def label_unit(unit: Unit, ckpt: str, store_path: str, env_id: str, horizon: int,
               batch_size: int, fingerprint: str, seed: int,
               sim_backend: str = "auto", device: str = "auto") -> dict[str, Any]:
    """Label one unit and write it to the store as one part (worker side).

    Returns:
        Small stats: unit, rows, rejected_nonfinite, existed, success (rollouts).
    """
    store = TeacherStore.open(store_path)
    if store.has_unit(unit.id, fingerprint):  # units are done per teacher
        return dict(unit=unit.id, rows=0, rejected_nonfinite=0, existed=True, success=None)
    labeler, lock = _labeler(ckpt, env_id, horizon, batch_size, fingerprint, sim_backend,
                             device)
    with lock:
        success: bool | None = None
        if unit.kind == "demo":
            assert unit.demo is not None
            states, steps = _demo_states(labeler.env, *unit.demo)
            actions, obs = labeler.label_with_obs(states)
            episode = np.full(len(states), unit.demo[1], np.int64)
        else:
            rng = np.random.default_rng([seed, unit.seed, 1 if unit.noise else 0])
            ep = labeler.rollout(unit.seed, horizon, noise=unit.noise, rng=rng)
            states, obs, actions, steps = ep["env_state"], ep["obs"], ep["teacher_action"], \
                ep["step"]
            episode = np.full(len(states), unit.seed, np.int64)
            success = bool(ep["success"])
    rows = Rows(key=store.identity.key_spec.keys(obs), obs=obs, teacher_action=actions,
                env_state=states, episode=episode, step=steps,
                source=np.full(len(states), source_code(unit.kind), np.uint8))
    res = store.write_part(rows, unit.id, teacher_fingerprint=fingerprint)
    return dict(unit=unit.id, rows=res.written, rejected_nonfinite=res.rejected_nonfinite,
                existed=res.existed, success=success)


def _demo_states(env: Any, h5_path: str, episode_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat env states [T+1, S] of a demo episode (restored in `env` to flatten them) and
    their step indices [T+1]."""
    from rpd.data.trajectories import open_trajectory
    from rpd.labels.live import flat_states

    traj = open_trajectory(h5_path, option="--demos")
    ep = next(e for e in traj.episodes if int(e["episode_id"]) == episode_id)
    n_states = int(ep.get("elapsed_steps", 0)) + 1
    dicts = []
    for t in range(n_states):
        d = traj.env_state(episode_id, t)
        if d is None:
            raise InputError(f"--demos {h5_path}: traj_{episode_id} has no env_states; record "
                             "demos with env states (ManiSkill and `rpd demos` do)")
        dicts.append(d)
    return flat_states(env, dicts), np.arange(n_states, dtype=np.int32)


# ------------------------------------------------------------------------------------------
# Coordinator
# ------------------------------------------------------------------------------------------


def _probe_env(cfg: CacheConfig, control_mode: str) -> tuple[int, int, np.ndarray]:
    """(obs dim D, state dim S, observations [N, D] to derive a "std" key spec from)."""
    from rpd.data.env_state import get_env_state, set_env_state
    from rpd.data.vec_envs import EnvConfig, make_env

    env = make_env(EnvConfig(cfg.env_id, control_mode=control_mode,
                             max_episode_steps=cfg.horizon, sim_backend=cfg.sim_backend))
    try:
        obs, _ = env.reset(seed=cfg.seed)
        obs_dim = int(obs.shape[-1])
        state_dim = int(get_env_state(env).shape[-1])
        samples: list[np.ndarray] = []
        if cfg.key_scale == "std":
            if cfg.demos:
                for unit in plan_units(cfg):
                    if unit.kind != "demo" or unit.demo is None:
                        continue
                    states, _ = _demo_states(env, *unit.demo)
                    for s in states:
                        set_env_state(env, s)
                        samples.append(_obs_np(env.unwrapped.get_obs()))
            else:
                rng = np.random.default_rng(cfg.seed)
                for i in range(min(cfg.rollouts, 8)):
                    o, _ = env.reset(seed=cfg.seed + i)
                    for _ in range(cfg.horizon):
                        samples.append(_obs_np(o))
                        a = rng.uniform(-1, 1, size=(1, env.action_space.shape[-1]))
                        o, _, term, trunc, _ = env.step(a.astype(np.float32))
                        if bool(_obs_np(term).any()) or bool(_obs_np(trunc).any()):
                            break
        return obs_dim, state_dim, (np.concatenate(samples) if samples
                                    else np.zeros((0, obs_dim), np.float32))
    finally:
        env.close()


def _obs_np(x: Any) -> np.ndarray:
    return np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x, np.float32).reshape(1, -1)


def _requested_key_spec(cfg: CacheConfig, obs_dim: int, samples: np.ndarray) -> KeySpec:
    if cfg.key_scale == "std":
        if len(samples) == 0:
            raise InputError("--key-scale std: no observations to compute it from; pass "
                             "--demos or a fixed --key-scale")
        return KeySpec.from_data(samples, cfg.key_dims)
    return KeySpec.fixed(obs_dim, cfg.key_dims, float(cfg.key_scale))


def _compatible(have: KeySpec, cfg: CacheConfig, obs_dim: int) -> bool:
    """Whether an existing store's key spec is what the options ask for (resume)."""
    want_dims = None if cfg.key_dims is None else KeySpec.fixed(obs_dim, cfg.key_dims).dims
    if have.dims != want_dims:
        return False
    if cfg.key_scale == "std":
        return have.method == "std"
    return have.method == "fixed" and set(have.scale) == {float(cfg.key_scale)}


def open_store_for(cfg: CacheConfig, teacher: Any) -> TeacherStore:
    """Create or open (resume) the store of a build, refusing one made for something else."""
    from rpd.data.store import read_root_attrs

    control_mode = teacher.spec.control_mode
    exists = (cfg.out / "zarr.json").is_file()
    existing = TeacherStore(cfg.out, read_root_attrs(cfg.out, "--out")) if exists else None
    if existing is None:
        obs_dim, state_dim, samples = _probe_env(cfg, control_mode)
    else:  # resume: the store knows the dims, no env needed
        obs_dim, state_dim = existing.identity.obs_dim, existing.identity.state_dim
        samples = np.zeros((0, obs_dim), np.float32)
    if existing is not None and _compatible(existing.identity.key_spec, cfg, obs_dim):
        key_spec = existing.identity.key_spec
    elif existing is not None:
        key_spec = KeySpec.fixed(obs_dim, cfg.key_dims,
                                 1.0 if cfg.key_scale == "std" else float(cfg.key_scale))
        key_spec = KeySpec(key_spec.dims, key_spec.offset, key_spec.scale,
                           "std" if cfg.key_scale == "std" else "fixed")
    else:
        key_spec = _requested_key_spec(cfg, obs_dim, samples)
    identity = StoreIdentity(teacher_fingerprint=teacher.fingerprint, env_id=cfg.env_id,
                             control_mode=control_mode, key_spec=key_spec, obs_dim=obs_dim,
                             action_dim=teacher.spec.action_dim, state_dim=state_dim,
                             teacher_kind=teacher.kind)
    return TeacherStore.create_or_open(cfg.out, identity, allow_mismatch=cfg.allow_mismatch)


def _client(cfg: CacheConfig) -> tuple[Any, Any]:
    """(dask Client, LocalCluster or None). The local cluster listens on loopback only."""
    from distributed import Client, LocalCluster

    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if cfg.scheduler is not None:
        try:
            return Client(cfg.scheduler, timeout="20s"), None
        except OSError as e:
            raise InputError(f"--scheduler {cfg.scheduler}: cannot connect ({e}); start "
                             "`dask scheduler` there or leave --scheduler out") from None
    cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def build_cache(cfg: CacheConfig, progress: Progress | None = None) -> CacheResult:
    """Label demo states, teacher rollouts and noisy rollouts into the store `cfg.out`.

    Resumes: units already in the store are skipped. Deterministic in `cfg.seed` (rollout
    resets and noise), independent of the number of workers.
    """
    from distributed import as_completed

    from rpd.data.trajectories import open_trajectory
    from rpd.teachers.base import load_teacher

    teacher = load_teacher(cfg.teacher)
    teacher.spec.instruction(cfg.env_id)  # InputError if the teacher does not know the task
    units = plan_units(cfg)
    for path in cfg.demos:
        mode = open_trajectory(path, option="--demos").control_mode
        if mode != teacher.spec.control_mode:
            raise InputError(f"--demos {path}: control mode {mode}, the teacher acts in "
                             f"{teacher.spec.control_mode}; convert with `rpd demos import "
                             f"--control-mode {teacher.spec.control_mode}`")
    store = open_store_for(cfg, teacher)
    done = store.finished_units()
    todo = [u for u in units if u.id not in done]
    logger.info("%s: %d units, %d already done, %d to label", store.path, len(units),
                len(units) - len(todo), len(todo))
    if progress is not None and len(todo) < len(units):
        progress(len(units) - len(todo), 0)
    rows_written = rejected = 0
    successes: list[bool] = []
    if todo:
        client, cluster = _client(cfg)
        try:
            futures = [client.submit(label_unit, u, str(cfg.teacher.resolve()),
                                     str(store.path.resolve()), cfg.env_id, cfg.horizon,
                                     cfg.batch_size, teacher.fingerprint, cfg.seed,
                                     cfg.sim_backend, cfg.device,
                                     key=f"label-{u.id}-{teacher.fingerprint}", pure=False)
                       for u in todo]
            for fut in as_completed(futures):
                stats = fut.result()
                rows_written += stats["rows"]
                rejected += stats["rejected_nonfinite"]
                if stats["success"] is not None:
                    successes.append(stats["success"])
                if progress is not None:
                    progress(1, stats["rows"])
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    counts = store.refresh_counts()
    if rejected:
        logger.warning("rejected %d NaN/inf teacher actions", rejected)
    return CacheResult(store=str(store.path), units_total=len(units),
                       units_skipped=len(units) - len(todo), units_done=len(todo),
                       rows_written=rows_written, rejected_nonfinite=rejected,
                       rollout_success=float(np.mean(successes)) if successes else None,
                       entries=sum(counts.values()), by_source=counts)


def cache_info(path: str | Path) -> StoreSummary:
    """`rpd cache info`: entries by source, identity, size on disk."""
    return TeacherStore.open(path).summary()


def compact(path: str | Path) -> tuple[int, int]:
    """`rpd cache compact`: merge parts. Returns (parts merged, rows)."""
    return compact_store(path)


__all__ = ["SOURCES", "CacheConfig", "CacheResult", "build_cache", "cache_info", "compact",
           "label_unit", "plan_units"]
