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

Hyperparameter sources (PPO defaults): ManiSkill's PPO baseline (examples/baselines/ppo/ppo.py:
gamma 0.8, GAE λ 0.9, lr 3e-4, clip 0.2, max_grad_norm 0.5, vf_coef 0.5, ent_coef 0, 4 epochs,
no reward normalisation; its target_kl is 0.1, the paper's RPD code uses 0.2) and the RPD paper
(arXiv 2503.05833: MSE on the mean, λ = 1 constant, gamma 0.99 for sparse reward). The rollout
size is scaled down from ManiSkill's 512 GPU envs x 50 steps to 8 CPU envs x 64 steps.
Three defaults depart from both, measured on PickCube with an exact teacher (issue 14):
observations standardised inside the policy, initial log std -1.5 instead of -0.5, and no
KL early stop; with ManiSkill's settings the student never copied the teacher in 100k steps.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.envs import (
    PIXEL_OBS_MODES,
    CameraSpec,
    EnvConfig,
    check_sim_backend,
    get_task,
    limit_cpu_threads,
    make_env,
    make_vec_env,
    resolve_device,
)
from rpd.data.seeds import EVALUATION
from rpd.errors import InputError, disk_writes
from rpd.pipeline.evaluate import (
    BEST_JSON,
    BEST_ZIP,
    STUDENT_JSON,
    STUDENT_ZIP,
    load_model,
    run_episodes_student,
)
from rpd.student.labels import InMemoryLabelSource, LabelSource
from rpd.student.losses import (
    DISTILL_KINDS,
    LAMBDA_SCHEDULES,
    SCHEDULE_KINDS,
    AdaptiveSchedule,
    LambdaSchedule,
)
from rpd.student.policies import NATURE_CNN_MIN_SIZE as NATURE_CNN_MIN

logger = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
EVAL_CSV = "eval.csv"
REPLAY_NPZ = "replay.npz"
TRAIN_STATE = "train_state.pt"
TRAIN_STATE_VERSION = 1
CACHE_DIR = "cache"
EXACT_RADIUS = 1e-5
"""Hit radius of the run's own store: exact matches only (RMS distance per observation dim)."""
EVAL_COLUMNS = ("step", "success", "return", "wall_time_s", "live_teacher_calls")


