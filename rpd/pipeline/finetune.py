"""`rpd finetune-teacher`: fine-tune a VLA teacher on ManiSkill demonstrations.

AdamW with linear warmup and cosine decay, image augmentation (random shift crop, colour
jitter), held-out validation episodes, checkpoints every N steps and at the end, resume,
TensorBoard scalars. Several demo files of different tasks train one multi-task teacher
conditioned on each task's instruction.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpd.data.rundir import TRAIN_STATE
from rpd.data.schema import TEACHER_JSON
from rpd.data.tasks import TASKS
from rpd.data.teacher_data import PROPRIO_DIM, TeacherData, load_teacher_data, render_teacher_data
from rpd.data.trajectories import open_trajectory, summarize
from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherSpec, load_teacher, place_teacher
from rpd.teachers.normalize import action_stats, normalize

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """`rpd finetune-teacher`.

    Attributes:
        demos: ManiSkill trajectory .h5 files (one or more tasks, same control mode).
        out: Checkpoint directory to write.
        kind: Teacher backend.
        size: Model size preset (`tiny` for tests, `small` by default).
        steps: Optimiser steps.
        batch_size: Samples per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warmup before cosine decay to 0.
        chunk_size: Future actions predicted per call.
        image_size: Teacher camera resolution (square).
        camera: Teacher camera: "render" (human render camera, sees goal markers) or a sensor.
        use_proprio: Feed the robot's joint positions as a token.
        val_fraction: Fraction of episodes held out for validation (at least one when >1).
        eval_every: Validation every N steps.
        checkpoint_every: Checkpoint every N steps (also at the end).
        init: Start from this teacher checkpoint (a generalist fine-tuned to a task).
        resume: Continue an interrupted run in `out`.
        render_workers: Processes that render demo frames (once per demo file and camera).
        seed: Seeds data order, augmentation and initialisation.
        threads: torch threads for training (None = torch's default, one per core). Use 1
            when other CPU-heavy work shares the machine: oversubscribed intra-op threads
            stall each other (measured here: 2.8 steps/s alone, 15 s/step under a load of 10).
        extra: Backend options, passed to the backend's `create` as keywords (`--option
            KEY=VALUE`; e.g. `patch`, `image_tokens_side` for `octo-small`, `pretrained`,
            `lora_rank` for `openvla`); checked against `create`'s signature up front.
        device: Torch device of the training: "auto" (CUDA when present and the backend
            supports it), "cpu" or "cuda[:N]".
    """

    demos: list[Path]
    out: Path
    kind: str = "octo-small"
    size: str = "small"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    chunk_size: int = 8
    image_size: int = 128
    camera: str = "render"
    use_proprio: bool = True
    val_fraction: float = 0.1
    eval_every: int = 250
    checkpoint_every: int = 1000
    init: Path | None = None
    resume: bool = False
    render_workers: int = 2
    seed: int = 0
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.demos = [Path(p) for p in self.demos]
        self.out = Path(self.out)
        self.init = Path(self.init) if self.init else None
        if not self.demos:
            raise InputError("--demos: give at least one ManiSkill trajectory .h5")
        from rpd.teachers.base import teacher_class

        made_by = teacher_class(self.kind).made_by
        if made_by is not None:
            raise InputError(f"--kind {self.kind}: rpd does not fine-tune this kind of teacher; "
                             f"make one with `{made_by}`")
        for name in ("steps", "batch_size", "chunk_size", "image_size", "eval_every",
                     "checkpoint_every", "render_workers"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be > 0")
        from rpd.data.devices import resolve_device

        resolve_device(self.device)
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if self.warmup_steps >= self.steps:
            self.warmup_steps = max(0, self.steps // 10)
        self._check_options(teacher_class(self.kind))

    def _check_options(self, cls: type) -> None:
        """Backend options (`extra`) the backend's `create` takes, checked before any work."""
        if not self.extra:
            return
        if self.init is not None:
            raise InputError(f"--option {', '.join(self.extra)}: --init {self.init} keeps its "
                             "checkpoint's architecture; drop --option or --init")
        create = getattr(cls, "create", None)
        known = _backend_keywords(create) if create is not None else set()
        unknown = sorted(set(self.extra) - known) if known is not None else []
        if unknown:
            takes = ", ".join(sorted(known)) if known else "none"
            raise InputError(f"--option {', '.join(unknown)}: --kind {self.kind} does not take "
                             f"it (its options: {takes})")
        arch_for = getattr(cls, "arch_for", None)
        if arch_for is not None:
            arch_for(self.size, self.image_size, self.extra)

    @property
    def camera_spec(self) -> CameraSpec:
        return CameraSpec(self.camera, self.image_size, self.image_size)


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 6) -> torch.Tensor:
    """Random shift crop (pad by replication, crop back) and colour jitter.

    Args:
        images: [B, H, W, 3] uint8.
    Returns:
        [B, H, W, 3] uint8, each image shifted by up to `pad` pixels and jittered in
        brightness/contrast/saturation by up to ±20 %.
    """
    b, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).clamp(max=h + 2 * pad - 1)
    cols = (dx[:, None] + torch.arange(w)[None]).clamp(max=w + 2 * pad - 1)
    x = x[torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None],
          rows[:, None, :, None], cols[:, None, None, :]]
    jitter = lambda: 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.4  # noqa: E731
    x = x * jitter()  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * jitter() + mean  # contrast
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * jitter() + gray  # saturation
    return x.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _split_episodes(data: TeacherData, val_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of training and validation episodes (whole episodes held out)."""
    episodes = np.unique(data.episode)
    rng = np.random.default_rng(seed)
    n_val = round(len(episodes) * val_fraction)
    if val_fraction > 0 and len(episodes) > 1:
        n_val = max(1, n_val)
    n_val = min(n_val, len(episodes) - 1)
    val_eps = rng.choice(episodes, size=n_val, replace=False) if n_val else np.array([], int)
    is_val = np.isin(data.episode, val_eps)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _check_demos(cfg: FinetuneConfig) -> dict[str, str]:
    """Validate demo files; returns env id -> instruction for the tasks present."""
    tasks, modes = {}, set()
    for path in cfg.demos:
        traj = open_trajectory(path, option="--demos")
        info = summarize(traj)
        if info.episodes == 0 or info.success_rate == 0:
            raise InputError(
                f"--demos {path}: no successful episodes; a teacher learns from successes: "
                "generate demos with `rpd demos generate`"
            )
        if traj.env_id not in TASKS:
            raise InputError(
                f"--demos {path}: task {traj.env_id} has no instruction in rpd's task registry "
                f"(known: {', '.join(TASKS)}); add it to rpd.data.tasks.TASKS"
            )
        modes.add(traj.control_mode)
        tasks[traj.env_id] = TASKS[traj.env_id].instruction
    if len(modes) > 1:
        raise InputError(f"--demos: files mix control modes {sorted(modes)}; convert them with "
                         "`rpd demos import` to one mode")
    mode = modes.pop()
    if mode != "pd_ee_delta_pose":
        raise InputError(
            f"--demos: control mode is {mode}, teachers act in pd_ee_delta_pose: convert with "
            "`rpd demos import FILE --out DIR`"
        )
    return tasks


def parse_backend_options(options: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--option KEY=VALUE` strings -> keywords for a backend's `create`.

    Values read as int, then float, then true/false, else stay text ("4" -> 4, "0.1" -> 0.1,
    "true" -> True, "ckpt/dir" -> "ckpt/dir").
    """
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--option {option!r}: write KEY=VALUE, e.g. --option patch=4")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        if isinstance(value, str) and text.lower() in ("true", "false"):
            value = text.lower() == "true"
        parsed[key] = value
    return parsed


def _backend_keywords(create: Callable[..., Any]) -> set[str] | None:
    """The keyword options `create` names after (spec, size, action_stats); None = any."""
    params = list(inspect.signature(create).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params[3:] if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _build_teacher(cfg: FinetuneConfig, tasks: dict[str, str], stats: dict[str, list[float]],
                   action_dim: int) -> Teacher:
    from rpd.teachers.base import teacher_class

    cls = teacher_class(cfg.kind)
    if cfg.init is not None:
        base = load_teacher(cfg.init, option="--init")
        spec = TeacherSpec(camera=base.spec.camera, control_mode=base.spec.control_mode,
                           action_dim=base.spec.action_dim, chunk_size=base.spec.chunk_size,
                           proprio_dim=base.spec.proprio_dim, tasks={**base.spec.tasks, **tasks})
        if spec.camera != cfg.camera_spec:
            raise InputError(
                f"--init {cfg.init}: trained on camera {base.spec.camera.name} "
                f"{base.spec.camera.width}px; pass --camera/--image-size to match it"
            )
        teacher = type(base)(spec, base.config, stats)
        teacher.net.load_state_dict(base.net.state_dict())  # type: ignore[attr-defined]
        return teacher
    spec = TeacherSpec(camera=cfg.camera_spec, control_mode="pd_ee_delta_pose",
                       action_dim=action_dim, chunk_size=cfg.chunk_size,
                       proprio_dim=PROPRIO_DIM if cfg.use_proprio else 0, tasks=tasks)
    create = getattr(cls, "create", None)
    if create is None:
        raise InputError(f"--kind {cfg.kind}: this backend cannot be trained by rpd here")
    return create(spec, cfg.size, stats, **cfg.extra)


def _chunk_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over valid chunk slots. pred/target [B, C, A], mask [B, C] bool."""
    err = (pred - target).abs().mean(dim=-1)
    m = mask.float()
    return (err * m).sum() / m.sum().clamp(min=1.0)


def training_loss(teacher: Teacher, images: torch.Tensor, instructions: list[str],
                  proprio: torch.Tensor | None, targets: torch.Tensor,
                  mask: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The loss one training step minimises, and whether it is the chunk L1.

    A backend with its own objective (OpenVLA's token cross-entropy, π0's flow matching)
    defines `training_loss(images, instructions, proprio, targets, mask) -> scalar`; every
    other backend is trained with the L1 of `forward_normalized` against the targets.
    images [B, H, W, 3] uint8, targets [B, C, A] normalised, mask [B, C] bool.
    """
    own = getattr(teacher, "training_loss", None)
    if own is not None:
        return own(images, instructions, proprio, targets, mask), False
    pred = teacher.forward_normalized(images, instructions, proprio)  # type: ignore[attr-defined]
    return _chunk_l1(pred, targets, mask), True


def finetune_teacher(cfg: FinetuneConfig,
                     progress: Callable[[int, dict[str, float]], None] | None = None,
                     render_progress: Callable[[int], None] | None = None) -> Path:
    """Run the fine-tuning stage; returns the checkpoint directory.

    `progress(steps_done, metrics)` is called after each optimiser step.
    """
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = cfg.out
    if (out / TEACHER_JSON).exists() and not cfg.resume and not (out / TRAIN_STATE).exists():
        raise InputError(f"--out {out}: already holds a finished teacher; choose another --out")
    if cfg.resume and not (out / TRAIN_STATE).exists():
        raise InputError(f"--resume: {out} has no {TRAIN_STATE} to resume from; drop --resume")
    if not cfg.resume and (out / TRAIN_STATE).exists():
        raise InputError(f"--out {out}: holds an unfinished run; pass --resume to continue it "
                         "or choose another --out")
    tasks = _check_demos(cfg)

    paths = [render_teacher_data(p, cfg.camera_spec, cfg.render_workers, render_progress)
             for p in cfg.demos]
    data = load_teacher_data(paths)
    train_rows, val_rows = _split_episodes(data, cfg.val_fraction, cfg.seed)
    stats = action_stats(data.actions[train_rows])
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    teacher = place_teacher(_build_teacher(cfg, tasks, stats, data.actions.shape[1]), cfg.device)
    device = teacher.device
    chunks, chunk_mask = teacher.spec.chunk_size, None
    targets, chunk_mask = data.chunk_targets(chunks)
    targets = normalize(targets, q01, q99)
    instructions = np.array([tasks[e] for e in data.env_ids], dtype=object)

    net: torch.nn.Module = teacher.net  # type: ignore[attr-defined]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _TrainState(gen=torch.Generator().manual_seed(cfg.seed))
    if cfg.resume:
        run.load(out / TRAIN_STATE, net, opt)
        logger.info("resuming at step %d", run.step)
    out.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    teacher.training = dict(config=json.loads(json.dumps(asdict(cfg), default=str)),
                            demos=[str(p) for p in cfg.demos], train_frames=len(train_rows),
                            val_frames=len(val_rows),
                            train_episodes=len(np.unique(data.episode[train_rows])),
                            val_episodes=len(np.unique(data.episode[val_rows])),
                            parameters=sum(p.numel() for p in net.parameters()))
    batches = _Batches(data, targets, chunk_mask, instructions, teacher.spec.proprio_dim > 0,
                       device)
    rng = np.random.default_rng(cfg.seed + run.step)
    net.train()
    t0 = time.time()
    while run.step < cfg.steps:
        lr = lr_at(run.step, cfg.lr, cfg.warmup_steps, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = rng.choice(train_rows, size=min(cfg.batch_size, len(train_rows)), replace=False)
        images, proprio, tgt, mask = batches.tensors(rows, augment_with=run.gen)
        loss, is_l1 = training_loss(teacher, images, list(instructions[rows]), proprio, tgt, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0))
        opt.step()
        run.step += 1
        metrics = {"train/loss": loss.item(), "train/lr": lr, "train/grad_norm": grad_norm}
        if is_l1:
            metrics["train/l1"] = metrics["train/loss"]
        if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
            metrics.update(_validate(teacher, net, batches, val_rows))
            metrics["time/elapsed_s"] = time.time() - t0
            logger.info("step %d: %s", run.step, {k: round(v, 4) for k, v in metrics.items()})
            run.history.append({k: round(v, 6) for k, v in metrics.items()} | {"step": run.step})
        for k, v in metrics.items():
            writer.add_scalar(k, v, run.step)
        if progress is not None:
            progress(run.step, metrics)
        if run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
            run.save(out, teacher, net, opt, final=False)
    writer.close()
    teacher.training["history"] = run.history
    teacher.training["wall_time_s"] = round(time.time() - t0, 1)
    run.save(out, teacher, net, opt, final=True)
    (out / TRAIN_STATE).unlink(missing_ok=True)
    (out / "history.json").write_text(json.dumps(run.history, indent=1))
    return out


@dataclass
class _TrainState:
    """What a resumed fine-tuning continues from: optimiser step, validation history and the
    augmentation generator (with the weights and optimiser, in OUT/train_state.pt)."""

    gen: torch.Generator
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def load(self, path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        state = torch.load(path, weights_only=False, map_location="cpu")
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as err:  # parameter names or shapes differ
            raise InputError(f"--resume: {path.parent} was trained with another architecture; "
                             "pass the run's own --kind, --size, --option, --chunk-size, "
                             "--image-size and --no-proprio") from err
        opt.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        self.gen.set_state(state["generator"])

    def save(self, out: Path, teacher: Teacher, net: torch.nn.Module,
             opt: torch.optim.Optimizer, final: bool) -> None:
        """The teacher checkpoint (OUT, or OUT/checkpoints/step_N) and the training state."""
        teacher.metrics = dict(self.history[-1]) if self.history else dict(step=self.step)
        teacher.save(out if final else out / "checkpoints" / f"step_{self.step:06d}")
        torch.save(dict(model=net.state_dict(), optimizer=opt.state_dict(), step=self.step,
                        history=self.history, generator=self.gen.get_state()),
                   out / f".{TRAIN_STATE}")
        (out / f".{TRAIN_STATE}").replace(out / TRAIN_STATE)


@dataclass
class _Batches:
    """Training tensors of chosen frames, on the training device.

    Attributes:
        data: The rendered demo frames, proprio and actions.
        targets: Normalised action chunks [N, C, A]; chunk_mask [N, C] marks real steps.
        instructions: [N] instruction per frame.
        use_proprio: Whether the teacher takes proprio.
        device: Torch device of the training.
    """

    data: Any
    targets: np.ndarray
    chunk_mask: np.ndarray
    instructions: np.ndarray
    use_proprio: bool
    device: str

    def tensors(self, rows: np.ndarray, augment_with: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(images, proprio or None, targets, mask) of `rows`; images augmented (random
        shifts, on the CPU with `augment_with`) for training, as stored for validation."""
        images = torch.as_tensor(self.data.frames[rows])
        if augment_with is not None:
            images = augment(images, augment_with)
        proprio = (torch.as_tensor(self.data.proprio[rows]).to(self.device)
                   if self.use_proprio else None)
        return (images.to(self.device), proprio,
                torch.as_tensor(self.targets[rows], device=self.device),
                torch.as_tensor(self.chunk_mask[rows], device=self.device))


def _validate(teacher: Teacher, net: torch.nn.Module, batches: _Batches,
              val_rows: np.ndarray) -> dict[str, float]:
    """Validation L1 over the held-out episodes' frames: the chunk, and its first action."""
    if len(val_rows) == 0:
        return {}
    net.eval()
    errs, first = [], []
    with torch.no_grad():
        for i in range(0, len(val_rows), 256):
            rows = val_rows[i:i + 256]
            images, proprio, tgt, mask = batches.tensors(rows)
            pred = teacher.forward_normalized(images, list(batches.instructions[rows]),  # type: ignore[attr-defined]
                                              proprio)
            errs.append(float(_chunk_l1(pred, tgt, mask)) * len(rows))
            first.append((pred[:, 0] - tgt[:, 0]).abs().mean(dim=1).cpu().numpy())
    net.train()
    return {"val/l1": sum(errs) / len(val_rows),
            "val/l1_first_action": float(np.concatenate(first).mean())}
