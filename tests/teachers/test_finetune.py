"""`rpd finetune-teacher` and `rpd eval --teacher` end to end on tiny settings."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.demos import source_name
from rpd.errors import InputError
from rpd.pipeline.finetune import TRAIN_STATE, FinetuneConfig, finetune_teacher
from rpd.teachers.base import TeacherBatch, load_teacher
from rpd.teachers.chunking import ChunkedPolicy


def test_tiny_teacher_training_loss_falls(demo_file: Path, tmp_path: Path) -> None:
    losses: list[float] = []
    finetune_teacher(FinetuneConfig(demos=[demo_file], out=tmp_path / "t", size="tiny",
                                    steps=60, batch_size=32, lr=1e-3, image_size=48,
                                    eval_every=60, val_fraction=0.0, render_workers=1),
                     progress=lambda step, m: losses.append(m["train/l1"]))
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_checkpoint_records_spec_stats_and_metrics(tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(tiny_teacher_dir)
    assert teacher.spec.tasks == {"PickCube-v1": teacher.spec.tasks["PickCube-v1"]}
    assert teacher.spec.camera.width == 48 and teacher.spec.chunk_size == 8
    assert teacher.training["train_episodes"] == 1 and teacher.training["val_episodes"] == 1
    assert "val/l1" in teacher.metrics and teacher.metrics["step"] == 30
    assert not (tiny_teacher_dir / TRAIN_STATE).exists()
    assert any((tiny_teacher_dir / "tb").iterdir())


def test_resume_continues_an_interrupted_run(demo_file: Path, tmp_path: Path) -> None:
    cfg = dict(demos=[demo_file], out=tmp_path / "t", size="tiny", steps=20, batch_size=8,
               image_size=48, eval_every=5, checkpoint_every=10, render_workers=1)

    def interrupt(step: int, metrics: dict) -> None:
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_teacher(FinetuneConfig(**cfg), progress=interrupt)
    assert torch.load(tmp_path / "t" / TRAIN_STATE, weights_only=False)["step"] == 10
    with pytest.raises(InputError, match="--resume"):
        finetune_teacher(FinetuneConfig(**cfg))
    steps: list[int] = []
    finetune_teacher(FinetuneConfig(**cfg, resume=True), progress=lambda s, m: steps.append(s))
    assert steps == list(range(11, 21))
    history = json.loads((tmp_path / "t" / "history.json").read_text())
    assert [h["step"] for h in history] == [5, 10, 15, 20]


def test_init_from_an_existing_teacher(tiny_teacher_dir: Path, demo_file: Path,
                                       tmp_path: Path) -> None:
    base = load_teacher(tiny_teacher_dir)
    out = finetune_teacher(FinetuneConfig(demos=[demo_file], out=tmp_path / "ft", size="tiny",
                                          steps=1, lr=1e-9, warmup_steps=0, image_size=48,
                                          init=tiny_teacher_dir, render_workers=1))
    tuned = load_teacher(out)
    for (k, a), b in zip(base.net.state_dict().items(), tuned.net.state_dict().values(),
                         strict=True):
        assert torch.allclose(a, b, atol=1e-5), k  # started from the base weights


def test_receding_horizon_replans_every_k_steps(tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(tiny_teacher_dir)
    calls: list[int] = []
    original = teacher.act_chunk

    def counting(batch: TeacherBatch) -> np.ndarray:
        calls.append(len(batch))
        return original(batch)

    teacher.act_chunk = counting  # type: ignore[method-assign]
    policy = ChunkedPolicy(teacher, mode="receding", execute=3)
    p = teacher.spec.proprio_dim
    b = TeacherBatch(np.zeros((2, 48, 48, 3), np.uint8), ["x", "x"], np.zeros((2, p), np.float32))
    chunk = original(b)
    actions = [policy.act(b) for _ in range(7)]
    assert len(calls) == 3  # steps 0, 3, 6
    np.testing.assert_allclose(actions[1], chunk[:, 1], atol=1e-6)
    ens = ChunkedPolicy(teacher, mode="ensemble", decay=0.5)
    np.testing.assert_allclose(ens.act(b), chunk[:, 0], atol=1e-5)
    w_old, w_new = np.exp(0), np.exp(-0.5)  # step 1: old chunk's slot 1, new chunk's slot 0
    expected = (w_old * chunk[:, 1] + w_new * chunk[:, 0]) / (w_old + w_new)
    np.testing.assert_allclose(ens.act(b), expected, atol=1e-5)


@pytest.mark.slow
def test_cli_finetune_and_eval(demo_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher"
    result = CliRunner().invoke(main, ["finetune-teacher", "--demos", str(demo_file), "--out",
                                       str(out), "--size", "tiny", "--steps", "5",
                                       "--image-size", "48", "--eval-every", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote teacher" in result.stdout
    result = CliRunner().invoke(main, ["eval", "--teacher", str(out), "--env", "PickCube-v1",
                                       "--episodes", "2", "--horizon", "8", "--workers", "2",
                                       "--video", str(tmp_path / "vid")])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval" / "PickCube-v1-h8.json").read_text())
    assert summary["episodes"] == 2 and summary["seed_range"] == "teacher evaluation"
    assert summary["success_rate"] == np.mean([e["success"] for e in summary["per_episode"]])
    assert [e["seed"] for e in summary["per_episode"]] == [10**9, 10**9 + 1]
    assert [e["length"] for e in summary["per_episode"]] == [8, 8]
    assert summary["fingerprint"] == load_teacher(out).fingerprint
    # the default is the labelling policy: one teacher call per step, its chunk's first action
    assert summary["chunk_mode"] == "label"
    assert [e["teacher_calls"] for e in summary["per_episode"]] == [8, 8]
    assert summary["teacher_calls_per_step"] == 1.0
    result = CliRunner().invoke(main, ["eval", "--teacher", str(out), "--env", "PickCube-v1",
                                       "--episodes", "1", "--horizon", "8", "--workers", "1",
                                       "--chunk-mode", "receding"])
    assert result.exit_code == 0, result.output
    # written beside the labelling figure, 4 actions per call
    receding = json.loads((out / "eval" / "PickCube-v1-h8-receding.json").read_text())
    assert [e["teacher_calls"] for e in receding["per_episode"]] == [2]
    assert json.loads((out / "eval" / "PickCube-v1-h8.json").read_text()) == summary
    assert len(list((tmp_path / "vid").glob("*.mp4"))) == 2
    assert "success rate" in result.stdout


def _fails(args: list[str], *words: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in result.stderr, result.stderr


def test_bad_demos(demos_copy: Path, tmp_path: Path) -> None:
    from rpd.data.demos import converted_name

    conv = demos_copy / converted_name("pd_ee_delta_pose")
    args = ["finetune-teacher", "--out", str(tmp_path / "o"), "--size", "tiny", "--steps", "1"]
    _fails([*args, "--demos", str(demos_copy / source_name())], "pd_joint_pos", "rpd demos import")
    meta = json.loads(conv.with_suffix(".json").read_text())
    meta["env_info"]["env_id"] = "MyTask-v0"
    conv.with_suffix(".json").write_text(json.dumps(meta))
    _fails([*args, "--demos", str(conv)], "MyTask-v0", "instruction")
    meta["env_info"]["env_id"] = "PickCube-v1"
    conv.with_suffix(".json").write_text(json.dumps(meta))
    with h5py.File(conv, "a") as f:
        for key in f:
            f[key]["success"][...] = False
    _fails([*args, "--demos", str(conv)], "no successful episodes")
    assert not (tmp_path / "o").exists()


def test_bad_teacher_dir_and_eval_options(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    _fails(["eval", "--teacher", str(tmp_path / "none"), "--env", "PickCube-v1"],
           "no such checkpoint")
    _fails(["eval", "--teacher", str(tiny_teacher_dir), "--env", "PushCube-v1", "--episodes",
            "1"], "PushCube-v1", "fine-tune")
    _fails(["eval", "--env", "PickCube-v1"], "--teacher", "--student")
    _fails(["eval", "--teacher", str(tiny_teacher_dir), "--env", "PickCube-v1",
            "--checkpoint", "best"], "--checkpoint best")
    _fails(["finetune-teacher", "--demos", "x.h5", "--out", str(tmp_path), "--size", "huge"],
           "x.h5")


def test_backend_options_set_the_architecture_and_a_resume_must_repeat_them(
        demo_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "fine"
    result = CliRunner().invoke(main, ["finetune-teacher", "--demos", str(demo_file), "--out",
                                       str(out), "--size", "tiny", "--steps", "3", "--image-size",
                                       "48", "--eval-every", "3", "--workers", "1",
                                       "--option", "patch=4", "--option", "image-tokens-side=5"])
    assert result.exit_code == 0, result.output
    teacher = load_teacher(out)
    assert (teacher.arch.patch, teacher.arch.image_tokens_side) == (4, 5)
    assert teacher.net.img_pos.shape[1] == 25  # 5 x 5 image tokens
    p = teacher.spec.proprio_dim
    batch = TeacherBatch(np.zeros((2, 48, 48, 3), np.uint8), ["x", "x"],
                         np.zeros((2, p), np.float32))
    assert teacher.act_chunk(batch).shape == (2, 8, teacher.spec.action_dim)

    cfg = dict(demos=[demo_file], out=tmp_path / "t", size="tiny", steps=10, batch_size=8,
               image_size=48, eval_every=5, checkpoint_every=5, render_workers=1,
               extra={"patch": 4})

    def interrupt(step: int, metrics: dict) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_teacher(FinetuneConfig(**cfg), progress=interrupt)
    with pytest.raises(InputError, match="another architecture"):
        finetune_teacher(FinetuneConfig(**{**cfg, "extra": {}}, resume=True))
    steps: list[int] = []
    finetune_teacher(FinetuneConfig(**cfg, resume=True), progress=lambda s, m: steps.append(s))
    assert steps == [6, 7, 8, 9, 10] and load_teacher(tmp_path / "t").arch.patch == 4


def test_bad_backend_options(demo_file: Path, tiny_teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["finetune-teacher", "--demos", str(demo_file), "--out", str(out), "--size", "tiny",
            "--steps", "1", "--image-size", "48"]
    _fails([*args, "--option", "patch"], "--option", "KEY=VALUE")
    _fails([*args, "--option", "nope=1"], "nope", "image_tokens_side")
    _fails([*args, "--option", "patch=0"], "patch=0", "positive")
    _fails([*args, "--option", "patch=64"], "patch=64", "48px")
    _fails([*args, "--option", "dropout=2"], "dropout=2")
    _fails([*args, "--option", "stem_channels=4"], "stem_channels")
    _fails([*args, "--kind", "cnn-tiny", "--option", "patch=4"], "cnn-tiny", "none")
    _fails([*args, "--init", str(tiny_teacher_dir), "--option", "patch=4"], "--init")
    assert not out.exists()
