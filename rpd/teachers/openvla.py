"""`openvla`: the OpenVLA recipe on any transformers image-text-to-text model (Llava-type).

OpenVLA (Kim et al., 2024, arXiv 2406.09246) turns a vision-language model into a policy by
writing actions as text: each action dimension, normalised to [-1, 1] with q01/q99 bounds
(`rpd.teachers.normalize`), is cut into 256 uniform bins, and bin i is the token id
`vocab_size - 256 + i`, i.e. one of the tokenizer's last 256 ids (OpenVLA overwrites the
least-used Llama tokens the same way; it orders the bins the other way round, which matters
only for its released weights). The prompt is

    In: What action should the robot take to {instruction}?\\nOut:

after BOS and the image's patch tokens; training is next-token cross-entropy on the action
tokens and the end token only. A checkpoint is fine-tuned with LoRA (r=32, alpha=min(r, 16),
all linear layers, as in OpenVLA's fine-tuning script), the random `tiny` model fully
(`lora_rank` overrides either; 0 = full fine-tuning). Inference decodes
greedily, restricted to the 256 action tokens, and maps bins to their centres.

Differences from the released OpenVLA: any `AutoModelForImageTextToText` checkpoint loadable
with the installed transformers (OpenVLA's own checkpoint needs remote code pinned to
transformers 4.40: serve it from its own environment instead); a chunk of C actions is C·A
tokens (C = 1 is OpenVLA's one action per call: pass `--chunk-size 1`); no proprioception.

`--size tiny` builds a tiny random Llava (CLIP vision tower + Llama, ~0.2M parameters) and a
word-level tokenizer over the task instructions, entirely in code; any other `--size` value
is a checkpoint: a local `save_pretrained` directory or a hub id.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rpd.data.tasks import TASKS
from rpd.errors import InputError
from rpd.teachers import hf
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher
from rpd.teachers.normalize import unnormalize

logger = logging.getLogger(__name__)

N_BINS = 256
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
IGNORE = -100  # label of tokens without loss


def action_bins(actions: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """Normalised actions [...] in [-1, 1] -> bin indices [...] int64 in [0, n_bins).

    Uniform bins of width 2 / n_bins; values outside [-1, 1] go to the end bins.
    """
    idx = torch.floor((actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * n_bins).long()
    return idx.clamp(0, n_bins - 1)


def bin_centers(bins: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """Bin indices [...] -> the normalised action at each bin's centre [...] float32."""
    return -1.0 + (bins.float() + 0.5) * (2.0 / n_bins)


def prompt_text(instruction: str) -> str:
    """OpenVLA's prompt for one instruction (lower-cased, trailing period dropped)."""
    return PROMPT.format(instruction=instruction.lower().rstrip(". "))


def _tiny_hf_config(vocab_size: int) -> dict[str, Any]:
    """A tiny Llava: CLIP vision tower (32 px, 8 px patches -> 16 image tokens) + 2-layer Llama."""
    from transformers import LlavaConfig

    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32,
                           patch_size=8, projection_dim=32),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=vocab_size, max_position_embeddings=512,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0),
        image_token_index=hf.SPECIAL_TOKENS.index("<image>"), image_seq_length=16,
        vision_feature_layer=-1)
    return cfg.to_dict()


def _count_image_tokens(model: Any, image_size: int) -> int:
    """Tokens the model's vision tower + projector make from one image."""
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.zeros(1, 3, image_size, image_size))
    feats = getattr(out, "pooler_output", out)
    t = feats[0] if isinstance(feats, (list, tuple)) else feats
    return int(t.shape[-2] if t.ndim == 3 else t.shape[0])


