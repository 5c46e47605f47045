"""`pi0`: π0 (Black et al., 2024, arXiv 2410.24164) through transformers' native implementation.

`transformers.PI0ForConditionalGeneration` (transformers ≥ 5): a PaliGemma VLM encodes the
image and instruction once into a key/value prefix; an action expert (a Gemma "DiT") reads
the robot state token and a noisy action chunk with the prefix and predicts the flow-matching
velocity. Training samples a time t ~ Beta(1.5, 1) (scaled into [0.001, 1]) and noise ε,
feeds x_t = t·ε + (1 - t)·a and regresses the velocity ε - a (mean squared error over the
valid chunk slots and the real action dimensions, `training_loss`); inference integrates
from noise with `num_inference_steps` (10) Euler steps (`sample_actions`). rpd feeds it the
teacher-camera image, the instruction and the joint positions (`proprio`, zero-padded to
`max_state_dim`) and trains on rpd's q01/q99-normalised action chunks (zero-padded to
`max_action_dim`); the noise of inference is seeded, so a teacher's actions are deterministic.

`--size tiny` builds a tiny random π0 (SigLIP 32 px + 2-layer Gemma + 2-layer expert,
~0.1M parameters) and a word-level tokenizer over the task instructions in code; any other
`--size` value is a PI0 checkpoint (a local `save_pretrained` directory or a hub id such as
`lerobot/pi0_base` once downloaded). All weights are fine-tuned (no LoRA).
"""

from __future__ import annotations

import dataclasses
import logging
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

NOISE_SEED = 0  # inference noise: fixed, so actions are a function of the inputs


def _tiny_hf_config(vocab_size: int, spec: TeacherSpec) -> dict[str, Any]:
    """A tiny PI0Config: SigLIP (32 px, 8 px patches -> 16 image tokens), 2-layer Gemma
    prefix and a 2-layer Gemma action expert of matching heads (it reads the prefix cache)."""
    from transformers import PI0Config

    gemma = dict(model_type="gemma", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    cfg = PI0Config(
        vlm_config=dict(
            model_type="paligemma",
            text_config=dict(gemma, vocab_size=vocab_size, bos_token_id=2, eos_token_id=3,
                             pad_token_id=0),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32,
                               intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8, vision_use_head=False),
            projection_dim=32, image_token_id=hf.SPECIAL_TOKENS.index("<image>")),
        dit_config=gemma, chunk_size=spec.chunk_size, max_action_dim=spec.action_dim,
        max_state_dim=max(1, spec.proprio_dim))
    return cfg.to_dict()


