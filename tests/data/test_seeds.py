"""The seed plan: disjoint ranges, and every stage refuses a seed outside its own."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from rpd.data import seeds
from rpd.data.seeding import TRAIN_SEED_RANGE, episode_seeds
from rpd.errors import InputError


def test_the_ranges_are_pairwise_disjoint_and_name_every_stage() -> None:
    for a, b in itertools.combinations(seeds.PLAN, 2):
        assert a.stop <= b.start or b.stop <= a.start, (a.name, b.name)
    assert [r.name for r in seeds.PLAN] == ["demos", "cache", "evaluation", "held-out",
                                           "teacher evaluation", "training"]
    assert TRAIN_SEED_RANGE == (seeds.TRAINING.start, seeds.TRAINING.stop)
    assert seeds.range_of(0) is seeds.DEMOS
    assert seeds.range_of(seeds.HELD_OUT.start + 49) is seeds.HELD_OUT
    assert seeds.range_of(seeds.HELD_OUT.stop) is None  # a gap between the ranges
    drawn = [int(episode_seeds(s, k).integers(*TRAIN_SEED_RANGE)) for s in range(3)
             for k in range(4)]
    assert all(seeds.range_of(x) is seeds.TRAINING for x in drawn)


def test_check_names_the_option_and_the_range_it_reaches_into() -> None:
    seeds.EVALUATION.check(seeds.EVALUATION.start, 10)
    seeds.EVALUATION.check(seeds.HELD_OUT.start, 50, allowed=(seeds.HELD_OUT,))
    with pytest.raises(InputError, match=r"--seed 20000: seeds 20,000\.\.20,049 reach into "
                                         r"the demos seeds .* evaluation range"):
        seeds.EVALUATION.check(20_000, 50, "--seed")
    with pytest.raises(InputError, match="reach into the held-out seeds"):
        seeds.EVALUATION.check(seeds.EVALUATION.stop - 5, 10, "--eval-seed")  # straddles
    with pytest.raises(InputError, match="outside every seed range"):
        seeds.CACHE.check(500_000_000, 1, "--seed")


def test_each_stage_config_refuses_a_seed_of_another_stage(tmp_path: Path) -> None:
    from rpd.data.demos import GenerateConfig
    from rpd.pipeline.cache import CacheConfig
    from rpd.pipeline.eval_teacher import TeacherEvalConfig
    from rpd.pipeline.evaluate import evaluate_student
    from rpd.pipeline.train import TrainConfig

    assert GenerateConfig("PushCube-v1", 10, tmp_path).seed in seeds.DEMOS
    with pytest.raises(InputError, match=r"--seed 99990000: .* reach into the cache seeds"):
        GenerateConfig("PushCube-v1", 10, tmp_path, seed=99_990_000)  # block 1 leaves demos
    assert CacheConfig(tmp_path, "PushCube-v1", tmp_path, rollouts=2).seed in seeds.CACHE
    with pytest.raises(InputError, match=r"--seed 0: .* demos seeds"):
        CacheConfig(tmp_path, "PushCube-v1", tmp_path, rollouts=2, seed=0)
    assert TrainConfig(env_id="PushCube-v1", out=tmp_path / "r",
                       no_teacher=True).eval_seed in seeds.EVALUATION
    with pytest.raises(InputError, match=r"--eval-seed 10000: .* demos seeds"):
        TrainConfig(env_id="PushCube-v1", out=tmp_path / "r", no_teacher=True,
                    eval_seed=10_000)
    assert TeacherEvalConfig(tmp_path, "PushCube-v1").seed in seeds.TEACHER_EVALUATION
    TeacherEvalConfig(tmp_path, "PushCube-v1", seed=seeds.HELD_OUT.start)
    with pytest.raises(InputError, match=r"--seed 200000000: .* evaluation seeds"):
        TeacherEvalConfig(tmp_path, "PushCube-v1", seed=seeds.EVALUATION.start)
    with pytest.raises(InputError, match=r"--seed 20000: .* demos seeds"):
        evaluate_student(tmp_path, seed=20_000)  # refused before the run is even read


def test_rpd_eval_refuses_a_demo_seed_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "rpd.cli", "eval", "--student",
                             str(tmp_path), "--env", "PushCube-v1", "--seed", "20000"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "demos seeds" in result.stderr
    both = subprocess.run([sys.executable, "-m", "rpd.cli", "eval", "--student", str(tmp_path),
                           "--env", "PushCube-v1", "--seed", "5", "--held-out"],
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "--held-out and --seed 5" in both.stderr
