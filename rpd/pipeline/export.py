"""Export: a trained student as a self-contained ONNX or TorchScript policy.

The exported graph is the student's deterministic actor, everything `rpd eval --student` does
between the env's observation and `env.step` included: the camera frame's HWC→CHW transpose and
/255 (SB3's `predict`), the running observation normalisation (`NormalizedFlatten`, whose
statistics are copied in as constants), the Gaussian's mean, and SB3's clip to the action
bounds. A deployer feeds the env's observation and gets the action in the env's units; no rpd,
SB3 or ManiSkill is needed. The critic is left out (an asymmetric critic's "state" input with
it: the actor never reads it).

Beside `FILE` goes `FILE.json` (`EXPORT_SCHEMA_VERSION`): the inputs' names, shapes and
dtypes, the action bounds, control mode, task, the run and checkpoint it came from, and the
largest difference to the SB3 policy on observations recorded in the task's env at export.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.seeds import EVALUATION
from rpd.data.vec_envs import EnvConfig, make_env
from rpd.data.views import PIXEL_OBS_MODES, CameraSpec
from rpd.errors import InputError, RpdError

logger = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
"""`--format` -> the file suffix its output must have (`rpd eval --policy` goes by it)."""
EXPORT_SCHEMA_VERSION = 1
"""Version of the `FILE.json` layout."""
ACTION = "action"
"""Name of the exported graph's output: [batch, action_dim] float32, in the env's units."""
MAX_EXPORT_DIFF = 1e-4
"""An export whose actions differ from the SB3 policy's by more than this is refused: float32
reorderings (ONNX Runtime's kernels, TorchScript's) stay below 1e-5; more means a wrong graph."""
ONNX_OPSET = 17


def meta_path(policy: str | Path) -> Path:
    """`FILE.json`, the description written beside an exported policy `FILE`."""
    policy = Path(policy)
    return policy.with_name(policy.name + ".json")


@dataclass
class ExportConfig:
    """What `rpd export` writes.

    Attributes:
        student: A run directory written by `rpd train`.
        format: "onnx" (runs with onnxruntime, any language) or "torchscript" (torch.jit).
        out: The file to write: FILE.onnx for onnx, FILE.pt for torchscript; FILE.json beside.
        checkpoint: The run's "final" policy (student.zip), its "best" evaluation's
            (checkpoints/best.zip) or its "latest" checkpoint.
        force: Replace an existing `out` (and its `.json`).
        verify_steps: Observations recorded by rolling the student out in its task's env, on
            which the exported policy must act as the SB3 policy does.
    """

    student: Path
    format: str
    out: Path
    checkpoint: str = "final"
    force: bool = False
    verify_steps: int = 48

    def __post_init__(self) -> None:
        self.student, self.out = Path(self.student), Path(self.out)
        if self.format not in FORMATS:
            raise InputError(f"--format {self.format!r}: use one of {', '.join(FORMATS)}")
        suffix = FORMATS[self.format]
        if self.out.suffix != suffix:
            raise InputError(f"--out {self.out}: --format {self.format} writes a {suffix} "
                             f"file; name it {self.out.with_suffix(suffix).name}")
        if self.out.is_dir():
            raise InputError(f"--out {self.out}: is a directory; give a file name")
        if not self.force:
            for path in (self.out, meta_path(self.out)):
                if path.exists():
                    raise InputError(f"--out {self.out}: {path} exists; pass --force to "
                                     "replace it, or choose another --out")
        if self.verify_steps <= 0:
            raise InputError(f"--verify-steps {self.verify_steps}: must be a positive number")


def actor_graph(policy: Any, input_names: list[str]) -> Any:
    """The deterministic actor of an SB3 actor-critic `policy` as a plain torch module.

    Its forward takes the observation as the env gives it, one tensor per name in
    `input_names`, batch first: "state" [B, D] float32 (a state student), or "rgb"
    [B, H, W, 3] uint8 and, if the actor reads it, "proprio" [B, P] float32 (a pixel student).
    It returns [B, A] float32: the Gaussian's mean clipped to the action bounds, as
    `policy.predict(obs, deterministic=True)` acts. The modules are copies (on the CPU, in eval
    mode), so the student is left as it was.
    """
    import torch as th
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from torch import nn

    if not isinstance(policy.action_dist, DiagGaussianDistribution) or policy.squash_output:
        raise InputError(f"the student's policy acts through {type(policy.action_dist).__name__}"
                         f"{' with squashed output' if policy.squash_output else ''}; rpd "
                         "exports Gaussian (non-gSDE) PPO students only")

    class ActorGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = copy.deepcopy(policy.pi_features_extractor).cpu()
            self.latent = copy.deepcopy(policy.mlp_extractor.policy_net).cpu()
            self.mean = copy.deepcopy(policy.action_net).cpu()
            self.names = list(input_names)
            self.pixels = "rgb" in self.names
            self.scale_images = bool(policy.normalize_images)
            space = policy.action_space
            self.register_buffer("low", th.as_tensor(space.low, dtype=th.float32))
            self.register_buffer("high", th.as_tensor(space.high, dtype=th.float32))

        def forward(self, *obs: th.Tensor) -> th.Tensor:
            if self.pixels:
                x = dict(zip(self.names, obs, strict=True))
                rgb = x["rgb"].permute(0, 3, 1, 2).float()  # SB3's VecTransposeImage
                x = {k: v.float() for k, v in x.items()}
                x["rgb"] = rgb / 255.0 if self.scale_images else rgb
                features = self.features(x)
            else:
                features = self.features(obs[0].float())
            mean = self.mean(self.latent(features))
            return th.minimum(th.maximum(mean, self.low), self.high)  # SB3's np.clip

    return ActorGraph().eval()


def input_specs(model: Any, env_space: Any) -> list[dict[str, Any]]:
    """What the exported actor reads: name, shape (batch first, "batch"), dtype, meaning.

    Args:
        model: The SB3 student.
        env_space: The observation space of its env (one sub-env's, `make_env`'s batched env
            has a leading 1 on a state observation).
    """
    if not hasattr(model.policy, "actor_keys"):
        shape = list(env_space.shape[-1:])
        return [dict(name="state", shape=["batch", *shape], dtype="float32",
                     what="the task's flat state observation (obs_mode='state'), raw: the "
                          "policy normalises it")]
    what = dict(rgb="the camera frame as rendered, RGB, 0-255 (see camera)",
                proprio="the robot's joint positions then joint velocities (rad, rad/s), raw")
    return [dict(name=k, shape=["batch", *env_space[k].shape],
                 dtype=np.dtype(env_space[k].dtype).name, what=what[k])
            for k in model.policy.actor_keys]


def export_student(cfg: ExportConfig) -> dict[str, Any]:
    """Write the student of `cfg.student` as `cfg.out` and `cfg.out`.json, checked first.

    The check rolls the student out in its task's env for `cfg.verify_steps` steps (from the
    seed plan's first evaluation seed), then runs the written file (onnxruntime or torch.jit)
    on those observations, as one batch and one by one, against SB3's
    `predict(deterministic=True)`.

    Returns:
        The contents of `cfg.out`.json (its "verified" entry holds the largest difference).

    Raises:
        InputError: a bad config (see `ExportConfig`), or not a student run (as
            `rpd.pipeline.evaluate.resolve_student`); nothing is written.
        RpdError: the exported policy acts differently from the student by more than
            `MAX_EXPORT_DIFF`; nothing is kept.
    """
    import torch as th

    from rpd import __version__
    from rpd.data.devices import limit_cpu_threads
    from rpd.data.schema import write_json_atomic
    from rpd.pipeline.evaluate import REMAKE_STUDENT, load_model, resolve_student

    limit_cpu_threads()
    zip_path, run_meta = resolve_student(cfg.student, checkpoint=cfg.checkpoint)
    model = load_model(zip_path, "--student", REMAKE_STUDENT, device="cpu")
    env_meta = dict(run_meta["env"])
    observations, env_space = record_observations(model, env_meta, cfg.verify_steps)
    inputs = input_specs(model, env_space)
    names = [i["name"] for i in inputs]
    graph = actor_graph(model.policy, names)
    example = tuple(th.as_tensor(_column(observations, name)[:1]) for name in names)

    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out.with_name(f".{cfg.out.name}.tmp")
    try:
        _write(graph, example, names, cfg.format, tmp)
        space = model.action_space
        state_space = env_space["state"] if isinstance(observations, dict) else env_space
        meta = dict(
            schema_version=EXPORT_SCHEMA_VERSION, format=cfg.format, file=cfg.out.name,
            inputs=inputs, output=dict(name=ACTION, shape=["batch", int(space.shape[0])],
                                       dtype="float32",
                                       what="the action in the env's units, clipped to its "
                                            "bounds"),
            action_low=space.low.astype(float).tolist(),
            action_high=space.high.astype(float).tolist(),
            control_mode=env_meta["control_mode"], task=env_meta["env_id"],
            obs_mode=env_meta["obs_mode"], camera=env_meta.get("camera"),
            state_dim=int(state_space.shape[-1]), env=env_meta,
            run=str(cfg.student.resolve()), checkpoint=cfg.checkpoint,
            step=int(model.num_timesteps), rpd_version=__version__)
        expected, _ = model.predict(observations, deterministic=True)
        exported = ExportedPolicy(tmp, meta)
        batch, _ = exported.predict(observations)
        single = np.concatenate([exported.predict(_row(observations, i))[0]
                                 for i in range(len(expected))])
        diff = float(max(np.abs(batch - expected).max(), np.abs(single - expected).max()))
        meta["verified"] = dict(observations=len(expected), max_abs_diff=diff,
                                on=f"{env_meta['env_id']} rollout of the student from seed "
                                   f"{EVALUATION.start:,}")
        if not diff <= MAX_EXPORT_DIFF:
            raise RpdError(f"--format {cfg.format}: the exported policy's actions differ from "
                           f"the student's by up to {diff:.3g} (> {MAX_EXPORT_DIFF:g}) on "
                           "recorded observations; nothing was written")
        tmp.replace(cfg.out)
        write_json_atomic(meta_path(cfg.out), meta)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported %s (%s, step %d) to %s: max |Δaction| %.2g on %d observations",
                cfg.student, cfg.checkpoint, meta["step"], cfg.out, diff, len(expected))
    return meta


def _write(graph: Any, example: tuple[Any, ...], names: list[str], fmt: str, path: Path) -> None:
    """Trace `graph` on `example` and write it as `fmt` to `path`."""
    import inspect

    import torch as th

    with _quiet_deprecations(), th.no_grad():
        if fmt == "torchscript":
            traced = th.jit.trace(graph, example)
            th.jit.save(traced, str(path))
            return
        kwargs: dict[str, Any] = {}
        if "dynamo" in inspect.signature(th.onnx.export).parameters:
            # The TorchScript-based exporter needs `onnx` alone (the dynamo one adds
            # onnxscript); this graph is a fixed feed-forward pass, which tracing captures.
            kwargs["dynamo"] = False
        th.onnx.export(graph, example, str(path), input_names=names, output_names=[ACTION],
                       dynamic_axes={n: {0: "batch"} for n in (*names, ACTION)},
                       opset_version=ONNX_OPSET, **kwargs)


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """torch marks torch.jit and its TorchScript-based ONNX exporter deprecated; both still
    write the files deployers load (torch.jit.load in C++/Python, any ONNX runtime)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def record_observations(model: Any, env_meta: dict[str, Any], steps: int
                        ) -> tuple[np.ndarray | dict[str, np.ndarray], Any]:
    """Observations the student meets acting in its task's env (its mean actions, episodes
    from the seed plan's first evaluation seed on, as `rpd eval --student` runs them).

    Returns:
        (observations: [steps, ...] array, or a dict of them for a pixel student, as `_episode`
        hands `predict`; the env's observation space)
    """
    from rpd.pipeline.evaluate import run_episodes_student

    env_cfg = dict(env_meta, max_episode_steps=steps)
    if env_cfg.get("camera") is not None:
        env_cfg["camera"] = CameraSpec(**env_cfg["camera"])
    recorder = _Recorder(model)
    env = make_env(EnvConfig(**env_cfg))
    try:
        seed = EVALUATION.start
        while len(recorder.seen) < steps:
            run_episodes_student(recorder, env, 1, seed)
            seed += 1
        space = env.observation_space
    finally:
        env.close()
    seen = recorder.seen[:steps]
    if isinstance(seen[0], dict):
        return {k: np.concatenate([o[k] for o in seen]) for k in seen[0]}, space
    return np.concatenate(seen), space


