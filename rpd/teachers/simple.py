"""`cnn-tiny`: a small convolutional image(+proprio) -> action-chunk policy.

The cheapest real teacher backend: a 3-layer CNN on the teacher camera image, resized to
`config["input_size"]`, optionally concatenated with proprioception, and a linear head to
`chunk_size` x `action_dim` actions in [-1, 1], mapped to env units with the q01/q99 action
statistics (OpenVLA's convention; identity when there are none). Weights are initialised
deterministically from `config["seed"]`, so a fresh teacher is reproducible, and it can be
trained like any torch module (`teacher.model`). It ignores the instruction text. Used by the
tests and benchmarks of the pipeline stages, and as a CPU baseline teacher (the design notes
measured a similar BC CNN at 57 % PushCube success at 50 steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher

DEFAULT_CONFIG: dict[str, Any] = dict(input_size=64, channels=[16, 32, 32], hidden=128, seed=0)
"""Config keys: input_size (pixels, square), channels (per conv layer), hidden (MLP width),
seed (weight initialisation)."""


def _build_model(spec: TeacherSpec, config: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    class TinyCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            c_in = 3
            for c in config["channels"]:
                layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
                c_in = c
            self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
            self.head = nn.Sequential(
                nn.Linear(c_in * 16 + spec.proprio_dim, config["hidden"]), nn.ReLU(),
                nn.Linear(config["hidden"], spec.chunk_size * spec.action_dim), nn.Tanh())

        def forward(self, images: torch.Tensor, proprio: torch.Tensor | None) -> torch.Tensor:
            """images [B, 3, s, s] float in [0, 1]; proprio [B, P] -> [B, chunk, A] in [-1, 1]."""
            x = self.conv(images)
            if proprio is not None:
                x = torch.cat([x, proprio], dim=1)
            return self.head(x).view(len(x), spec.chunk_size, spec.action_dim)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config["seed"]))
        model = TinyCNN()
    return model.eval()


@register_teacher("cnn-tiny")
class TinyCNNTeacher(Teacher):
    """A small CNN teacher (see module docstring). `model` is the torch module."""

    device_support = True

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None) -> None:
        config = {**DEFAULT_CONFIG, **config}
        super().__init__(spec, config, action_stats)
        self.model = _build_model(spec, config)

    @classmethod
    def create(cls, spec: TeacherSpec, size: str = "small",
               action_stats: dict[str, list[float]] | None = None) -> TinyCNNTeacher:
        """A freshly initialised teacher for `rpd finetune-teacher` (one size: the default)."""
        from rpd.errors import InputError

        if size not in ("tiny", "small"):
            raise InputError(f"--size {size!r}: use 'tiny' or 'small'")
        return cls(spec, {}, action_stats)

    @property
    def net(self) -> Any:
        """The torch module (the training stage's name for it)."""
        return self.model

    def _pixels(self, images: Any) -> Any:
        """uint8 [B, H, W, 3] -> float [B, 3, s, s] in [0, 1] at the network's input size."""
        import torch
        import torch.nn.functional as F

        size = int(self.config["input_size"])
        x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def forward_normalized(self, images: Any, instructions: list[str],
                           proprio: Any = None) -> Any:
        """Training forward pass: normalised chunks [B, C, A] with gradient. The CNN ignores
        the instruction (one task per teacher)."""
        return self.model(self._pixels(images), proprio.float() if proprio is not None else None)

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        """Action chunks [B, chunk_size, A] float32 in env units."""
        import torch

        self.model.eval()
        with torch.no_grad():
            x = self._pixels(np.ascontiguousarray(batch.images)).to(self.device)
            proprio = None
            if self.spec.proprio_dim:
                if batch.proprio is None:
                    raise ValueError(f"this teacher needs proprio [B, {self.spec.proprio_dim}]")
                proprio = torch.as_tensor(np.asarray(batch.proprio, np.float32),
                                          device=self.device)
            out = self.model(x, proprio).cpu().numpy()
        return self._unnormalize(out).astype(np.float32)

    def _unnormalize(self, a: np.ndarray) -> np.ndarray:
        """[-1, 1] -> env units with q01/q99: q01 + (a + 1) / 2 * (q99 - q01)."""
        if "q01" not in self.action_stats or "q99" not in self.action_stats:
            return a
        lo = np.asarray(self.action_stats["q01"], np.float32)
        hi = np.asarray(self.action_stats["q99"], np.float32)
        return lo + (a + 1.0) * 0.5 * (hi - lo)

    def _save_weights(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  str(path))

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> TinyCNNTeacher:
        from safetensors.torch import load_file

        teacher = cls(TeacherSpec.from_dict(meta["spec"]), meta["config"],
                      meta.get("action_stats"))
        teacher.model.load_state_dict(load_file(str(weights)))
        return teacher