@register_teacher("pi0")
class PI0Teacher(hf.SafetensorsCheckpoint, Teacher):
    """π0 teacher on transformers' PI0ForConditionalGeneration (see module docstring)."""

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None,
                 model: Any = None) -> None:
        hf.require_transformers()
        from transformers import PI0ForConditionalGeneration

        super().__init__(spec, config, action_stats)
        self.tokenizer = (hf.tokenizer_from_json(config["tokenizer"]) if "tokenizer" in config
                          else hf.load_pretrained_tokenizer(config["pretrained"]))
        if model is None:
            with hf.seeded(int(config["seed"])):
                model = PI0ForConditionalGeneration(hf.hf_config_from_dict(config["hf_config"]))
        self.net = model.float().eval()
        c = self.net.config
        self.image_token_id = int(c.vlm_config.image_token_id)
        self.max_action_dim, self.max_state_dim = int(c.max_action_dim), int(c.max_state_dim)
        self._prompts: dict[str, list[int]] = {}

    @classmethod
    def create(cls, spec: TeacherSpec, size: str = "tiny",
               action_stats: dict[str, list[float]] | None = None, *,
               pretrained: str | None = None, seed: int = 0) -> PI0Teacher:
        """A teacher to fine-tune: `size` "tiny" (built in code) or a checkpoint path/hub id.

        A checkpoint fixes the chunk size (its `chunk_size`); the action and proprioception
        sizes must fit its `max_action_dim` / `max_state_dim`.
        """
        hf.require_transformers()
        from transformers import PI0ForConditionalGeneration

        config: dict[str, Any] = dict(size=size, seed=int(seed))
        if pretrained is None and size != "tiny":
            if size == "small":
                raise InputError("--size small: the pi0 backend builds only 'tiny' in code; "
                                 "pass --size tiny or --size CHECKPOINT (a local "
                                 "save_pretrained directory or hub id)")
            pretrained = size
        if pretrained is None:
            texts = [*(t.instruction for t in TASKS.values()), *spec.tasks.values()]
            tokenizer = hf.word_tokenizer(texts)
            hf_config = _tiny_hf_config(tokenizer.vocab_size, spec)
            config.update(tokenizer=hf.tokenizer_json(tokenizer), hf_config=hf_config,
                          image_size=32, image_mean=[0.5] * 3, image_std=[0.5] * 3)
            return cls(spec, config, action_stats)
        model = hf.load_pretrained(PI0ForConditionalGeneration, pretrained)
        c = model.config
        if spec.action_dim > c.max_action_dim or spec.proprio_dim > c.max_state_dim:
            raise InputError(
                f"--size {pretrained}: takes at most {c.max_action_dim} action and "
                f"{c.max_state_dim} state dims; the demos have {spec.action_dim} and "
                f"{spec.proprio_dim} (--no-proprio drops the state)")
        spec = dataclasses.replace(spec, chunk_size=int(c.chunk_size))
        config.update(pretrained=str(pretrained), hf_config=c.to_dict(),
                      **hf.image_processor_settings(str(pretrained),
                                                    c.vlm_config.vision_config.image_size))
        hf.load_pretrained_tokenizer(str(pretrained))  # fail now, not at the first call
        return cls(spec, config, action_stats, model=model)

    # ---- inputs ------------------------------------------------------------------------------

    def _prompt_ids(self, instruction: str) -> list[int]:
        """Image placeholder tokens, BOS, then the instruction and a newline (PI0Processor's
        layout)."""
        if instruction not in self._prompts:
            n_image = self.net.config.vlm_config.vision_config
            n = (n_image.image_size // n_image.patch_size) ** 2
            ids = self.tokenizer(instruction + "\n", add_special_tokens=False)["input_ids"]
            bos = self.tokenizer.bos_token_id
            self._prompts[instruction] = [self.image_token_id] * n + (
                [bos] if bos is not None else []) + list(ids)
        return self._prompts[instruction]

    def _inputs(self, images: Any, instructions: list[str],
                proprio: Any) -> dict[str, torch.Tensor]:
        """Model inputs: right-padded prompt ids + mask, pixel values [B, 1, 3, s, s], state."""
        c = self.config
        prompts = [self._prompt_ids(s) for s in instructions]
        b, length = len(prompts), max(map(len, prompts))
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((b, length), pad, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, : len(p)] = torch.tensor(p)
            attention[i, : len(p)] = 1
        pixel_values = hf.pixels(images, int(c["image_size"]), c["image_mean"], c["image_std"])
        state = torch.zeros(b, self.max_state_dim)
        if self.spec.proprio_dim:
            if proprio is None:
                raise InputError("this teacher needs proprioception; pass TeacherBatch.proprio")
            p = torch.as_tensor(np.asarray(proprio, np.float32) if isinstance(proprio, np.ndarray)
                                else proprio).float()[:, : self.spec.proprio_dim]
            state[:, : p.shape[1]] = p
        return dict(input_ids=input_ids, attention_mask=attention, state=state,
                    pixel_values=pixel_values[:, None],
                    pixel_attention_mask=torch.ones(b, 1, dtype=torch.bool))

    # ---- training ----------------------------------------------------------------------------

    def training_loss(self, images: torch.Tensor, instructions: list[str],
                      proprio: torch.Tensor | None, targets: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss: MSE between predicted and true velocity ε - a.

        Args:
            images: [B, H, W, 3] uint8. instructions: B strings. proprio: [B, P] or None.
            targets: Normalised action chunks [B, C, A] in [-1, 1].
            mask: [B, C] bool, False for chunk slots past the episode's end (no loss).
        Returns:
            Scalar: mean over valid slots and the A real action dims (padding excluded).
            Invalid slots (which repeat the episode's last action) still enter the action
            expert as noisy inputs, since its action tokens attend to each other.
        """
        c = self.net.config
        b, _, a = targets.shape
        actions = F.pad(targets.float(), (0, self.max_action_dim - a))
        noise = torch.randn_like(actions)
        beta = torch.distributions.Beta(torch.tensor(c.time_sampling_beta_alpha),
                                        torch.tensor(c.time_sampling_beta_beta))
        time = beta.sample((b,)) * c.time_sampling_scale + c.time_sampling_offset
        out = self.net(**self._inputs(images, instructions, proprio), noise=noise,
                       timestep=time, actions=actions)
        err = ((out.logits[..., :a] - (noise - actions)[..., :a]) ** 2).mean(dim=-1)  # [B, C]
        m = mask.float()
        return (err * m).sum() / m.sum().clamp(min=1.0)

    # ---- inference ---------------------------------------------------------------------------

    @torch.no_grad()
    def forward_normalized(self, images: Any, instructions: list[str],
                           proprio: Any = None) -> torch.Tensor:
        """Sampled normalised chunks [B, C, A] in [-1, 1] (10 Euler steps from seeded noise;
        no gradient: training uses `training_loss`)."""
        inputs = self._inputs(images, instructions, proprio)
        c = self.net.config
        gen = torch.Generator().manual_seed(NOISE_SEED)
        noise = torch.randn(len(instructions), c.chunk_size, self.max_action_dim, generator=gen)
        out = self.net.sample_actions(**inputs, noise=noise)
        return out[:, : self.spec.chunk_size, : self.spec.action_dim].clamp(-1.0, 1.0)

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        hf.check_image_batch(batch.images, self.spec.camera)
        self.net.eval()
        pred = self.forward_normalized(batch.images, list(batch.instructions), batch.proprio)
        return unnormalize(pred.numpy(), self.action_stats["q01"], self.action_stats["q99"])