@register_teacher("openvla")
class OpenVLATeacher(hf.SafetensorsCheckpoint, Teacher):
    """OpenVLA-style teacher on a transformers VLM (see module docstring). `net` is the model
    (wrapped by peft when LoRA is on)."""

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None,
                 model: Any = None) -> None:
        hf.require_transformers()
        from transformers import AutoModelForImageTextToText

        super().__init__(spec, config, action_stats)
        self.tokenizer = (hf.tokenizer_from_json(config["tokenizer"]) if "tokenizer" in config
                          else hf.load_pretrained_tokenizer(config["pretrained"]))
        with hf.seeded(int(config["seed"])):
            if model is None:
                model = AutoModelForImageTextToText.from_config(
                    hf.hf_config_from_dict(config["hf_config"]))
            model = model.float()
            if config["lora_rank"]:
                from peft import LoraConfig, get_peft_model

                r = int(config["lora_rank"])
                with warnings.catch_warnings():  # peft calls an API transformers deprecated
                    warnings.simplefilter("ignore", FutureWarning)
                    model = get_peft_model(model, LoraConfig(
                        r=r, lora_alpha=min(r, 16), lora_dropout=0.0,
                        target_modules="all-linear", init_lora_weights="gaussian"))
        self.net = model.eval()
        self.first_action_id = self.tokenizer.vocab_size - N_BINS
        self.image_token_id = int(config["image_token_id"])
        self._prompts: dict[str, list[int]] = {}
        pad = self.tokenizer.pad_token_id  # Llama's tokenizer has none: pad with the end token
        self._pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

    @classmethod
    def create(cls, spec: TeacherSpec, size: str = "tiny",
               action_stats: dict[str, list[float]] | None = None, *,
               pretrained: str | None = None, lora_rank: int | None = None,
               seed: int = 0) -> OpenVLATeacher:
        """A teacher to fine-tune: `size` "tiny" (built in code) or a checkpoint path/hub id.

        Args:
            spec: What it sees and does; proprioception is dropped (OpenVLA takes none).
            size: "tiny", or a transformers checkpoint (same as `pretrained`).
            pretrained: A local `save_pretrained` directory or hub id of an
                image-text-to-text model (Llava-type: one fixed-size image).
            lora_rank: LoRA rank on all linear layers; 0 = full fine-tuning. Default: 32
                for a checkpoint (OpenVLA's), 0 for `tiny` — LoRA adapts pretrained weights,
                and a random tiny model's frozen output layer cannot express confident
                logits (measured: LoRA cross-entropy 5.77 -> 5.48 in 40 steps, full 5.77 -> 3.3).
            seed: Initialisation of the tiny model and the LoRA weights.
        """
        hf.require_transformers()
        spec = dataclasses.replace(spec, proprio_dim=0)
        config: dict[str, Any] = dict(size=size, seed=int(seed))
        if pretrained is None and size != "tiny":
            if size == "small":
                raise InputError("--size small: the openvla backend builds only 'tiny' in code; "
                                 "pass --size tiny or --size CHECKPOINT (a local "
                                 "save_pretrained directory or hub id)")
            pretrained = size
        if lora_rank is None:
            lora_rank = 0 if pretrained is None else 32
        config["lora_rank"] = int(lora_rank)
        if pretrained is None:
            texts = [PROMPT, *(t.instruction for t in TASKS.values()), *spec.tasks.values()]
            tokenizer = hf.word_tokenizer(texts, [f"<act_{i}>" for i in range(N_BINS)])
            hf_config = _tiny_hf_config(tokenizer.vocab_size)
            config.update(tokenizer=hf.tokenizer_json(tokenizer), hf_config=hf_config,
                          image_size=32, image_mean=[0.5] * 3, image_std=[0.5] * 3)
            with hf.seeded(seed):
                from transformers import AutoModelForImageTextToText

                model = AutoModelForImageTextToText.from_config(
                    hf.hf_config_from_dict(hf_config))
        else:
            from transformers import AutoModelForImageTextToText

            model = hf.load_pretrained(AutoModelForImageTextToText, pretrained)
            vision = getattr(model.config, "vision_config", None)
            config.update(pretrained=str(pretrained), hf_config=model.config.to_dict(),
                          **hf.image_processor_settings(str(pretrained),
                                                        getattr(vision, "image_size", 224)))
            tokenizer = hf.load_pretrained_tokenizer(str(pretrained))
            if tokenizer.vocab_size <= N_BINS:
                raise InputError(f"--size {pretrained}: its tokenizer has only "
                                 f"{tokenizer.vocab_size} tokens; OpenVLA needs > {N_BINS}")
        image_token_id = getattr(model.config, "image_token_id", None)
        if image_token_id is None:
            raise InputError(f"--size {pretrained}: {type(model).__name__} has no image token "
                             "id; use a Llava-type image-text-to-text model")
        try:
            n_image_tokens = _count_image_tokens(model, config["image_size"])
        except Exception as e:
            raise InputError(f"--size {pretrained}: cannot encode an image with "
                             f"{type(model).__name__} ({type(e).__name__}); use a Llava-type "
                             "image-text-to-text model") from None
        config.update(image_token_id=int(image_token_id), n_image_tokens=n_image_tokens)
        return cls(spec, config, action_stats, model=model)

    # ---- inputs ------------------------------------------------------------------------------

    def _prompt_ids(self, instruction: str) -> list[int]:
        """BOS, image placeholder tokens, then the prompt's token ids."""
        if instruction not in self._prompts:
            ids = self.tokenizer(prompt_text(instruction), add_special_tokens=False)["input_ids"]
            bos = self.tokenizer.bos_token_id
            self._prompts[instruction] = ([bos] if bos is not None else []) + [
                self.image_token_id] * int(self.config["n_image_tokens"]) + list(ids)
        return self._prompts[instruction]

    def _pixels(self, images: Any) -> torch.Tensor:
        c = self.config
        return hf.pixels(images, int(c["image_size"]), c["image_mean"], c["image_std"])

    # ---- training ----------------------------------------------------------------------------

    def training_loss(self, images: torch.Tensor, instructions: list[str],
                      proprio: torch.Tensor | None, targets: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """Token cross-entropy on the action tokens (+ end token) of each sample.

        Chunk slots past the episode's end (always the chunk's last ones) get no loss, nor does
        the end token after them, so their (repeated) actions influence nothing supervised.

        Args:
            images: [B, H, W, 3] uint8. instructions: B strings. proprio: ignored.
            targets: Normalised action chunks [B, C, A] in [-1, 1].
            mask: [B, C] bool, False for chunk slots past the episode's end (no loss).
        Returns:
            Scalar mean cross-entropy per supervised token.
        """
        b, c, a = targets.shape
        action_ids = (self.first_action_id + action_bins(targets)).view(b, c * a).tolist()
        supervised = mask[:, :, None].expand(b, c, a).reshape(b, c * a).tolist()
        eos = self.tokenizer.eos_token_id
        seqs, labels = [], []
        for i in range(b):
            prompt = self._prompt_ids(instructions[i])
            seqs.append(prompt + action_ids[i] + [eos])
            labels.append([IGNORE] * len(prompt)
                          + [t if m else IGNORE for t, m in zip(action_ids[i], supervised[i],
                                                                strict=True)]
                          + [eos if supervised[i][-1] else IGNORE])
        length = max(map(len, seqs))
        input_ids = torch.full((b, length), self._pad_id, dtype=torch.long)
        label_ids = torch.full((b, length), IGNORE, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labels, strict=True)):
            input_ids[i, : len(s)] = torch.tensor(s)
            label_ids[i, : len(s)] = torch.tensor(lab)
            attention[i, : len(s)] = 1
        logits = self.net(input_ids=input_ids, pixel_values=self._pixels(images),
                          attention_mask=attention).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), label_ids[:, 1:].flatten(),
                               ignore_index=IGNORE)

    # ---- inference ---------------------------------------------------------------------------

    @torch.no_grad()
    def forward_normalized(self, images: Any, instructions: list[str],
                           proprio: Any = None) -> torch.Tensor:
        """Greedy-decoded normalised chunks [B, C, A] (no gradient: training uses
        `training_loss`; `rpd finetune-teacher` calls this for validation L1)."""
        from transformers import LogitsProcessorList

        n_tokens = self.spec.chunk_size * self.spec.action_dim
        pixel_values = self._pixels(images)
        out = torch.empty(len(instructions), n_tokens, dtype=torch.long)
        restrict = LogitsProcessorList([_OnlyTokens(self.first_action_id,
                                                    self.first_action_id + N_BINS)])
        # Samples with the same instruction share one prompt length: decode them together.
        for instruction in dict.fromkeys(instructions):
            rows = [i for i, s in enumerate(instructions) if s == instruction]
            prompt = torch.tensor([self._prompt_ids(instruction)] * len(rows))
            generated = self.net.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt),
                pixel_values=pixel_values[rows], max_new_tokens=n_tokens, do_sample=False,
                logits_processor=restrict, pad_token_id=self._pad_id)
            out[rows] = generated[:, prompt.shape[1]:]
        bins = (out - self.first_action_id).clamp(0, N_BINS - 1)
        return bin_centers(bins).view(-1, self.spec.chunk_size, self.spec.action_dim)

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        hf.check_image_batch(batch.images, self.spec.camera)
        self.net.eval()
        pred = self.forward_normalized(batch.images, list(batch.instructions)).numpy()
        return unnormalize(pred, self.action_stats["q01"], self.action_stats["q99"])


class _OnlyTokens:
    """Logits processor: only token ids in [lo, hi) may be chosen."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, float("-inf"))
        out[:, self.lo:self.hi] = scores[:, self.lo:self.hi]
        return out