class _Recorder:
    """Acts as `model` does and keeps every observation it was asked about."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seen: list[Any] = []

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        self.seen.append({k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict)
                         else np.array(obs))
        return self.model.predict(obs, deterministic=deterministic)


def _column(observations: Any, name: str) -> np.ndarray:
    return observations[name] if isinstance(observations, dict) else observations


def _row(observations: Any, i: int) -> Any:
    if isinstance(observations, dict):
        return {k: v[i:i + 1] for k, v in observations.items()}
    return observations[i:i + 1]


class ExportedPolicy:
    """An exported student, run with onnxruntime (.onnx) or torch.jit (.pt) on the CPU.

    `predict` has SB3's signature, so `rpd.pipeline.evaluate` runs it in the episodes it runs
    a student's .zip in.

    Args:
        path: The exported file.
        meta: Its description (`FILE.json`).
        threads: CPU threads of the runtime (1 beside a simulator, see `limit_cpu_threads`).
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], threads: int = 1) -> None:
        from gymnasium import spaces

        self.path, self.meta = Path(path), meta
        self.inputs: list[dict[str, Any]] = meta["inputs"]
        self.format: str = meta["format"]
        state = spaces.Box(-np.inf, np.inf, (int(meta["state_dim"]),), np.float32)
        # what `rpd eval` checks against the env's observations (their flat state part)
        self.observation_space = (spaces.Dict({"state": state})
                                  if meta["obs_mode"] in PIXEL_OBS_MODES else state)
        if self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(self.path), options,
                                                 providers=["CPUExecutionProvider"])
        else:
            import torch as th

            with _quiet_deprecations():
                self._module = th.jit.load(str(self.path), map_location="cpu").eval()

    @classmethod
    def load(cls, path: str | Path, option: str = "--policy", threads: int = 1
             ) -> ExportedPolicy:
        """An exported policy and its `FILE.json`.

        Raises:
            InputError: not an exported policy (no such file, no or unreadable `FILE.json`, a
                suffix other than its format's, a file its runtime cannot read).
        """
        path = Path(path)
        fix = "write it with `rpd export`"
        described = meta_path(path)
        if not path.is_file():
            raise InputError(f"{option} {path}: no such file; {fix}")
        try:
            meta = json.loads(described.read_text())
        except FileNotFoundError:
            raise InputError(f"{option} {path}: no {described.name} beside it; {fix}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            raise InputError(f"{option} {path}: {described.name} is unreadable "
                             f"({type(e).__name__}); {fix}") from None
        if (not isinstance(meta, dict) or meta.get("schema_version") != EXPORT_SCHEMA_VERSION
                or not isinstance(meta.get("format"), str)
                or not isinstance(meta.get("env"), dict)
                or not isinstance(meta.get("step"), int)
                or not isinstance(meta.get("checkpoint"), str)):
            raise InputError(f"{option} {path}: {described.name} is not an export description "
                             f"of schema version {EXPORT_SCHEMA_VERSION}; {fix}")
        if FORMATS.get(meta.get("format", "")) != path.suffix:
            raise InputError(f"{option} {path}: {described.name} says format "
                             f"{meta.get('format')!r}, which is written to "
                             f"{FORMATS.get(meta.get('format', ''), 'no')} files; {fix}")
        try:
            with _quiet_deprecations():
                return cls(path, meta, threads)
        except Exception as e:  # each runtime raises its own types for a file it cannot read
            raise InputError(f"{option} {path}: not a readable {meta['format']} policy "
                             f"({type(e).__name__}: {str(e)[:80]}); {fix}") from None

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Actions [B, A] float32 for observations as the env gives them (an array, or a dict
        holding at least the inputs' keys); [A] for one unbatched observation.

        `deterministic` is accepted for SB3's signature: an exported policy always acts with
        its mean.
        """
        arrays = []
        for spec in self.inputs:
            x = np.asarray(obs[spec["name"]] if isinstance(obs, dict) else obs,
                           dtype=spec["dtype"])
            arrays.append(x)
        unbatched = arrays[0].ndim == len(self.inputs[0]["shape"]) - 1
        if unbatched:
            arrays = [x[None] for x in arrays]
        if self.format == "onnx":
            action = self._session.run(
                [ACTION], {s["name"]: x for s, x in zip(self.inputs, arrays, strict=True)})[0]
        else:
            import torch as th

            with th.no_grad():
                action = self._module(*(th.from_numpy(np.ascontiguousarray(x))
                                        for x in arrays)).numpy()
        return (action[0] if unbatched else action), None


def evaluate_policy(policy: str | Path, env_id: str | None = None, episodes: int = 50,
                    seed: int = EVALUATION.start, horizon: int | None = None,
                    video_dir: Path | None = None, sim_backend: str = "auto",
                    workers: int = 1) -> dict[str, Any]:
    """Score an exported policy in the episodes `rpd eval --student` runs for its student
    (same seeds, horizon and env; see `rpd.pipeline.evaluate.evaluate_student` for the
    arguments and the result, which adds "policy" and "format").

    Raises:
        InputError: not an exported policy (`ExportedPolicy.load`), or bad options.
    """
    from rpd.pipeline.evaluate import run_evaluation

    policy = Path(policy)
    meta = ExportedPolicy.load(policy).meta
    result = run_evaluation(policy, meta["env"], step=int(meta["step"]),
                            checkpoint=meta["checkpoint"], env_id=env_id, episodes=episodes,
                            seed=seed, horizon=horizon, stochastic=False, video_dir=video_dir,
                            sim_backend=sim_backend, device="cpu", workers=workers)
    return {**result, "policy": os.fspath(policy), "format": meta["format"]}
