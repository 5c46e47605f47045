"""`rpd train`'s config: every option written once (`rpd.config.option`), with what a resume
may change, what makes runs different experiments, and what older runs without it trained
with. The `rpd train` options, the resume rules, `rpd report`'s groups and the reading of
config files and recipes all derive from these fields.

Hyperparameter sources (PPO defaults): ManiSkill's PPO baseline (gamma 0.8, GAE λ 0.9, lr 3e-4,
clip 0.2, max_grad_norm 0.5, vf_coef 0.5, ent_coef 0, no reward normalisation) and the RPD paper
(arXiv 2503.05833: MSE on the mean, λ = 1 constant, gamma 0.99 for sparse reward); the rollout
is scaled down from ManiSkill's 512 GPU envs x 50 steps to 8 CPU envs x 64 steps. Three defaults
depart from both, measured on PickCube with an exact teacher (README): observations
standardised inside the policy, initial log std -1.5 instead of -0.5, and no KL early stop;
with ManiSkill's settings the student never copied the teacher in 100k steps. The reference
code's own settings are the `reference` recipe (`rpd recipes`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rpd.config import absent_values, field_infos, fields_where, option, to_plain
from rpd.data.devices import check_sim_backend, resolve_device
from rpd.data.seeds import EVALUATION
from rpd.data.tasks import get_task
from rpd.data.vec_envs import EnvConfig
from rpd.data.views import PIXEL_OBS_MODES, CameraSpec
from rpd.errors import InputError
from rpd.student.losses import (
    DISTILL_KINDS,
    LAMBDA_SCHEDULES,
    SCHEDULE_KINDS,
    AdaptiveSchedule,
    LambdaSchedule,
)
from rpd.student.policies import NATURE_CNN_MIN_SIZE as NATURE_CNN_MIN

logger = logging.getLogger(__name__)

OBS_MODES = ("state", "rgb", "rgb+proprio")


@dataclass
class TrainConfig:
    """Everything `rpd train` needs; defaults run on a laptop CPU. Each field's help is its
    documentation (`rpd train --help` prints it)."""

    command: ClassVar[str] = "train"

    # ---- what to train, and where ---------------------------------------------------------
    env_id: str = option(help="Task id, e.g. PushCube-v1 (see `rpd tasks`).", cli="--env")
    out: Path = option(help="Run directory (created; must not exist unless --resume).",
                       resume="free")
    teacher: Path | None = option(
        None, help="Teacher checkpoint directory (`rpd finetune-teacher`, `rpd scripted-"
        "teacher`, `rpd connect-teacher`); required unless --no-teacher.")
    no_teacher: bool = option(False, flag="--no-teacher/--with-teacher",
                              help="Plain PPO with otherwise identical settings (the baseline).")
    steps: int = option(100_000, help="Total env steps (all envs together); a resume may grow "
                        "it.", resume="free")
    seed: int = option(0, help="Seed of the policy, the sampling and every training episode "
                       "(env k draws its episode seeds from its own stream in the seed plan's "
                       "training range).")
    resume: bool = option(False, flag="--resume", resume="free", in_file=False,
                          help="Continue the run in --out from its last checkpoint.")
    device: str = option("auto", resume="free",
                         help="Torch device of the student and the teacher: auto (CUDA when "
                         "present), cpu or cuda[:N].")
    wandb: bool = option(False, resume="free", absent=False,
                         help="Also log the run to Weights & Biases (its TensorBoard scalars and "
                         "config; WANDB_MODE=offline keeps it on disk in OUT/wandb).")
    wandb_project: str = option("rpd", resume="free", help="The Weights & Biases project.")

    # ---- environment and observation -----------------------------------------------------
    reward: str = option("dense", choices=("dense", "sparse"),
                         help="dense (ManiSkill's normalized dense reward) or sparse (success "
                         "only).")
    obs: str = option("state", choices=OBS_MODES, variant=True,
                      help="Student observation: state (flat state vector, MLP), rgb (the "
                      "camera frame alone, NatureCNN: the paper's pixel student) or rgb+proprio.")
    student_camera: str | None = option(
        None, variant=True, absent=None,
        help="A pixel student's camera (render or a sensor camera of the task) [default: the "
        "teacher's; render when the teacher sees no camera].")
    student_image_size: int | None = option(
        None, variant=True, absent=None,
        help="A pixel student's image side in pixels, ≥ 36 [default: the teacher camera's "
        "width, or 64].")
    critic_state: bool = option(
        False, variant=True, absent=False,
        help="Asymmetric critic: a pixel student's critic also reads the flat state (known in "
        "simulation only; the actor, all that is deployed, never does).")
    envs: int = option(8, variant=True, help="Parallel envs.")
    env_workers: int | None = option(
        None, resume="free",
        help="CPU: processes stepping the envs, each a contiguous block of them [default: one "
        "per CPU core, at most one per env]; results do not depend on it.")
    horizon: int | None = option(None, variant=True,
                                 help="Episode length for training and evaluation [default: "
                                 "the task's, 50].")
    sim_backend: str = option("auto", variant=True, absent="auto",
                              help="auto (ManiSkill's GPU simulation when CUDA is present), cpu "
                              "(one subprocess per env block) or gpu.")

    # ---- distillation --------------------------------------------------------------------
    lam: float = option(1.0, cli="--lambda", variant=True, teacher_only=True,
                        help="λ, the weight of the distill term at the start (paper: 1.0).")
    lambda_schedule: str = option(
        "constant", choices=LAMBDA_SCHEDULES, variant=True, teacher_only=True,
        help="constant (the paper's), linear or cosine decay to 0 by --lambda-decay-steps, or "
        "adaptive: λ held while the student's evaluations are below its teacher's success and "
        "halved once they stay ahead. The teacher is not consulted once λ is 0.")
    lambda_decay_steps: int | None = option(
        None, variant=True, teacher_only=True,
        help="Env step where a decaying λ reaches 0 (linear, cosine).")
    teacher_success: float | None = option(
        None, variant=True, teacher_only=True, absent=None,
        help="The adaptive schedule's reference success [default: the teacher's "
        "TEACHER/eval/ENV-hH.json at the student's horizon, from `rpd eval --teacher`].")
    lambda_margin: float = option(
        0.05, variant=True, teacher_only=True, absent=0.05,
        help="How far above its teacher the student must be before adaptive λ falls.")
    distill: str = option("mse", choices=DISTILL_KINDS, variant=True, teacher_only=True,
                          help="mse on the Gaussian mean (the paper's), l1, or bc "
                          "(-log π(a_T|s)).")
    offline_steps: int | None = option(
        None, variant=True, teacher_only=True,
        help="Supervised steps fitting the policy mean to the store's labels before online "
        "RPD [default: 2000 with --cache, else 0].")
    teacher_camera_shift: float = option(
        0.0, variant=True, teacher_only=True, absent=0.0,
        help="The teacher sees its camera rotated by this many degrees about the scene "
        "(the paper's changed-perspective robustness test).")
    teacher_object_color: str | None = option(
        None, variant=True, teacher_only=True, absent=None,
        help="The teacher sees the task's object in this colour: green, red or yellow (a task "
        "variation it was not fine-tuned on).")

    # ---- labels --------------------------------------------------------------------------
    cache: Path | None = option(
        None, variant=True, teacher_only=True,
        help="Teacher-action store (`rpd cache`) to look labels up in and write live labels "
        "back to [default: a new one in OUT/cache].")
    live_budget: int | None = option(
        None, resume="free", variant=True, teacher_only=True,
        help="Max live teacher calls per rollout [default: unlimited]; 0 = none. Transitions "
        "left unlabelled are masked out of the distill term.")
    cache_radius: float | None = option(
        None, resume="free", variant=True, teacher_only=True,
        help="A lookup hits when the nearest stored key is this close (RMS per key dim, in "
        "key-scale units) [default: exact match with the label model, 0.05 without].")
    label_model: bool = option(
        True, resume="free", variant=True, teacher_only=True, absent=False,
        help="Let a small ensemble fitted to the store's labels answer the states no stored "
        "key is near, where its members agree; the rest go to the live teacher.")
    label_model_spread: float = option(
        0.05, resume="free", variant=True, teacher_only=True, absent=0.05,
        help="The ensemble answers a state when its members' RMS standard deviation is at "
        "most this.")
    answer_audit: int = option(
        0, resume="free", variant=True, teacher_only=True, absent=0,
        help="Per rollout, ask the live teacher about this many states answered without it "
        "and log the answers' error (distill/answer_error_*); 0 = no audit.")
    label_replay: int = option(
        0, resume="free", variant=True, teacher_only=True, absent=0,
        help="Also fit the distill term on the latest N labelled transitions of earlier "
        "rollouts; 0 = the current rollout only (the paper's).")
    teacher_batch: int = option(64, resume="free", help="States per live teacher forward pass.")

    # ---- PPO -----------------------------------------------------------------------------
    n_steps: int = option(64, variant=True,
                          help="Steps per env per rollout (a rollout is n_steps x envs "
                          "transitions).")
    batch_size: int = option(128, variant=True, help="PPO minibatch size.")
    n_epochs: int = option(8, variant=True, help="PPO passes over each rollout.")
    learning_rate: float = option(3e-4, variant=True, help="Adam learning rate.")
    gamma: float | None = option(None, variant=True,
                                 help="Discount [default: 0.8 dense (ManiSkill's baseline), "
                                 "0.99 sparse (the paper's)].")
    gae_lambda: float = option(0.9, variant=True, help="GAE λ.")
    clip_range: float = option(0.2, variant=True, help="PPO clip range.")
    target_kl: float | None = option(
        None, variant=True,
        help="Stop an update's epochs once the KL from the rollout policy exceeds 1.5x this "
        "[default: never; 0 = never]. With a distill term the early stop cut the very updates "
        "that copy the teacher.")
    max_grad_norm: float = option(0.5, variant=True,
                                  help="Gradient-norm clip of the whole loss, PPO + λ·distill.")
    ent_coef: float = option(0.0, variant=True, help="Entropy bonus.")
    vf_coef: float = option(0.5, variant=True, absent=0.5, help="Value loss weight.")
    net_arch: tuple[int, ...] = option((256, 256), variant=True,
                                       help="Hidden layer sizes of the actor and the critic MLP.")
    log_std_init: float = option(
        -1.5, variant=True, absent=0.0,
        help="Initial log std of the Gaussian policy (std 0.22). ManiSkill's baseline uses -0.5: "
        "on PickCube that noise kept rollouts from the states a grasp needs.")
    normalize_obs: bool = option(
        True, flag="--normalize-obs/--raw-obs", variant=True, absent=False,
        help="Standardise observations inside the policy with running statistics.")

    # ---- evaluation and checkpoints -------------------------------------------------------
    eval_every: int = option(10_000, resume="free",
                             help="Evaluate (and checkpoint) every this many env steps.")
    eval_episodes: int = option(10, resume="free",
                                help="Episodes per evaluation (deterministic actions).")
    eval_seed: int = option(
        EVALUATION.start, resume="free",
        help="First seed of the in-training evaluations, in the seed plan's evaluation range "
        f"[{EVALUATION.start:,}, {EVALUATION.stop:,}).")
    checkpoint_every: int | None = option(
        None, resume="free",
        help="Also checkpoint, without evaluating, every this many env steps, so a killed run "
        "loses less [default: with each evaluation].")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.teacher = Path(self.teacher) if self.teacher is not None else None
        self.cache = Path(self.cache) if self.cache is not None else None
        self.net_arch = tuple(self.net_arch)
        if self.target_kl == 0:
            self.target_kl = None  # "0 = never stop early", as the option says
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
        if not (math.isfinite(self.lambda_margin) and self.lambda_margin >= 0):
            raise InputError(f"--lambda-margin {self.lambda_margin}: must be a number ≥ 0")
        if self.lambda_schedule in SCHEDULE_KINDS[1:] and not (self.lambda_decay_steps or 0) > 0:
            raise InputError(f"--lambda-schedule {self.lambda_schedule}: needs "
                             "--lambda-decay-steps K > 0 (the step where λ reaches 0)")
        if self.distill not in DISTILL_KINDS:
            raise InputError(f"--distill {self.distill!r}: use one of {', '.join(DISTILL_KINDS)}")
        if self.target_kl is not None and self.target_kl < 0:
            raise InputError(f"--target-kl {self.target_kl}: must be ≥ 0 (0 = no early stop)")
        for name in ("learning_rate", "clip_range"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be "
                                 "a positive number")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} {v}: must be in [0, 1]")
        for name in ("ent_coef", "vf_coef", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be "
                                 "≥ 0")
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
            raise InputError(f"--cache {self.cache}: no such store; build one with `rpd cache`")

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
        student's horizon and in the view the student's teacher sees (`rpd eval --teacher T
        --env ENV --horizon H [--camera-shift D] [--object-color C]` writes
        `T/eval/ENV-hH[-shiftD][-C].json`)."""
        if self.teacher_success is not None:
            return self.teacher_success
        from rpd.data.rundir import teacher_eval_path

        horizon = self.horizon or 50
        shift, color = self.teacher_camera_shift, self.teacher_object_color
        path = teacher_eval_path(str(self.teacher), self.env_id, horizon, shift, color)
        view = (f" --camera-shift {shift:g}" if shift else "") + (
            f" --object-color {color}" if color else "")
        fix = (f"run `rpd eval --teacher {self.teacher} --env {self.env_id} --horizon "
               f"{horizon}{view}` first, or pass --teacher-success")
        if not path.is_file():
            raise InputError(f"--lambda-schedule adaptive: no {path}; {fix}")
        try:
            success = float(json.loads(path.read_text())["success_rate"])
        except (OSError, ValueError, KeyError, TypeError):
            success = float("nan")
        if not 0.0 <= success <= 1.0:
            raise InputError(f"--lambda-schedule adaptive: {path} holds no success_rate in "
                             f"[0, 1]; {fix}")
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
        """config.json: every field, as JSON values."""
        return to_plain(self)


RESUME_FIXED = fields_where(TrainConfig, resume="fixed")
"""Options a resumed run must keep: SB3 restores them from the checkpoint (or the run would
become another experiment), so a changed value is refused; the others are applied."""
FIXED_PATHS = frozenset(i.name for i in field_infos(TrainConfig)
                        if i.base is Path and i.name in RESUME_FIXED)
"""Of those, the ones naming a file or directory (the teacher, the store): a resume compares
them as files, not strings, and config.json keeps the spelling the run started with."""
VARIANT_FIELDS = fields_where(TrainConfig, variant=True)
"""Options that make runs of one task different experiments, not repeats (`rpd report`)."""
TEACHER_ONLY_FIELDS = fields_where(TrainConfig, teacher_only=True)
"""Of those, the ones that act only through the teacher: they do not split plain-PPO runs."""
ABSENT_MEANS = absent_values(TrainConfig)
"""What a run whose config.json lacks an option (written before it existed) trained with."""
