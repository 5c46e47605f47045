"""Config fields written once: every option settable from the command line and from a file
alike, a run's config.json repeats it, recipes load, bad files are one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from rpd.cli import main
from rpd.config import (
    click_options,
    field_infos,
    from_command_line,
    list_recipes,
    read_config_file,
    recipe_path,
    values_from_mapping,
)
from rpd.pipeline.run import RunConfig
from rpd.pipeline.train_config import RESUME_FIXED, VARIANT_FIELDS, TrainConfig


def _every_field_changed(tmp: Path) -> dict[str, Any]:
    """A value other than the default for every TrainConfig field (valid together)."""
    (tmp / "store").mkdir(exist_ok=True)
    return dict(
        env_id="PullCube-v1", out=str(tmp / "run"), teacher=str(tmp / "teacher"),
        no_teacher=False, steps=1234, seed=3, resume=False, device="cpu", reward="sparse",
        obs="rgb", student_camera="render", student_image_size=48, critic_state=True, envs=3,
        env_workers=1, horizon=40, sim_backend="cpu", lam=0.5, lambda_schedule="cosine",
        lambda_decay_steps=900, teacher_success=0.2, lambda_margin=0.1, distill="l1",
        offline_steps=5, teacher_camera_shift=15.0, teacher_object_color="red",
        cache=str(tmp / "store"), live_budget=7, cache_radius=0.2, label_model=False,
        label_model_spread=0.07, answer_audit=2, label_replay=100, teacher_batch=16,
        n_steps=32, batch_size=48, n_epochs=3, learning_rate=0.001, gamma=0.95,
        gae_lambda=0.8, clip_range=0.3, target_kl=0.2, max_grad_norm=0.9, ent_coef=0.01,
        vf_coef=0.7, net_arch=[32, 16], log_std_init=-1.0, normalize_obs=False,
        eval_every=500, eval_episodes=4, eval_seed=200_000_100, checkpoint_every=250,
        wandb=True, wandb_project="other")


def _capture(cls: type) -> click.Command:
    """A command with `cls`'s generated options that returns the config it would run."""
    @click.command()
    @click_options(cls)
    @click.pass_context
    def cmd(ctx: click.Context, config_file: str | None, **options: Any) -> Any:
        return from_command_line(cls, ctx, options, config_file)

    return cmd


def _parse(cls: type, args: list[str]) -> Any:
    return _capture(cls).main(args, standalone_mode=False)


def _as_args(values: dict[str, Any]) -> list[str]:
    from rpd.config import as_command_line

    return as_command_line(TrainConfig, values)


def test_every_field_is_settable_from_the_command_line_and_a_file_alike(tmp_path: Path) -> None:
    values = _every_field_changed(tmp_path)
    assert set(values) == {i.name for i in field_infos(TrainConfig)}  # a new field: add it here
    defaults = TrainConfig(env_id="PushCube-v1", out=tmp_path / "d", no_teacher=True).to_dict()
    changed = [k for k in values if k not in ("no_teacher", "resume") and values[k] == defaults[k]]
    assert not changed, changed  # each value differs from its default
    from_cli = _parse(TrainConfig, _as_args(values)).to_dict()
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if k != "resume"}))
    from_file = _parse(TrainConfig, ["--config", str(path)]).to_dict()
    assert from_cli == from_file == {**values, "net_arch": [32, 16]}


def test_a_runs_config_json_repeats_it_and_the_command_line_wins(tmp_path: Path) -> None:
    cfg = TrainConfig(**{**_every_field_changed(tmp_path), "resume": True})
    saved = tmp_path / "run" / "config.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps(cfg.to_dict()))
    again = _parse(TrainConfig, ["--config", str(saved)])
    assert again.to_dict() == {**cfg.to_dict(), "resume": False}  # run state is not a setting
    other = _parse(TrainConfig, ["--config", str(saved), "--seed", "9", "--out",
                                 str(tmp_path / "y"), "--label-model"])
    assert (other.seed, other.out, other.label_model) == (9, tmp_path / "y", True)
    assert other.lam == cfg.lam and other.net_arch == cfg.net_arch


def test_an_old_runs_config_json_means_what_that_run_trained_with(tmp_path: Path) -> None:
    old = {"env_id": "PushCube-v1", "out": str(tmp_path / "old"), "no_teacher": True}
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(old))
    (run / "eval.csv").write_text("step,success,return,wall_time_s,live_teacher_calls\n")
    cfg = _parse(TrainConfig, ["--config", str(run / "config.json")])
    assert cfg.log_std_init == 0.0 and cfg.normalize_obs is False  # before those options
    for name in ("recipe.json", "config.json"):  # files that are not a run's own
        (tmp_path / name).write_text(json.dumps(old))
        assert _parse(TrainConfig, ["--config", str(tmp_path / name)]).log_std_init == -1.5


