"""A compact Octo-style VLA in PyTorch: the default teacher backend (kind "octo-small").

Like Octo (Octo Model Team, 2024): image tokens from a small conv stem, instruction tokens,
an optional proprioception token and learned readout tokens go through one transformer; the
readouts see everything, nothing attends to the readouts, and an MLP head on the readouts
predicts a chunk of future actions, normalised to [-1, 1] with q01/q99 statistics.
Differences, for a CPU: a locally built hashing tokenizer with learned word embeddings
instead of a frozen T5, and an L1 chunk head instead of diffusion.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher
from rpd.teachers.normalize import unnormalize
from rpd.teachers.tokenizer import tokenize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OctoConfig:
    """Architecture of the compact VLA.

    Attributes:
        d_model: Token width.
        depth: Transformer layers.
        heads: Attention heads.
        stem_channels: Conv stem widths: a patchify conv (kernel = stride = `patch`) then
            3x3 stride-2 convs.
        patch: Patch size of the first conv.
        image_tokens_side: Image tokens per side after the stem (adaptive pooling).
        vocab_size: Hashing-tokenizer buckets.
        max_text_len: Instruction tokens (incl. end mark).
        readouts: Learned readout tokens.
        dropout: Dropout in the transformer.
    """

    d_model: int = 256
    depth: int = 5
    heads: int = 8
    stem_channels: tuple[int, ...] = (64, 128)
    patch: int = 8
    image_tokens_side: int = 6
    vocab_size: int = 4096
    max_text_len: int = 16
    readouts: int = 2
    dropout: float = 0.0

    @classmethod
    def preset(cls, size: str) -> OctoConfig:
        """`tiny` (< 1M parameters, for tests) or `small` (5.3M)."""
        if size == "tiny":
            return cls(d_model=64, depth=2, heads=4, stem_channels=(16, 32),
                       image_tokens_side=4, vocab_size=512, readouts=1)
        if size == "small":
            return cls()
        raise InputError(f"--size {size!r}: use 'tiny' or 'small'")


class OctoNet(nn.Module):
    """The network: (image uint8 [B,H,W,3], tokens [B,L], proprio [B,P]) -> [B, C, A] in [-1,1]."""

    def __init__(self, cfg: OctoConfig, action_dim: int, chunk_size: int, proprio_dim: int):
        super().__init__()
        self.cfg, self.action_dim, self.chunk_size = cfg, action_dim, chunk_size
        d = cfg.d_model
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(cfg.stem_channels):
            k, s = (cfg.patch, cfg.patch) if i == 0 else (3, 2)
            layers += [nn.Conv2d(c_in, c, k, s, padding=0 if i == 0 else 1),
                       nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(cfg.image_tokens_side), nn.Conv2d(c_in, d, 1)]
        self.stem = nn.Sequential(*layers)
        n_img = cfg.image_tokens_side**2
        self.img_pos = nn.Parameter(torch.randn(1, n_img, d) * 0.02)
        self.word_emb = nn.Embedding(cfg.vocab_size, d, padding_idx=0)
        self.text_pos = nn.Parameter(torch.randn(1, cfg.max_text_len, d) * 0.02)
        self.proprio = nn.Linear(proprio_dim, d) if proprio_dim > 0 else None
        self.readout = nn.Parameter(torch.randn(1, cfg.readouts, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(),
                                  nn.Linear(2 * d, chunk_size * action_dim))
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                proprio: torch.Tensor | None = None) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.pixel_mean) / self.pixel_std
        img = self.stem(x).flatten(2).transpose(1, 2) + self.img_pos  # [B, N, d]
        txt = self.word_emb(tokens) + self.text_pos[:, : tokens.shape[1]]
        parts = [img, txt]
        pad = [torch.zeros(img.shape[:2], dtype=torch.bool, device=img.device), tokens == 0]
        if self.proprio is not None and proprio is not None:
            parts.append(self.proprio(proprio.float()).unsqueeze(1))
            pad.append(torch.zeros(img.shape[0], 1, dtype=torch.bool, device=img.device))
        n_obs = sum(p.shape[1] for p in parts)
        parts.append(self.readout.expand(img.shape[0], -1, -1))
        pad.append(torch.zeros(img.shape[0], self.cfg.readouts, dtype=torch.bool,
                               device=img.device))
        seq = torch.cat(parts, dim=1)
        n = seq.shape[1]
        # Octo's rule: observation tokens do not attend to readouts; readouts see everything.
        attn = torch.zeros(n, n, dtype=torch.bool, device=seq.device)
        attn[:n_obs, n_obs:] = True
        out = self.transformer(seq, mask=attn, src_key_padding_mask=torch.cat(pad, dim=1))
        r = self.norm(out[:, n_obs:]).mean(dim=1)
        return torch.tanh(self.head(r)).view(-1, self.chunk_size, self.action_dim)


@register_teacher("octo-small")
class OctoTeacher(Teacher):
    """Compact Octo-style VLA teacher (sizes `tiny` and `small`)."""

    device_support = True

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None,
                 net: OctoNet | None = None) -> None:
        super().__init__(spec, config, action_stats)
        arch_dict = dict(config["arch"])
        arch_dict["stem_channels"] = tuple(arch_dict["stem_channels"])
        arch = OctoConfig(**arch_dict)
        self.arch = arch
        self.net = net or OctoNet(arch, spec.action_dim, spec.chunk_size, spec.proprio_dim)
        self.device = torch.device("cpu")

    @classmethod
    def arch_for(cls, size: str, image_size: int, options: dict[str, Any]) -> OctoConfig:
        """The architecture of preset `size` with `options` overriding its fields, checked.

        `rpd finetune-teacher --option patch=4 --option image_tokens_side=8` gives finer
        image tokens (at 6x6 tokens a teacher did not localise the cube).

        Raises:
            InputError: an unknown or unsettable field, or a value out of range.
        """
        preset = OctoConfig.preset(size)
        fields = asdict(preset)
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise InputError(f"--option {', '.join(unknown)}: octo-small's architecture fields "
                             f"are {', '.join(k for k in fields if k != 'stem_channels')}")
        arch = dict(options)
        for key, value in options.items():
            if key == "stem_channels":
                raise InputError("--option stem_channels: not settable; the presets fix it")
            if isinstance(fields[key], float):
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not 0 <= value < 1:
                    raise InputError(f"--option {key}={value!r}: give a number in [0, 1)")
                arch[key] = float(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"--option {key}={value!r}: give a positive integer")
        cfg = OctoConfig(**{**fields, **arch, "stem_channels": preset.stem_channels})
        if cfg.d_model % cfg.heads:
            raise InputError(f"--option d_model={cfg.d_model}, heads={cfg.heads}: d_model must "
                             "be a multiple of heads")
        if cfg.patch > image_size:
            raise InputError(f"--option patch={cfg.patch}: larger than the {image_size}px image")
        return cfg

    @classmethod
    def create(cls, spec: TeacherSpec, size: str = "small",
               action_stats: dict[str, list[float]] | None = None,
               **options: Any) -> OctoTeacher:
        """A freshly initialised teacher of preset `size`; `options` override fields of its
        `OctoConfig` (see `arch_for`)."""
        arch = cls.arch_for(size, spec.camera.width, options)
        return cls(spec, dict(size=size, arch=asdict(arch)), action_stats)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def to(self, device: str | torch.device) -> OctoTeacher:
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def tokens(self, instructions: list[str]) -> torch.Tensor:
        """Token ids [B, L], L = the longest instruction in the batch (padding is masked, so
        trimming it changes nothing but the cost)."""
        ids = tokenize(instructions, self.arch.vocab_size, self.arch.max_text_len)
        used = int((ids != 0).any(axis=0).sum())
        return torch.as_tensor(ids[:, : max(1, used)], device=self.device)

    def forward_normalized(self, images: torch.Tensor, instructions: list[str],
                           proprio: torch.Tensor | None = None) -> torch.Tensor:
        """Training forward pass: normalised action chunks [B, C, A] with gradient."""
        return self.net(images, self.tokens(instructions), proprio)

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        h, w = self.spec.camera.height, self.spec.camera.width
        if batch.images.shape[1:3] != (h, w):
            raise InputError(
                f"teacher expects {w}x{h} images from camera {self.spec.camera.name!r}, got "
                f"{batch.images.shape[2]}x{batch.images.shape[1]}; render the teacher's camera"
            )
        self.net.eval()
        with torch.no_grad():
            images = torch.as_tensor(batch.images, device=self.device)
            proprio = None
            if self.spec.proprio_dim:
                if batch.proprio is None:
                    raise InputError("this teacher needs proprioception; pass TeacherBatch.proprio")
                proprio = torch.as_tensor(batch.proprio[:, : self.spec.proprio_dim],
                                          device=self.device)
            out = self.net(images, self.tokens(batch.instructions), proprio).cpu().numpy()
        return unnormalize(out, self.action_stats["q01"], self.action_stats["q99"])

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def _save_weights(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  str(path))

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> OctoTeacher:
        from safetensors.torch import load_file

        teacher = cls(TeacherSpec.from_dict(meta["spec"]), meta["config"], meta["action_stats"])
        teacher.net.load_state_dict(load_file(str(weights)))
        return teacher