@dataclass
class TrainConfig:
    """Everything `rpd train` needs. Defaults run on a laptop CPU.

    Attributes:
        env_id: Task (see `rpd tasks`).
        out: Run directory (created; must not exist unless `resume`).
        teacher: Teacher checkpoint directory; may be None only with `no_teacher`.
        steps: Total env steps (all envs together).
        cache: Teacher-action store to look labels up in and write live labels back to: a
            `rpd cache` Zarr store (or an in-memory labels.npz). None = an empty store in the
            run dir (RUN/cache), filled live.
        no_teacher: Plain PPO with otherwise identical settings (the baseline).
        reward: "dense" (ManiSkill's normalized dense reward) or "sparse" (success only).
        obs: Student observation: "state" (flat state vector, MLP), "rgb" (the camera frame
            alone, NatureCNN: the paper's pixel student) or "rgb+proprio" (frame + joint
            positions and velocities).
        student_camera: A pixel student's camera ("render" or a sensor camera of the task);
            None = the teacher's camera (the paper's shared view), or "render" when the
            teacher sees no camera (scripted teachers, plain PPO).
        student_image_size: A pixel student's image side in pixels (≥ 36, NatureCNN's
            minimum); None = the teacher camera's width, or 64 when it sees no camera.
        critic_state: Asymmetric critic: a pixel student's critic also reads the flat state
            observation (known in simulation only; the actor, all that is deployed, never does).
        envs: Parallel envs.
        env_workers: CPU backend: processes stepping the envs, each a contiguous block of them
            (None = one per CPU core, at most one per env). Fewer processes than envs means
            fewer pipe round trips and process switches; results do not depend on it (every
            env keeps its own episode seeds), so a resumed run may change it.
        horizon: Episode length for training and evaluation; None = the task default (50).
        offline_steps: Supervised steps fitting the policy mean to the cached labels before
            online RPD; None = 2000 when `cache` is given, else 0.
        lam: λ, the weight of the distill term at the start (paper: 1.0).
        lambda_schedule: "constant" (paper), "linear" or "cosine" decay to 0 by
            `lambda_decay_steps`, or "adaptive": λ held while the student's evaluations are
            below its teacher's success and halved once they stay ahead; the teacher is not
            consulted once λ is 0.
        lambda_decay_steps: K for a decaying schedule (env steps).
        teacher_success: The adaptive schedule's reference: the teacher's success rate at
            the student's horizon; None = read from the teacher's evaluation JSON
            (TEACHER/eval/ENV-hH.json, `rpd eval --teacher`).
        lambda_margin: The adaptive schedule halves λ once the student's evaluations reach
            teacher success + this margin twice in a row (`rpd.student.losses.AdaptiveSchedule`).
        distill: "mse" on the Gaussian mean (paper), "l1", or "bc" (-log π(a_T|s)).
        live_budget: Max live teacher calls per rollout; None = unlimited. Transitions left
            unlabelled are masked out of the distill term.
        cache_radius: A lookup hits when the nearest cached key is this close (0 = exact).
            For a Zarr store: RMS key distance per dim in key-scale units (None = exact
            match with the label model, else rpd.pipeline.lookup.DEFAULT_RADIUS, 0.05); for
            the run's own store and .npz caches: distance in observation units (None = exact
            match).
        label_model: Fit a small ensemble (`rpd.pipeline.label_model`) to the store's labels
            and let it answer the states no stored key is near, where its members agree; the
            rest go to the live teacher. Its answers never enter the store. Zarr stores only
            (the run's own, or --cache).
        answer_audit: Per rollout, ask the live teacher about this many states answered
            without it (store or model) and log the answers' error by kind
            (`distill/answer_error_<kind>`, `answer_error` in student.json); audit calls are
            counted apart (`audit_calls`). 0 = no audit.
        label_replay: Keep this many labelled transitions of earlier rollouts and average
            each minibatch's distill term with that of as many replayed ones
            (`rpd.student.buffer.LabelReplay`); 0 = the current rollout only (the paper's).
        label_model_spread: The ensemble answers a state when the RMS over action dims of
            its members' standard deviation is at most this.
        seed: Seed of the policy, the sampling and every training episode (env k draws its
            episode seeds from `rpd.data.envs.episode_seeds(seed, k)`, above 2^31).
        resume: Continue the run in `out` from its last checkpoint.
        n_steps: Steps per env per rollout (rollout = n_steps x envs transitions).
        batch_size: PPO minibatch size.
        n_epochs: Passes over each rollout (ManiSkill's baseline: 4; SB3 default: 10).
        learning_rate: Adam learning rate (ManiSkill / SB3: 3e-4).
        gamma: Discount; None = 0.8 for dense (ManiSkill baseline), 0.99 for sparse (paper).
        gae_lambda: GAE λ (ManiSkill baseline: 0.9).
        clip_range: PPO clip (0.2).
        target_kl: Early-stop an update when the KL exceeds 1.5x this (RPD code: 0.2); None =
            never. With a distill term the early stop cut the very updates that copy the
            teacher (issue 14: on PickCube the gripper dim's error stayed ~5x higher).
        max_grad_norm: Gradient-norm clip of the whole loss, PPO + λ·distill (SB3/ManiSkill 0.5).
        ent_coef: Entropy bonus (ManiSkill baseline: 0).
        net_arch: Hidden layers of the actor and of the critic MLP.
        log_std_init: Initial log std of the Gaussian policy: -1.5 (std 0.22). ManiSkill's PPO
            baseline uses -0.5 (std 0.61): on PickCube that noise kept rollouts from the
            precise states a grasp needs, and the student's mean hovered where its noisy
            rollouts never got labels (issue 14). SB3's default 0 is std 1.
        normalize_obs: Standardise observations inside the policy with running statistics
            (`rpd.student.policies.NormalizedFlatten`); off = SB3's raw flatten.
        eval_every: Evaluate (and checkpoint) every this many env steps.
        checkpoint_every: Also checkpoint, without evaluating, every this many env steps (after
            a rollout's update), so a killed run loses less; None = with evaluations only. At
            every checkpoint each env starts a fresh episode, as a run resumed there does.
        eval_episodes: Episodes per evaluation (fixed seeds `eval_seed`...).
        eval_seed: First evaluation seed, in the seed plan's evaluation range
            (`rpd.data.seeds.EVALUATION`), which no demo, cache or training episode uses.
        teacher_batch: States per live teacher forward pass.
        teacher_camera_shift: The teacher sees its camera rotated by this many degrees about
            the scene's vertical axis (the paper's changed-perspective robustness test).
        teacher_object_color: The teacher sees the task's object in this colour
            (`rpd.data.envs.OBJECT_COLORS`): a task variation it was not fine-tuned on.
        device: Torch device of the student and the teacher: "auto" (CUDA when present),
            "cpu" or "cuda[:N]".
        sim_backend: "auto" (ManiSkill's GPU simulation when CUDA is present: all envs in one
            batched env), "cpu" (one subprocess per env) or "gpu".
    """

    env_id: str
    out: Path
    teacher: Path | None = None
    steps: int = 100_000
    cache: Path | None = None
    no_teacher: bool = False
    reward: str = "dense"
    obs: str = "state"
    student_camera: str | None = None
    student_image_size: int | None = None
    critic_state: bool = False
    envs: int = 8
    env_workers: int | None = None
    horizon: int | None = None
    offline_steps: int | None = None
    lam: float = 1.0
    lambda_schedule: str = "constant"
    lambda_decay_steps: int | None = None
    teacher_success: float | None = None
    lambda_margin: float = 0.05
    distill: str = "mse"
    live_budget: int | None = None
    cache_radius: float | None = None
    label_model: bool = True
    label_model_spread: float = 0.05
    answer_audit: int = 0
    label_replay: int = 0
    seed: int = 0
    resume: bool = False
    n_steps: int = 64
    batch_size: int = 128
    n_epochs: int = 8
    learning_rate: float = 3e-4
    gamma: float | None = None
    gae_lambda: float = 0.9
    clip_range: float = 0.2
    target_kl: float | None = None
    max_grad_norm: float = 0.5
    ent_coef: float = 0.0
    net_arch: tuple[int, ...] = (256, 256)
    log_std_init: float = -1.5
    normalize_obs: bool = True
    eval_every: int = 10_000
    eval_episodes: int = 10
    eval_seed: int = EVALUATION.start
    checkpoint_every: int | None = None
    teacher_batch: int = 64
    teacher_camera_shift: float = 0.0
    teacher_object_color: str | None = None
    device: str = "auto"
    sim_backend: str = "auto"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.teacher = Path(self.teacher) if self.teacher is not None else None
        self.cache = Path(self.cache) if self.cache is not None else None
        self.net_arch = tuple(self.net_arch)
        get_task(self.env_id)
        check_sim_backend(self.sim_backend)
        resolve_device(self.device)
        if self.teacher is None and not self.no_teacher:
            raise InputError("--teacher is required (or pass --no-teacher for plain PPO)")
        if self.no_teacher and self.cache is not None:
            raise InputError(f"--cache {self.cache}: plain PPO (--no-teacher) uses no teacher "
                             "labels; drop --cache or --no-teacher")
        if self.no_teacher and (self.teacher_camera_shift or self.teacher_object_color):
            raise InputError("--teacher-camera-shift/--teacher-object-color: plain PPO "
                             "(--no-teacher) has no teacher; drop one of them")
        if self.teacher_object_color is not None:
            CameraSpec(object_color=self.teacher_object_color)  # checks the name
        if self.reward not in ("dense", "sparse"):
            raise InputError(f"--reward {self.reward!r}: use 'dense' or 'sparse'")
        if self.obs not in ("state", *PIXEL_OBS_MODES):
            raise InputError(f"--obs {self.obs!r}: use 'state', 'rgb' or 'rgb+proprio'")
        if self.obs == "state":
            for name in ("student_camera", "student_image_size", "critic_state"):
                if getattr(self, name):
                    raise InputError(f"--{name.replace('_', '-')}: only pixel students have it "
                                     "(a state student sees the whole state); pass --obs rgb")
        if self.student_image_size is not None and self.student_image_size < NATURE_CNN_MIN:
            raise InputError(f"--student-image-size {self.student_image_size}: must be ≥ "
                             f"{NATURE_CNN_MIN} (NatureCNN's 8/4, 4/2, 3/1 convolutions)")
        for name in ("steps", "envs", "n_steps", "batch_size", "n_epochs", "eval_every",
                     "eval_episodes", "teacher_batch"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: "
                                 "must be a positive number")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise InputError(f"--checkpoint-every {self.checkpoint_every}: must be a positive "
                             "number of env steps (leave it out to checkpoint with evaluations)")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: must be ≥ 0")
        if self.env_workers is not None and self.env_workers <= 0:
            raise InputError(f"--env-workers {self.env_workers}: must be a positive number "
                             "(processes stepping the envs; default one per CPU core)")
        if not self.net_arch or any(w <= 0 for w in self.net_arch):
            raise InputError(f"--net-arch {','.join(map(str, self.net_arch))}: every layer "
                             "width must be a positive number, e.g. 256,256")
        if self.n_steps * self.envs < 2:
            raise InputError(f"--n-steps {self.n_steps} x --envs {self.envs}: a rollout needs "
                             "at least 2 transitions (PPO normalises advantages over it)")
        EVALUATION.check(self.eval_seed, self.eval_episodes, "--eval-seed")
        if self.offline_steps is not None and self.offline_steps < 0:
            raise InputError(f"--offline-steps {self.offline_steps}: must be ≥ 0")
        if self.lam < 0:
            raise InputError(f"--lambda {self.lam}: must be ≥ 0")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise InputError(f"--lambda-schedule {self.lambda_schedule!r}: use one of "
                             f"{', '.join(LAMBDA_SCHEDULES)}")
        if self.lambda_schedule == "adaptive" and self.no_teacher:
            raise InputError("--lambda-schedule adaptive follows a teacher's success; plain PPO "
                             "(--no-teacher) has none")
        if self.teacher_success is not None and not 0.0 <= self.teacher_success <= 1.0:
            raise InputError(f"--teacher-success {self.teacher_success}: a success rate in "
                             "[0, 1]")
        if self.lambda_schedule in SCHEDULE_KINDS[1:] and not (self.lambda_decay_steps or 0) > 0:
            raise InputError(f"--lambda-schedule {self.lambda_schedule}: needs "
                             "--lambda-decay-steps K > 0 (the step where λ reaches 0)")
        if self.distill not in DISTILL_KINDS:
            raise InputError(f"--distill {self.distill!r}: use one of {', '.join(DISTILL_KINDS)}")
        if self.target_kl is not None and self.target_kl < 0:
            raise InputError(f"--target-kl {self.target_kl}: must be ≥ 0 (0 = no early stop)")
        if self.answer_audit < 0:
            raise InputError(f"--answer-audit {self.answer_audit}: must be ≥ 0")
        if self.label_replay < 0:
            raise InputError(f"--label-replay {self.label_replay}: must be ≥ 0 (0 = none)")
        if self.live_budget is not None and self.live_budget < 0:
            raise InputError(f"--live-budget {self.live_budget}: must be ≥ 0")
        if not (self.label_model_spread > 0 and math.isfinite(self.label_model_spread)):
            raise InputError(f"--label-model-spread {self.label_model_spread}: must be a "
                             "positive number (the members' RMS standard deviation)")
        if self.cache is not None and not self.cache.exists():
            raise InputError(f"--cache {self.cache}: no such store; build one with `rpd cache` "
                             "or pass the labels.npz of an earlier run")

    @property
    def resolved_gamma(self) -> float:
        """gamma: 0.8 dense (ManiSkill PPO baseline), 0.99 sparse (paper), unless set."""
        if self.gamma is not None:
            return self.gamma
        return 0.8 if self.reward == "dense" else 0.99

    @property
    def resolved_offline_steps(self) -> int:
        if self.offline_steps is not None:
            return self.offline_steps
        return 2000 if self.cache is not None and not self.no_teacher else 0

    @property
    def policy(self) -> Any:
        """The SB3 policy (class or name) of the student."""
        if self.obs == "state":
            return "MlpPolicy"
        from rpd.student.policies import PixelActorCriticPolicy

        return PixelActorCriticPolicy

    @property
    def policy_kwargs(self) -> dict[str, Any]:
        """SB3 policy_kwargs of the student (the MLP heads, its initial std, normalisation;
        for pixel students what actor and critic read)."""
        kwargs: dict[str, Any] = dict(
            net_arch=dict(pi=list(self.net_arch), vf=list(self.net_arch)),
            log_std_init=self.log_std_init)
        if self.obs != "state":
            actor = ("rgb", "proprio") if self.obs == "rgb+proprio" else ("rgb",)
            kwargs.update(actor_keys=actor, normalize=self.normalize_obs,
                          critic_keys=(*actor, "state") if self.critic_state else actor)
        elif self.normalize_obs:
            from rpd.student.policies import NormalizedFlatten

            kwargs["features_extractor_class"] = NormalizedFlatten
        return kwargs

    @property
    def schedule(self) -> LambdaSchedule | AdaptiveSchedule:
        """A new λ schedule for this run (the adaptive one reads the teacher's success)."""
        if self.lambda_schedule == "adaptive":
            return AdaptiveSchedule(self.lam, self.resolved_teacher_success(),
                                    margin=self.lambda_margin)
        return LambdaSchedule(self.lambda_schedule, self.lam, self.lambda_decay_steps)

    def resolved_teacher_success(self) -> float:
        """`teacher_success`, else the success in the teacher's own evaluation at the
        student's horizon (`rpd eval --teacher T --env ENV --horizon H` writes
        T/eval/ENV-hH.json)."""
        if self.teacher_success is not None:
            return self.teacher_success
        horizon = self.horizon or 50
        path = Path(str(self.teacher)) / "eval" / f"{self.env_id}-h{horizon}.json"
        fix = (f"run `rpd eval --teacher {self.teacher} --env {self.env_id} --horizon "
               f"{horizon}` first, or pass --teacher-success")
        if not path.is_file():
            raise InputError(f"--lambda-schedule adaptive: no {path}; {fix}")
        try:
            success = float(json.loads(path.read_text())["success_rate"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"--lambda-schedule adaptive: {path} holds no success_rate; "
                             f"{fix}") from None
        logger.info("adaptive λ: the teacher's success is %.2f (%s)", success, path)
        return success

    def student_view(self, teacher: Any = None) -> CameraSpec | None:
        """A pixel student's camera (None for a state student): see `student_camera`."""
        if self.obs == "state":
            return None
        sees = teacher is not None and not teacher.uses_env_state
        name = self.student_camera or (teacher.spec.camera.name if sees else "render")
        size = self.student_image_size or (teacher.spec.camera.width if sees else 64)
        if size < NATURE_CNN_MIN:  # inherited from a teacher fine-tuned on small frames
            raise InputError(f"--teacher {self.teacher}: its camera is {size} px, below the "
                             f"pixel student's {NATURE_CNN_MIN} px (NatureCNN); pass "
                             f"--student-image-size {NATURE_CNN_MIN} or larger")
        return CameraSpec(name, size, size)

    def env_config(self, camera: CameraSpec | None = None) -> EnvConfig:
        """The training env: `camera` from `student_view` for a pixel student."""
        return EnvConfig(self.env_id, obs_mode=self.obs,  # type: ignore[arg-type]
                         reward_mode="normalized_dense" if self.reward == "dense" else "sparse",
                         max_episode_steps=self.horizon, camera=camera,
                         sim_backend=self.sim_backend)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out", "teacher", "cache"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["net_arch"] = list(self.net_arch)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# The options a resumed run must share with the original (everything but the length).
_RESUME_FIXED = ("env_id", "teacher", "cache", "no_teacher", "reward", "obs", "student_camera",
                 "student_image_size", "critic_state", "envs", "horizon",
                 "lam", "lambda_schedule", "lambda_decay_steps", "teacher_success",
                 "lambda_margin", "distill", "seed", "n_steps",
                 "batch_size", "n_epochs", "net_arch", "log_std_init", "normalize_obs",
                 "target_kl", "max_grad_norm", "teacher_camera_shift",
                 "teacher_object_color", "learning_rate", "gamma", "gae_lambda", "clip_range",
                 "ent_coef")
"""SB3 restores these from the checkpoint, so a changed value would not be applied: refused
(`live_budget`, `cache_radius`, the label model, `answer_audit`, `label_replay` (a changed
capacity starts an empty replay), `teacher_batch` and evaluation options are applied)."""


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

    A `rpd cache` Zarr store given with --cache, a labels.npz given with --cache, or (no
    --cache) an empty Zarr store created in RUN/cache and filled live.
    """
    from rpd.data.store import KeySpec
    from rpd.pipeline.lookup import DEFAULT_RADIUS, TeacherCache

    if cfg.cache is None:
        # exact match (up to float rounding in the index) unless a radius is given
        cache = TeacherCache.open(cfg.out / CACHE_DIR, teacher, env_id=cfg.env_id,
                                  radius=cfg.cache_radius or EXACT_RADIUS, create=True,
                                  key_spec=KeySpec.fixed(obs_dim))
    elif cfg.cache.is_file() and cfg.cache.suffix == ".npz":
        from rpd.pipeline.labeling import TeacherLabeler

        labeler = TeacherLabeler(teacher, cfg.env_id, batch_size=cfg.teacher_batch,
                                 sim_backend=cfg.sim_backend)
        return InMemoryLabelSource(labeler.label_env_states, radius=cfg.cache_radius or 0.0,
                                   path=cfg.cache, on_close=labeler.close)
    else:
        # the label model answers more states, better, than neighbours (README, issue 19)
        default = EXACT_RADIUS if cfg.label_model else DEFAULT_RADIUS
        radius = default if cfg.cache_radius is None else cfg.cache_radius
        cache = TeacherCache.open(cfg.cache, teacher, env_id=cfg.env_id, radius=radius)
    cache.sim_backend = cfg.sim_backend
    if cfg.label_model:
        from rpd.pipeline.label_model import EnsembleConfig, LabelEnsemble

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
    _keep_if_best(cfg.out / "checkpoints", row)
    state.eval_time += time.perf_counter() - t_eval
    return row


def _keep_if_best(ckpt: Path, row: dict[str, Any]) -> None:
    """Copy the checkpoint just written to best.zip (+ best.json: its eval.csv row, under the
    same column names) when its evaluation success beats every earlier one (a tie keeps the
    earlier). Students often peak and then decay (issue 15: 0.70 at 248k, 0.25 at 300k), so the
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
            shutil.copyfile(ckpt / "latest.zip", ckpt / ".best.tmp.zip")
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

    ckpt = cfg.out / "checkpoints"
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
        (ckpt / ".latest.tmp.zip").replace(ckpt / "latest.zip")
        write_json_atomic(ckpt / "latest.json", dict(num_timesteps=model.num_timesteps,
                                                     wall_time_s=wall,
                                                     last_eval=state.last_eval, env=state.env))
        state.last_checkpoint = model.num_timesteps
        flush = getattr(model.label_source, "flush", None)
        if flush is not None:
            flush()


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

    from rpd.student.buffer import LabelReplay

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
    ensemble = getattr(model.label_source, "model", None)
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
    ensemble = getattr(model.label_source, "model", None)
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
        saved.setdefault("log_std_init", 0.0)  # runs from before the option used SB3's 0
        saved.setdefault("normalize_obs", False)  # runs from before it fed raw observations
        # runs from before these options saw the teacher's own view
        saved.setdefault("teacher_camera_shift", 0.0)
        saved.setdefault("teacher_object_color", None)
        # runs from before pixel students
        saved.update({k: saved.get(k) for k in ("student_camera", "student_image_size")})
        saved.setdefault("critic_state", False)
        saved.setdefault("lambda_margin", 0.05)  # runs from before the adaptive schedule
        for k in _RESUME_FIXED:
            if saved.get(k) != new.get(k):
                raise InputError(f"--resume: {cfg.out} was trained with {k}={saved.get(k)!r}, "
                                 f"now {new.get(k)!r}; pass the same options (only --steps and "
                                 "evaluation options may change)")
        info_path = cfg.out / "checkpoints" / "latest.json"
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
        if source is not None and hasattr(source, "close"):
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
        close = getattr(source, "close", None)
        if close is not None:
            close()


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
        max_grad_norm=cfg.max_grad_norm, ent_coef=cfg.ent_coef, policy_kwargs=cfg.policy_kwargs,
        tensorboard_log=str(cfg.out / "tb"), seed=cfg.seed, device=resolve_device(cfg.device),
        verbose=0)
    return model, RunState()


def _resume_model(cfg: TrainConfig, venv: Any, source: LabelSource | None,
                  info: dict[str, Any]) -> tuple[Any, RunState, dict[str, Any] | None]:
    """The student of a resumed run, from its last checkpoint (`info`: latest.json), with the
    options a resume may change applied, and the checkpoint's train state (`_read_train_state`)
    to apply last. Every checkpoint file is read before eval.csv is trimmed or config.json
    rewritten. (`_prepare_run_dir` has checked the options that must not change.)"""
    from rpd.data.schema import write_json_atomic

    ckpt = cfg.out / "checkpoints"
    model = load_model(ckpt / "latest.zip", "--resume",
                       f"delete {ckpt} to start the run again",
                       env=venv, device=resolve_device(cfg.device), label_source=source,
                       tensorboard_log=str(cfg.out / "tb"))
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
        from rpd.pipeline.labeling import TeacherLabeler

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
    if steps <= 0 or getattr(source, "entries", None) is None:
        return None
    assert source is not None
    if view is None:
        obs, actions = source.entries()  # type: ignore[attr-defined]
        states = None
    else:
        obs, states, actions = source.entries_with_states()  # type: ignore[attr-defined]
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
        from rpd.data.envs import render_states

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