@pytest.mark.parametrize("content, message", [
    ("lamda: 1\n", "unknown key 'lamda'; did you mean 'lam'?"),
    ("n_steps: many\n", "n_steps: expected int, got 'many'"),
    ("envs: 2.5\n", "envs: expected int, got 2.5"),
    ("obs: depth\n", "obs: expected one of state, rgb, rgb+proprio, got 'depth'"),
    ("net_arch: [64, x]\n", "net_arch: expected comma-separated integers"),
    ("label_model: 1\n", "label_model: expected bool, got 1"),
    ("- a\n- b\n", "holds no mapping"),
    ("steps: [1\n", "not valid YAML"),
    ("command: run\n", "a recipe for `rpd run`, not `rpd train`"),
    ("n_steps: 0\n", "--n-steps 0: must be a positive number"),
])
def test_a_bad_file_is_one_line_naming_the_key_and_the_file(content: str, message: str,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--env", "PushCube-v1",
                                       "--no-teacher", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    if "--n-steps" not in message:
        assert str(path) in result.output
    assert not (tmp_path / "r").exists()


def test_every_recipe_loads_and_validates(tmp_path: Path) -> None:
    recipes = list_recipes()
    assert {"reference", "quickstart", "pickcube-ref"} <= {n for n, _, _ in recipes}
    for name, command, description in recipes:
        assert description, name
        path = recipe_path(name)
        if command == "train":
            values = values_from_mapping(TrainConfig, read_config_file(path, "train"), name)
            TrainConfig(**{"env_id": "PickCube-v1", "out": tmp_path / name, "no_teacher": False,
                           "teacher": tmp_path, **values})
        else:
            assert command == "run", name
            values = values_from_mapping(RunConfig, read_config_file(path, "run"), name)
            RunConfig(**{"out": tmp_path / name, **values})
    reference = _parse(TrainConfig, ["--config", "reference", "--env", "PickCube-v1",
                                     "--teacher", str(tmp_path), "--out", str(tmp_path / "r")])
    assert (reference.n_steps, reference.target_kl, reference.log_std_init) == (50, 0.2, -0.5)
    result = CliRunner().invoke(main, ["recipes"])
    assert result.exit_code == 0 and "reference" in result.output


def test_resume_rules_and_report_groups_come_from_the_fields() -> None:
    assert {"lam", "n_steps", "log_std_init", "seed", "vf_coef"} <= set(RESUME_FIXED)
    assert not {"steps", "live_budget", "eval_every", "out", "device"} & set(RESUME_FIXED)
    # the options the report once pooled as seeds of one group
    assert {"log_std_init", "normalize_obs", "label_model", "label_model_spread",
            "answer_audit", "sim_backend"} <= set(VARIANT_FIELDS)
    assert not {"seed", "steps", "out", "eval_episodes", "device"} & set(VARIANT_FIELDS)


def test_a_run_config_files_train_section_reaches_the_students(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "teacher.json").write_text("{}")
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(dict(command="run", steps=500, seeds=[0, 1],
                                        teacher=str(teacher),
                                        train=dict(log_std_init=-0.5, label_replay=100,
                                                   target_kl=0.2))))
    cfg = _parse(RunConfig, ["--config", str(path), "--out", str(tmp_path / "out")])
    assert cfg.seeds == (0, 1) and cfg.steps == 500
    assert cfg.train_options("rpd") == ["--label-replay", "100", "--log-std-init", "-0.5",
                                        "--target-kl", "0.2"] or set(
        cfg.train_options("rpd")) == {"--label-replay", "100", "--log-std-init", "-0.5",
                                      "--target-kl", "0.2"}
    assert "--label-replay" not in cfg.train_options("ppo")  # acts only through the teacher
    assert "--log-std-init" in cfg.train_options("ppo")
    path.write_text(yaml.safe_dump(dict(train=dict(seed=4))))
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--out",
                                       str(tmp_path / "o2"), "--dry-run"])
    assert result.exit_code == 2 and "seed are set by `rpd run` itself" in result.output


def test_a_ppo_runs_config_json_repeats_as_rpd_with_a_teacher(tmp_path: Path) -> None:
    """A flag a file sets can be switched off on the command line: `--with-teacher` undoes a
    plain-PPO run's `no_teacher: true`."""
    ppo = TrainConfig(env_id="PushCube-v1", out=tmp_path / "ppo", no_teacher=True)
    saved = tmp_path / "ppo.json"
    saved.write_text(json.dumps(ppo.to_dict()))
    rpd = _parse(TrainConfig, ["--config", str(saved), "--with-teacher", "--teacher",
                               str(tmp_path / "teacher"), "--out", str(tmp_path / "rpd")])
    assert (rpd.no_teacher, rpd.teacher) == (False, tmp_path / "teacher")
    assert _parse(TrainConfig, ["--config", str(saved)]).no_teacher is True


def test_a_resume_knows_its_teacher_however_the_path_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from rpd.errors import InputError
    from rpd.pipeline.run_dir import prepare_run_dir

    for name in ("t", "u"):
        (tmp_path / "teachers" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(env_id="PushCube-v1", out=tmp_path / "run", teacher=Path("teachers/t"))
    assert prepare_run_dir(cfg) is None  # a new run: config.json written
    saved = tmp_path / "run" / "config.json"
    for same in (tmp_path / "teachers" / "t", Path("./teachers/t"), Path("teachers/../teachers/t")):
        assert prepare_run_dir(replace(cfg, resume=True, teacher=same)) is None
        # config.json keeps the run's own spelling, so `rpd report` still pools its seeds
        assert json.loads(saved.read_text())["teacher"] == "teachers/t"
    with pytest.raises(InputError, match="teacher="):
        prepare_run_dir(replace(cfg, resume=True, teacher=Path("teachers/u")))
    monkeypatch.chdir(tmp_path / "teachers")  # the saved relative path now names nothing
    with pytest.raises(InputError, match="read from the current directory"):
        prepare_run_dir(replace(cfg, resume=True, teacher=Path("t")))
