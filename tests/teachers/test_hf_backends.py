"""The Hugging Face teachers (`openvla`, `pi0`): their math, training through the real
`rpd finetune-teacher` stage, checkpoints, local pretrained checkpoints and bad input.

The interface contract (shapes, units, determinism, save -> load, corrupt/missing weights,
wrong kind) runs for both kinds in test_contract.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.teacher_data import load_teacher_data, render_teacher_data
from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.pipeline.finetune import FinetuneConfig, finetune_teacher, training_loss
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, load_teacher, teacher_class
from rpd.teachers.normalize import normalize
from rpd.teachers.openvla import N_BINS, OpenVLATeacher, action_bins, bin_centers, prompt_text
from rpd.teachers.pi0 import PI0Teacher

STATS = dict(q01=[-0.5] * 6 + [-1.0], q99=[0.5] * 6 + [1.0], mean=[0.0] * 7, std=[0.3] * 7)
INSTRUCTION = "pick up the red cube and move it to the goal"


def spec(chunk_size: int = 2, proprio_dim: int = 18) -> TeacherSpec:
    return TeacherSpec(camera=CameraSpec("render", 48, 48), control_mode="pd_ee_delta_pose",
                       action_dim=7, chunk_size=chunk_size, proprio_dim=proprio_dim,
                       tasks={"PickCube-v1": INSTRUCTION})


def batch(n: int = 2, seed: int = 0) -> TeacherBatch:
    rng = np.random.default_rng(seed)
    return TeacherBatch(images=rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8),
                        instructions=[INSTRUCTION] * n,
                        proprio=rng.normal(size=(n, 18)).astype(np.float32))


# ---- pure functions ---------------------------------------------------------------------------


def test_action_bins_and_centres_by_hand() -> None:
    a = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 3.0, -3.0])
    np.testing.assert_array_equal(action_bins(a).numpy(), [0, 0, 128, 192, 255, 255, 0])
    np.testing.assert_allclose(bin_centers(torch.tensor([0, 128, 255])).numpy(),
                               [-1 + 1 / 256, 1 / 256, 1 - 1 / 256], atol=1e-7)
    x = torch.linspace(-1, 1, 1001)
    assert (bin_centers(action_bins(x)) - x).abs().max() <= 1 / N_BINS + 1e-6  # half a bin


def test_prompt_is_openvlas() -> None:
    assert prompt_text("Push the cube.") == (
        "In: What action should the robot take to push the cube?\nOut:")


def test_action_tokens_are_the_last_256_ids() -> None:
    teacher = OpenVLATeacher.create(spec(), "tiny", STATS)
    vocab = teacher.tokenizer.vocab_size
    assert teacher.first_action_id == vocab - N_BINS
    assert teacher.net.config.text_config.vocab_size == vocab
    ids = teacher._prompt_ids(INSTRUCTION)
    assert max(ids) < teacher.first_action_id  # the prompt uses no action token
    assert teacher.tokenizer.unk_token_id not in ids[1 + teacher.config["n_image_tokens"]:]
    assert teacher.spec.proprio_dim == 0  # OpenVLA takes no proprioception


def test_openvla_loss_is_on_action_tokens_only() -> None:
    """Masked chunk slots and the prompt carry no loss: changing their targets changes
    nothing, changing a supervised target does."""
    teacher = OpenVLATeacher.create(spec(), "tiny", STATS)
    b = batch()
    images = torch.as_tensor(b.images)
    targets = torch.zeros(2, 2, 7)
    mask = torch.tensor([[True, False], [True, True]])
    base = teacher.training_loss(images, b.instructions, None, targets, mask)
    other = targets.clone()
    other[0, 1] = 0.9  # a masked slot
    assert torch.equal(teacher.training_loss(images, b.instructions, None, other, mask), base)
    other[1, 1] = 0.9  # a supervised slot
    assert not torch.equal(teacher.training_loss(images, b.instructions, None, other, mask), base)


def test_default_loss_is_the_chunk_l1() -> None:
    octo = teacher_class("octo-small").create(spec(), "tiny", STATS)  # type: ignore[attr-defined]
    b = batch()
    targets = torch.zeros(2, 2, 7)
    loss, is_l1 = training_loss(octo, torch.as_tensor(b.images), b.instructions,
                                torch.as_tensor(b.proprio), targets, torch.ones(2, 2, dtype=bool))
    pred = octo.forward_normalized(torch.as_tensor(b.images), b.instructions,
                                   torch.as_tensor(b.proprio))
    assert is_l1 and torch.allclose(loss, pred.abs().mean())


def test_pi0_loss_ignores_masked_slots() -> None:
    """A masked slot's error is not counted. (Its noisy action is still an input: π0's action
    tokens attend to each other, so a fully masked sample is what can be checked exactly.)"""
    teacher = PI0Teacher.create(spec(), "tiny", STATS)
    b = batch()
    images, proprio = torch.as_tensor(b.images), torch.as_tensor(b.proprio)
    targets, mask = torch.zeros(2, 2, 7), torch.tensor([[False, False], [True, True]])
    other = targets.clone()
    other[0] = 0.9
    losses = []
    for t in (targets, other):
        torch.manual_seed(0)  # same noise and flow times
        losses.append(teacher.training_loss(images, b.instructions, proprio, t, mask))
    assert torch.equal(*losses)


# ---- the real fine-tuning stage ----------------------------------------------------------------


# Steps and batch size per kind: flow matching's per-batch loss is noisy (random flow times).
SCHEDULE = {"openvla": (50, 16), "pi0": (100, 32)}


@pytest.fixture(scope="module", params=["openvla", "pi0"])
def finetuned(request: pytest.FixtureRequest, demo_file: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """A tiny teacher of each kind fine-tuned on the 2 PickCube demos (48 px frames)."""
    losses: list[float] = []
    out = tmp_path_factory.mktemp(request.param) / "t"
    steps, batch_size = SCHEDULE[request.param]
    finetune_teacher(FinetuneConfig(demos=[demo_file], out=out, kind=request.param,
                                    size="tiny", steps=steps, batch_size=batch_size, lr=3e-3,
                                    warmup_steps=0, chunk_size=2, image_size=48,
                                    eval_every=steps, render_workers=1),
                     progress=lambda step, m: losses.append(m["train/loss"]))
    return out, losses


def _fixed_batch_loss(teacher: Teacher, demo_file: Path) -> float:
    """The teacher's own training loss on the demos' first 64 frames, same noise every call."""
    data = load_teacher_data([render_teacher_data(demo_file, teacher.spec.camera)])
    targets, mask = data.chunk_targets(teacher.spec.chunk_size)
    stats = teacher.action_stats
    rows = np.arange(64)
    torch.manual_seed(0)
    with torch.no_grad():
        return float(teacher.training_loss(  # type: ignore[attr-defined]
            torch.as_tensor(data.frames[rows]), [INSTRUCTION] * len(rows),
            torch.as_tensor(data.proprio[rows]) if teacher.spec.proprio_dim else None,
            torch.as_tensor(normalize(targets[rows], stats["q01"], stats["q99"])),
            torch.as_tensor(mask[rows])))


@pytest.mark.slow
def test_finetune_loss_falls_and_checkpoint_loads(finetuned: tuple[Path, list[float]],
                                                  demo_file: Path, tmp_path: Path) -> None:
    out, losses = finetuned
    teacher = load_teacher(out)
    assert len(losses) == SCHEDULE[teacher.kind][0] and np.isfinite(losses).all()
    assert teacher.kind in ("openvla", "pi0") and teacher.spec.chunk_size == 2
    assert "val/l1" in teacher.metrics and np.isfinite(teacher.metrics["val/l1"])
    # The same weights the run started from (same seed), on the same frames and noise.
    untrained = type(teacher).create(teacher.spec, "tiny", teacher.action_stats)  # type: ignore[attr-defined]
    before, after = (_fixed_batch_loss(t, demo_file) for t in (untrained, teacher))
    assert after < 0.8 * before, (before, after, losses)

    b = batch()
    actions = teacher.act_chunk(b)
    assert actions.shape == (2, 2, 7) and np.isfinite(actions).all()
    teacher.save(tmp_path / "again")
    again = load_teacher(tmp_path / "again")
    np.testing.assert_array_equal(again.act_chunk(b), actions)
    assert again.fingerprint == teacher.fingerprint


def test_init_from_a_finetuned_teacher(finetuned: tuple[Path, list[float]], demo_file: Path,
                                       tmp_path: Path) -> None:
    out, _ = finetuned
    base = load_teacher(out)
    tuned = load_teacher(finetune_teacher(FinetuneConfig(
        demos=[demo_file], out=tmp_path / "ft", kind=base.kind, size="tiny", steps=1, lr=1e-12,
        warmup_steps=0, image_size=48, init=out, render_workers=1, val_fraction=0.0)))
    for (k, x), y in zip(base.net.state_dict().items(), tuned.net.state_dict().values(),
                         strict=True):
        assert torch.allclose(x, y, atol=1e-5), k  # started from the fine-tuned weights
    assert tuned.spec == base.spec


def test_backend_options_reach_create(demo_file: Path, tmp_path: Path) -> None:
    """FinetuneConfig.extra is passed to the backend's create: LoRA on the tiny model."""
    out = finetune_teacher(FinetuneConfig(
        demos=[demo_file], out=tmp_path / "t", kind="openvla", size="tiny", steps=2,
        batch_size=4, chunk_size=1, image_size=48, render_workers=1, val_fraction=0.0,
        extra={"lora_rank": 4}))
    teacher = load_teacher(out)
    assert teacher.config["lora_rank"] == 4 and teacher.spec.chunk_size == 1
    assert any("lora_A" in k for k in teacher.net.state_dict())


