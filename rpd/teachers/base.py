"""The teacher interface every backend meets, and the registry of backends by `kind`.

A teacher sees the teacher-camera image and a language instruction (and optionally the
robot's proprioception) and returns end-effector actions in the env's units. Backends
subclass `Teacher`, implement its abstract methods and register with `@register_teacher`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rpd.data.schema import TEACHER_JSON, TEACHER_WEIGHTS, read_teacher_json
from rpd.data.views import CameraSpec
from rpd.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher consumes and produces.

    Attributes:
        camera: The camera it sees (name, size) — the env must render exactly this.
        control_mode: ManiSkill control mode of its actions.
        action_dim: A, the action size.
        chunk_size: Future actions predicted per call (1 = no chunking).
        proprio_dim: Size of the proprioception vector it takes (0 = none).
        tasks: env id -> instruction, the tasks it was trained on.
    """

    camera: CameraSpec
    control_mode: str
    action_dim: int
    chunk_size: int = 1
    proprio_dim: int = 0
    tasks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "camera": self.camera.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherSpec:
        d = dict(d)
        d["camera"] = CameraSpec(**d["camera"])
        return cls(**d)

    def instruction(self, env_id: str) -> str:
        """The instruction for `env_id`; InputError if the teacher was not trained on it."""
        if env_id not in self.tasks:
            raise InputError(
                f"--env {env_id}: this teacher knows no instruction for it (trained on "
                f"{', '.join(self.tasks) or 'no task'}); fine-tune it on {env_id} demos"
            )
        return self.tasks[env_id]


@dataclass
class TeacherBatch:
    """Inputs for one batched teacher call.

    Attributes:
        images: Teacher-camera RGB [B, H, W, 3] uint8.
        instructions: B instruction strings.
        proprio: [B, P] float32, or None when the teacher takes none.
        env_states: [B, S] simulator states (`rpd.data.env_state.get_env_state`) for a teacher
            that reads the state (`Teacher.uses_env_state`), else None. Such a teacher gets
            `no_images(B)` as images: nothing is rendered for it.
    """

    images: np.ndarray
    instructions: list[str]
    proprio: np.ndarray | None = None
    env_states: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3], got {self.images.shape}")
        if len(self.instructions) != len(self.images):
            raise ValueError(
                f"{len(self.instructions)} instructions for {len(self.images)} images"
            )

    def __len__(self) -> int:
        return len(self.images)


def no_images(n: int) -> np.ndarray:
    """The images of a batch for a teacher that reads simulator states: [n, 0, 0, 3] uint8."""
    return np.zeros((n, 0, 0, 3), np.uint8)


