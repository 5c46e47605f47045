"""Helpers shared by the Hugging Face transformers teachers (`openvla`, `pi0`).

Everything here works offline: tiny models are built from configs in code, and their
tokenizers are word-level `tokenizers` models trained on the task instructions, stored in the
teacher's config as JSON so a checkpoint needs no download to load. transformers and peft
are imported lazily (rpd's other backends do not need them).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpd.errors import InputError

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
"""Ids 0..4 of every tiny word tokenizer: padding, unknown, begin, end, image placeholder."""

_WORD = re.compile(r"\w+|[^\w\s]")


def require_transformers() -> None:
    """Raise a one-line SetupError-style InputError when transformers/peft are missing."""
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise InputError(
            f"--kind: the Hugging Face teachers need transformers and peft ({e}); "
            "install them with `pip install -e .[hf]`"
        ) from None


def word_tokenizer(texts: list[str], extra_tokens: list[str] | None = None) -> Any:
    """A word-level fast tokenizer over the words of `texts` (no download).

    Ids: `SPECIAL_TOKENS` first, then the sorted words of `texts`, then `extra_tokens` (the
    OpenVLA backend puts its 256 action tokens there, so they are the vocabulary's last ids).
    Unknown words map to `<unk>`.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = sorted({w for t in texts for w in _WORD.findall(t.lower())} - set(SPECIAL_TOKENS))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words, *(extra_tokens or [])])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer_from_json(tok.to_str())


def tokenizer_from_json(text: str) -> Any:
    """A `PreTrainedTokenizerFast` from a `tokenizers` JSON string made by `word_tokenizer`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    pad, unk, bos, eos, _ = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text), pad_token=pad,
                                   unk_token=unk, bos_token=bos, eos_token=eos)


def tokenizer_json(tokenizer: Any) -> str:
    """The JSON string that `tokenizer_from_json` rebuilds `tokenizer` from."""
    return tokenizer.backend_tokenizer.to_str()


def hf_config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a transformers config from its `to_dict()` (kept in teacher.json)."""
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def load_pretrained(model_cls: Any, path: str, option: str = "--size") -> Any:
    """`model_cls.from_pretrained(path)` in float32, with a one-line InputError when it fails."""
    try:
        return model_cls.from_pretrained(path, dtype=torch.float32)
    except Exception as e:
        raise InputError(
            f"{option} {path}: cannot load a transformers checkpoint from it "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); give a local directory "
            "made by save_pretrained or a cached hub id (HF_HUB_OFFLINE=0 to download)"
        ) from None


def load_pretrained_tokenizer(path: str, option: str = "--size") -> Any:
    """AutoTokenizer from a checkpoint directory or hub id, with a one-line InputError."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise InputError(f"{option} {path}: cannot load its tokenizer ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160]})") from None


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def pixels(images: Any, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 images [B, H, W, 3] -> float pixel values [B, 3, size, size], normalised.

    Resizes bilinearly with antialiasing (the teacher camera's resolution need not match the
    vision tower's) and applies the image processor's mean/std.
    """
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray)
                        else images)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def image_processor_settings(path: str, default_size: int) -> dict[str, Any]:
    """Image size and mean/std from a checkpoint's image processor config (no torchvision).

    Reads `preprocessor_config.json` (local directory) when present; falls back to the
    vision tower's image size and CLIP-style 0.5 mean/std.
    """
    import json

    cfg_path = Path(path) / "preprocessor_config.json"
    settings = dict(image_size=default_size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if cfg_path.is_file():
        pp = json.loads(cfg_path.read_text())
        size = pp.get("crop_size") or pp.get("size") or {}
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge") or default_size
        settings.update(image_size=int(size), image_mean=list(pp.get("image_mean", [0.5] * 3)),
                        image_std=list(pp.get("image_std", [0.5] * 3)))
    return settings


def state_dict_for_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous CPU tensors that share no memory (tied embeddings
    are written twice: safetensors refuses shared tensors)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def check_image_batch(images: np.ndarray, spec_camera: Any) -> None:
    """InputError unless images are the teacher camera's [B, H, W, 3]."""
    h, w = spec_camera.height, spec_camera.width
    if images.shape[1:3] != (h, w):
        raise InputError(
            f"teacher expects {w}x{h} images from camera {spec_camera.name!r}, got "
            f"{images.shape[2]}x{images.shape[1]}; render the teacher's camera"
        )


class SafetensorsCheckpoint:
    """Checkpoint methods shared by the transformers backends: `net` (base and adapter
    weights, unmerged) as model.safetensors; loading rebuilds the model from teacher.json's
    config and loads them back. Mix in before `Teacher`."""

    net: torch.nn.Module

    def _save_weights(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file(state_dict_for_save(self.net), str(path))

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> Any:
        from safetensors.torch import load_file

        from rpd.teachers.base import TeacherSpec

        teacher = cls(TeacherSpec.from_dict(meta["spec"]), meta["config"],  # type: ignore[call-arg]
                      meta["action_stats"])
        teacher.net.load_state_dict(load_file(str(weights)))
        return teacher
