"""`rpd export` and `rpd eval --policy` on tiny real students (ManiSkill envs, SB3, CPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th
from click.testing import CliRunner

from rpd.cli import main
from rpd.pipeline.evaluate import load_model
from rpd.pipeline.export import ExportedPolicy, meta_path, record_observations

ENV_ID = "PushCube-v1"
SIZE = 40  # NatureCNN needs ≥ 36 px
TINY = ["--env", ENV_ID, "--envs", "1", "--n-steps", "64", "--batch-size", "32",
        "--n-epochs", "1", "--eval-every", "1000", "--eval-episodes", "1", "--net-arch", "32",
        "--no-teacher", "--steps", "64"]
FORMATS = [("onnx", ".onnx"), ("torchscript", ".pt")]
EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "run_onnx_policy.py"


def _rpd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _export(run: Path, fmt: str, out: Path, *args: str) -> dict:
    code, output = _rpd("export", "--student", str(run), "--format", fmt, "--out", str(out),
                        "--verify-steps", "16", *args)
    assert code == 0, output
    assert "max |exported - student| action:" in output
    return json.loads(meta_path(out).read_text())


def _env_of(run: Path) -> dict:
    """The env a student run was trained in (student.json's "env")."""
    return json.loads((run / "student.json").read_text())["env"]


def _train(out: Path, *args: str) -> Path:
    code, output = _rpd("train", *TINY, *args, "--out", str(out))
    assert code == 0, output
    return out


@pytest.fixture(scope="module")
def state_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64-step state student (observation normalisation on) and both its exports."""
    root = tmp_path_factory.mktemp("state")
    run = _train(root / "run")
    files = {"run": run}
    for fmt, suffix in FORMATS:
        files[fmt] = root / f"policy{suffix}"
        _export(run, fmt, files[fmt])
    return files


@pytest.fixture(scope="module")
def pixel_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64-step pixel student (frame + proprio, a critic that also reads the state) and both
    its exports."""
    root = tmp_path_factory.mktemp("pixel")
    run = _train(root / "run", "--obs", "rgb+proprio", "--critic-state",
                 "--student-image-size", str(SIZE))
    files = {"run": run}
    for fmt, suffix in FORMATS:
        files[fmt] = root / f"policy{suffix}"
        _export(run, fmt, files[fmt])
    return files


def _check_acts_as_sb3(files: dict[str, Path], fmt: str) -> dict:
    """The export's description, after checking that it acts as the SB3 student's mean
    (clipped) on observations recorded in the env, and on those observations perturbed."""
    model = load_model(files["run"] / "student.zip", "--student", "", device="cpu")
    observations, _ = record_observations(model, _env_of(files["run"]), 12)
    rng = np.random.default_rng(0)
    if isinstance(observations, dict):
        shaken = {k: (v if v.dtype == np.uint8 else v + rng.normal(0, 0.5, v.shape)
                      .astype(np.float32)) for k, v in observations.items()}
    else:
        shaken = observations + rng.normal(0, 0.5, observations.shape).astype(np.float32)
    policy = ExportedPolicy.load(files[fmt])
    for obs in (observations, shaken):
        expected, _ = model.predict(obs, deterministic=True)
        np.testing.assert_allclose(policy.predict(obs)[0], expected, rtol=0, atol=1e-5)
    return policy.meta


@pytest.mark.parametrize("fmt", [f for f, _ in FORMATS])
def test_a_state_student_exports_and_acts_as_in_sb3(state_exports: dict[str, Path],
                                                    fmt: str) -> None:
    meta = _check_acts_as_sb3(state_exports, fmt)
    assert meta["inputs"] == [dict(name="state", shape=["batch", 35], dtype="float32",
                                   what=meta["inputs"][0]["what"])]
    assert meta["output"]["shape"] == ["batch", 7]
    assert meta["action_low"] == [-1.0] * 7 and meta["action_high"] == [1.0] * 7
    assert meta["task"] == ENV_ID and meta["control_mode"] == "pd_ee_delta_pose"
    assert meta["run"] == str(state_exports["run"].resolve())
    assert meta["checkpoint"] == "final" and meta["step"] == 64
    assert meta["verified"]["observations"] == 16
    assert meta["verified"]["max_abs_diff"] < 1e-5
    model = load_model(state_exports["run"] / "student.zip", "--student", "", device="cpu")
    assert float(model.policy.features_extractor.obs_count) > 0  # normalisation is in play


@pytest.mark.parametrize("fmt", [f for f, _ in FORMATS])
@pytest.mark.slow
def test_a_pixel_student_exports_its_actor_inputs_only(pixel_exports: dict[str, Path],
                                                       fmt: str) -> None:
    meta = _check_acts_as_sb3(pixel_exports, fmt)
    # the asymmetric critic's "state" is not an input: the actor never reads it
    assert [(i["name"], i["shape"], i["dtype"]) for i in meta["inputs"]] == [
        ("rgb", ["batch", SIZE, SIZE, 3], "uint8"), ("proprio", ["batch", 18], "float32")]
    assert meta["camera"]["width"] == SIZE and meta["obs_mode"] == "rgb+proprio"
    assert meta["verified"]["max_abs_diff"] < 1e-5


def test_actions_beyond_the_bounds_are_clipped_as_sb3_clips_them(
        state_exports: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(state_exports["run"], run, ignore=shutil.ignore_patterns("tb", "eval"))
    model = load_model(run / "student.zip", "--student", "", device="cpu")
    with th.no_grad():  # means far outside [-1, 1] on some dims
        model.policy.action_net.bias += th.tensor([3.0, -3.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    model.save(run / "student.zip")
    out = tmp_path / "clipped.onnx"
    meta = _export(run, "onnx", out)
    assert meta["verified"]["max_abs_diff"] < 1e-5
    observations, _ = record_observations(model, meta["env"], 8)
    action, _ = ExportedPolicy.load(out).predict(observations)
    assert (action[:, 0] == 1.0).all() and (action[:, 1] == -1.0).all()
    np.testing.assert_allclose(action, model.predict(observations, deterministic=True)[0],
                               rtol=0, atol=1e-5)


def _eval(*args: str, out: Path) -> dict:
    code, output = _rpd("eval", "--env", ENV_ID, "--episodes", "2", "--horizon", "15",
                        "--held-out", "--workers", "1", "--json", str(out), *args)
    assert code == 0, output
    return json.loads(out.read_text())


def _same_episodes(student: dict, exported: dict) -> None:
    assert [(e["seed"], e["success"], e["length"]) for e in exported["per_episode"]] == [
        (e["seed"], e["success"], e["length"]) for e in student["per_episode"]]
    np.testing.assert_allclose([e["ret"] for e in exported["per_episode"]],
                               [e["ret"] for e in student["per_episode"]], atol=1e-3)
    assert exported["success"] == student["success"] and exported["seed_range"] == "held-out"
    assert exported["step"] == student["step"] and exported["actions"] == "mean"


def test_eval_policy_runs_the_student_episodes(state_exports: dict[str, Path],
                                               tmp_path: Path) -> None:
    student = _eval("--student", str(state_exports["run"]), out=tmp_path / "student.json")
    for fmt, _ in FORMATS:
        exported = _eval("--policy", str(state_exports[fmt]), out=tmp_path / f"{fmt}.json")
        _same_episodes(student, exported)
        assert exported["format"] == fmt and exported["policy"] == str(state_exports[fmt])
    code, output = _rpd("eval", "--policy", str(state_exports["onnx"]), "--env", ENV_ID,
                        "--episodes", "1", "--horizon", "5", "--workers", "1")
    assert code == 0, output  # by default beside the file, named after it
    assert (state_exports["onnx"].parent / "eval" / f"{ENV_ID}-h5-policy.onnx.json").is_file()


@pytest.mark.slow
def test_eval_policy_runs_a_pixel_student_episodes(pixel_exports: dict[str, Path],
                                                   tmp_path: Path) -> None:
    student = _eval("--student", str(pixel_exports["run"]), out=tmp_path / "student.json")
    for fmt, _ in FORMATS:
        _same_episodes(student, _eval("--policy", str(pixel_exports[fmt]),
                                      out=tmp_path / f"{fmt}.json"))


def test_the_docs_example_needs_only_onnxruntime_and_numpy(state_exports: dict[str, Path],
                                                           tmp_path: Path) -> None:
    model = load_model(state_exports["run"] / "student.zip", "--student", "", device="cpu")
    observations, _ = record_observations(model, _env_of(state_exports["run"]), 6)
    np.savez(tmp_path / "obs.npz", state=observations)
    check = ("import runpy, sys\n"
             f"sys.argv = ['run_onnx_policy.py', {str(state_exports['onnx'])!r}, "
             f"{str(tmp_path / 'obs.npz')!r}]\n"
             f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
             "loaded = {'rpd', 'torch', 'stable_baselines3', 'mani_skill'} & set(sys.modules)\n"
             "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["task"] == ENV_ID
    np.testing.assert_allclose(np.array(printed["action"], np.float32),
                               model.predict(observations, deterministic=True)[0],
                               rtol=0, atol=1e-5)


def test_bad_export_input_is_one_line_exit_2_and_writes_nothing(
        state_exports: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"keep me")
    run = str(state_exports["run"])
    cases = [
        (["--student", str(tmp_path / "empty"), "--format", "onnx", "--out",
          str(tmp_path / "a.onnx")], "no student.json and student.zip"),
        (["--student", run, "--format", "tflite", "--out", str(tmp_path / "a.onnx")],
         "--format 'tflite': use one of onnx, torchscript"),
        (["--student", run, "--format", "onnx", "--out", str(taken)],
         "exists; pass --force"),
        (["--student", run, "--format", "torchscript", "--out", str(tmp_path / "a.onnx")],
         "--format torchscript writes a .pt file"),
        (["--student", run, "--format", "onnx", "--out", str(tmp_path / "a.onnx"),
          "--checkpoint", "newest"], "--checkpoint 'newest': use one of"),
    ]
    for args, message in cases:
        code, output = _rpd("export", *args)
        assert code == 2 and message in output, output
        assert len(output.strip().splitlines()) == 1, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken.onnx"]
    assert taken.read_bytes() == b"keep me"
    assert not list((tmp_path / "empty").iterdir())


def test_bad_eval_policy_input_is_one_line_exit_2(state_exports: dict[str, Path],
                                                  tmp_path: Path) -> None:
    alone = tmp_path / "alone.onnx"
    shutil.copyfile(state_exports["onnx"], alone)  # without its .json
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    meta_path(garbage).write_text(meta_path(state_exports["torchscript"]).read_text())
    cases = [
        (["--policy", str(tmp_path / "none.onnx")], "no such file"),
        (["--policy", str(alone)], "no alone.onnx.json beside it"),
        (["--policy", str(garbage)], "not a readable torchscript policy"),
        (["--policy", str(state_exports["onnx"]), "--stochastic"], "drop --stochastic"),
        (["--policy", str(state_exports["onnx"]), "--student", str(state_exports["run"])],
         "give exactly one of"),
    ]
    for args, message in cases:
        code, output = _rpd("eval", "--env", ENV_ID, "--episodes", "1", "--workers", "1",
                            *args)
        assert code == 2 and message in output, output
        assert len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "eval").exists()


def test_the_deployment_page_quotes_the_example_as_it_is() -> None:
    code = EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert code in (EXAMPLE.parents[1] / "deployment.md").read_text()


@pytest.mark.slow
def test_the_export_benchmark_runs_and_writes_its_table(state_exports: dict[str, Path],
                                                        pixel_exports: dict[str, Path],
                                                        tmp_path: Path) -> None:
    bench = Path(__file__).parents[2] / "benchmarks" / "bench_export.py"
    result = subprocess.run([sys.executable, str(bench), "--state-run", str(state_exports["run"]),
                             "--pixel-run", str(pixel_exports["run"]), "--calls", "3",
                             "--seconds", "1", "--teachers", "cnn-tiny", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "bench_export.json").read_text())
    rows = record["rows"]
    assert record["command"].startswith("python benchmarks/bench_export.py --state-run ")
    assert [r["policy"] for r in rows] == [
        f"{kind} student, {how}" for kind in ("state", "pixel")
        for how in ("SB3 predict", "onnx", "torchscript")] + ["teacher cnn-tiny (default size)"]
    assert all(r["ms"] > 0 and r["calls"] >= 3 for r in rows)
    assert len({r["params"] for r in rows[:3]}) == 1 and rows[0]["params"] < rows[3]["params"]
    assert all(r["bytes"] > 0 for r in rows[:6])
    assert "| pixel student, onnx | onnxruntime |" in result.stdout