# ---- pretrained checkpoints (a local save_pretrained directory) --------------------------------


@pytest.mark.parametrize("kind", ["openvla", "pi0"])
def test_local_pretrained_checkpoint(kind: str, tmp_path: Path) -> None:
    cls = teacher_class(kind)
    tiny = cls.create(spec(), "tiny", STATS)  # type: ignore[attr-defined]
    tiny.net.save_pretrained(tmp_path / "hf")
    tiny.tokenizer.save_pretrained(tmp_path / "hf")
    teacher = cls.create(spec(), str(tmp_path / "hf"), STATS)  # type: ignore[attr-defined]
    assert teacher.config["pretrained"] == str(tmp_path / "hf")
    assert "tokenizer" not in teacher.config  # the checkpoint's own tokenizer
    # The checkpoint's weights are used as they are (OpenVLA's LoRA starts as a no-op).
    np.testing.assert_array_equal(teacher.act_chunk(batch()), tiny.act_chunk(batch()))
    if kind == "openvla":  # LoRA r=32 on a checkpoint: only adapter weights train
        assert teacher.config["lora_rank"] == 32
        trainable = [n for n, p in teacher.net.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
    teacher.save(tmp_path / "t")
    loaded = load_teacher(tmp_path / "t")
    np.testing.assert_array_equal(loaded.act_chunk(batch()), teacher.act_chunk(batch()))


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openvla", "pi0"])
def test_bad_sizes_and_checkpoints(kind: str, tmp_path: Path) -> None:
    cls = teacher_class(kind)
    with pytest.raises(InputError, match=r"--size small: .*tiny") as e:
        cls.create(spec(), "small", STATS)  # type: ignore[attr-defined]
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=f"--size {tmp_path / 'nothing'}: cannot load") as e:
        cls.create(spec(), str(tmp_path / "nothing"), STATS)  # type: ignore[attr-defined]
    assert "\n" not in str(e.value)
    teacher = cls.create(spec(), "tiny", STATS)  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="48x48"):
        teacher.act_chunk(TeacherBatch(images=np.zeros((1, 32, 32, 3), np.uint8),
                                       instructions=[INSTRUCTION], proprio=np.zeros((1, 18))))


def test_cli_reports_a_wrong_size_in_one_line(demo_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["finetune-teacher", "--demos", str(demo_file), "--out",
                                       str(tmp_path / "t"), "--kind", "openvla", "--image-size",
                                       "48", "--workers", "1"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]  # after the rendering progress bar
    assert last.startswith("error: --size small") or "--size small" in last, result.output
    assert "Traceback" not in result.output