class Teacher(ABC):
    """A batched, gradient-free policy from (image, instruction[, proprio]) to actions.

    Subclasses set `kind`, implement `act_chunk`, `_save_weights` and `_load`, and are
    registered with `@register_teacher`. Actions are unnormalised (env units).
    """

    kind: ClassVar[str]
    has_weights: ClassVar[bool] = True
    """False for a backend whose checkpoint is teacher.json alone (`remote`, `scripted`)."""
    made_by: ClassVar[str | None] = None
    """For a backend rpd does not fine-tune: the command that makes its checkpoint."""
    device_support: ClassVar[bool] = False
    """True for a backend whose `act` runs on any torch device after `to(device)`; the others
    run on the CPU only (`to` refuses another device)."""
    device: str = "cpu"
    """Where `act` runs (see `to`)."""
    uses_env_state: ClassVar[bool] = False
    """True for a privileged teacher that acts on `TeacherBatch.env_states` (`scripted`):
    callers then pass simulator states and render nothing."""
    _checkpoint_fingerprint: str | None = None

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None) -> None:
        self.spec = spec
        self.config = config
        self.action_stats = action_stats or {}
        self.training: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self._fingerprint: str | None = None

    def to(self, device: str) -> Teacher:
        """Run this teacher on a torch `device` ("cpu", "cuda", "cuda:N"): moves its network
        (`self.net`, if any). Returns self.

        Raises:
            InputError: the backend runs on the CPU only (`device_support` is False).
        """
        if str(device) != "cpu" and not self.device_support:
            from rpd.errors import InputError

            raise InputError(f"--device {device}: the {self.kind} backend runs on the CPU only "
                             "so far; pass --device cpu")
        net = getattr(self, "net", None)
        if net is not None and hasattr(net, "to"):
            net.to(device)
        self.device = str(device)
        return self

    @abstractmethod
    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        """Predict action chunks [B, chunk_size, A] float32 in env units (no grad)."""

    def act(self, batch: TeacherBatch) -> np.ndarray:
        """The next action for each state: [B, A] float32 in env units."""
        return self.act_chunk(batch)[:, 0]

    @abstractmethod
    def _save_weights(self, path: Path) -> None:
        """Write the weights to `path` (safetensors)."""

    @classmethod
    @abstractmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> Teacher:
        """Rebuild the teacher from its teacher.json dict and weights file."""

    def with_view(self, *, shift_deg: float = 0.0, object_color: str | None = None) -> Teacher:
        """Make this teacher see its camera rotated by `shift_deg` about the scene's vertical
        axis (the paper's changed-perspective test) and the task's object painted
        `object_color` (a task variation), and return it. Its fingerprint changes with the
        view, so labels from different views never mix in a store."""
        from dataclasses import replace

        if self.uses_env_state:
            raise InputError(f"--teacher-camera-shift/--teacher-object-color: a {self.kind} "
                             "teacher reads simulator states and sees no camera; drop them")
        if self._checkpoint_fingerprint is None:
            self._checkpoint_fingerprint = self.fingerprint
        camera = replace(self.spec.camera, shift_deg=float(shift_deg), object_color=object_color)
        self.spec = replace(self.spec, camera=camera)
        self._fingerprint = None
        return self

    @property
    def checkpoint_fingerprint(self) -> str:
        """The checkpoint's own fingerprint, whatever view `with_view` gave the teacher: the one
        its evaluations (`rpd eval --teacher`) name."""
        return self._checkpoint_fingerprint or self.fingerprint

    # ---- checkpoint ------------------------------------------------------------------------

    def save(self, ckpt_dir: str | Path) -> Path:
        """Write teacher.json + weights to `ckpt_dir` (weights first, json last, atomically)."""
        from rpd.data.schema import TEACHER_SCHEMA_VERSION, write_json_atomic

        ckpt_dir = Path(ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if self.has_weights:
            tmp = ckpt_dir / f".{TEACHER_WEIGHTS}.tmp"
            self._save_weights(tmp)
            tmp.replace(ckpt_dir / TEACHER_WEIGHTS)
        meta = dict(schema_version=TEACHER_SCHEMA_VERSION, kind=self.kind,
                    spec=self.spec.to_dict(), config=self.config,
                    action_stats=self.action_stats, training=self.training,
                    metrics=self.metrics)
        write_json_atomic(ckpt_dir / TEACHER_JSON, meta)
        self._fingerprint = None
        return ckpt_dir

    @property
    def fingerprint(self) -> str:
        """Content hash of kind + spec + config + action statistics + weights (16 hex chars).

        Training logs and metrics are left out: they do not change what the teacher does.
        A teacher without weights is its config.
        """
        if self._fingerprint is None:
            import tempfile

            h = hashlib.sha256()
            identity = dict(kind=self.kind, spec=self.spec.to_dict(), config=self.config,
                            action_stats=self.action_stats)
            h.update(json.dumps(identity, sort_keys=True).encode())
            if not self.has_weights:
                self._fingerprint = h.hexdigest()[:16]
                return self._fingerprint
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / TEACHER_WEIGHTS
                self._save_weights(path)
                h.update(_weights_digest(path))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def _weights_digest(path: Path) -> bytes:
    """Digest of the tensors in a safetensors file (independent of its metadata header)."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    tensors = load_file(str(path))
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    return h.digest()


_REGISTRY: dict[str, type[Teacher]] = {}


def register_teacher(kind: str) -> Callable[[type[Teacher]], type[Teacher]]:
    """Class decorator: make a Teacher subclass loadable by its `kind`."""

    def wrap(cls: type[Teacher]) -> type[Teacher]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return wrap


def teacher_kinds() -> list[str]:
    _import_backends()
    return sorted(_REGISTRY)


def teacher_class(kind: str) -> type[Teacher]:
    _import_backends()
    if kind not in _REGISTRY:
        raise InputError(f"--kind {kind!r}: unknown teacher kind; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[kind]


def load_teacher(ckpt_dir: str | Path, option: str = "--teacher") -> Teacher:
    """Load any registered teacher from its checkpoint directory.

    Raises:
        InputError: missing/corrupt teacher.json or weights, unknown kind, newer schema.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = read_teacher_json(ckpt_dir, option)
    _import_backends()
    if meta["kind"] not in _REGISTRY:
        raise InputError(
            f"{ckpt_dir / TEACHER_JSON}: teacher kind {meta['kind']!r} is not known to this rpd "
            f"(known: {', '.join(sorted(_REGISTRY))}); install the backend or upgrade rpd"
        )
    weights = ckpt_dir / TEACHER_WEIGHTS
    if _REGISTRY[meta["kind"]].has_weights and not weights.is_file():
        raise InputError(f"{option} {ckpt_dir}: {TEACHER_WEIGHTS} is missing; re-create the "
                         "checkpoint with `rpd finetune-teacher`")
    try:
        teacher = _REGISTRY[meta["kind"]]._load(meta, weights)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{weights}: cannot load the weights ({type(e).__name__}: {str(e)[:120]}); the file "
            "is corrupt or from another model: re-create the checkpoint"
        ) from None
    teacher.training = meta.get("training", {})
    teacher.metrics = meta.get("metrics", {})
    return teacher


def place_teacher(teacher: Teacher, choice: str, option: str = "--device") -> Teacher:
    """Move `teacher` to the `--device` choice (`rpd.data.devices.resolve_device`); "auto" keeps a
    backend without `device_support` on the CPU."""
    from rpd.data.devices import resolve_device

    device = resolve_device(choice, option)
    if choice == "auto" and not teacher.device_support:
        device = "cpu"
    return teacher.to(device)


BUILTIN_BACKENDS: tuple[str, ...] = ("rpd.teachers.octo", "rpd.teachers.simple",
                                     "rpd.teachers.remote", "rpd.teachers.openvla",
                                     "rpd.teachers.pi0", "rpd.teachers.scripted")


def _import_backends() -> None:
    """Import the built-in backends so they register themselves."""
    import importlib

    for name in BUILTIN_BACKENDS:
        importlib.import_module(name)
