"""`rpd demos`: motion-planned generation, import/conversion and info, end to end."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.demos import converted_name, source_name
from rpd.data.trajectories import open_trajectory, summarize
from rpd.errors import InputError


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_generate_cli_writes_demos_and_reports_them(pickcube_demos: Path) -> None:
    assert (pickcube_demos / converted_name("pd_ee_delta_pose")).is_file()
    assert (pickcube_demos / "generate.out").read_text().startswith("wrote 2 successful episodes")


def test_generated_demos_are_successful_7d_episodes(pickcube_demos: Path) -> None:
    traj = open_trajectory(pickcube_demos / converted_name("pd_ee_delta_pose"))
    assert traj.env_id == "PickCube-v1" and traj.control_mode == "pd_ee_delta_pose"
    assert len(traj.episodes) == 2
    for ep, arrays in traj.iter_episodes():
        assert arrays["actions"].shape[1] == 7
        assert arrays["actions"].shape[0] == ep["elapsed_steps"] > 10
        assert bool(arrays["success"][-1])
        assert np.all(np.abs(arrays["actions"]) <= 1.0 + 1e-6)  # normalised controller units
    source = open_trajectory(pickcube_demos / source_name())
    assert source.control_mode == "pd_joint_pos"
    seeds = [e["episode_seed"] for e in traj.episodes]
    assert [e["episode_seed"] for e in source.episodes] == seeds
    assert not (pickcube_demos / ".parts").exists()


def test_generated_episode_replays_to_success(pickcube_demos: Path) -> None:
    """The converted actions really solve the task when replayed from the episode's seed."""
    from rpd.data.vec_envs import EnvConfig, make_env

    traj = open_trajectory(pickcube_demos / converted_name("pd_ee_delta_pose"))
    ep, arrays = next(traj.iter_episodes())
    env = make_env(EnvConfig("PickCube-v1", max_episode_steps=500))
    env.reset(seed=ep["episode_seed"])
    env.unwrapped.set_state_dict(traj.env_state(ep["episode_id"], 0))
    success = False
    for a in arrays["actions"]:
        *_, info = env.step(a[None])
        success = success or bool(info["success"][0])
    env.close()
    assert success


def test_info_json_reports_the_demos(pickcube_demos: Path) -> None:
    result = run("demos", "info", str(pickcube_demos / converted_name("pd_ee_delta_pose")),
                 "--json")
    info = json.loads(result.output)
    assert info["env_id"] == "PickCube-v1"
    assert info["episodes"] == 2 and info["success_rate"] == 1.0
    assert info["action_dim"] == 7
    assert 10 < info["length_min"] <= info["length_mean"] <= info["length_max"]


def test_info_table(pickcube_demos: Path) -> None:
    result = run("demos", "info", str(pickcube_demos / source_name()))
    assert result.exit_code == 0
    assert "pd_joint_pos" in result.output and "100.0%" in result.output


def test_import_converts_joint_position_demos(pickcube_demos: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    result = run("demos", "import", str(pickcube_demos / source_name()), "--out", str(out))
    assert result.exit_code == 0, result.output
    info = summarize(open_trajectory(out / converted_name("pd_ee_delta_pose")))
    assert info.control_mode == "pd_ee_delta_pose" and info.action_dim == 7
    assert info.episodes == 2 and info.success_rate == 1.0


def test_import_of_same_mode_copies(pickcube_demos: Path, tmp_path: Path) -> None:
    src = pickcube_demos / converted_name("pd_ee_delta_pose")
    out = tmp_path / "copied"
    assert run("demos", "import", str(src), "--out", str(out)).exit_code == 0
    with h5py.File(src) as a, h5py.File(out / src.name) as b:
        np.testing.assert_array_equal(a["traj_0/actions"][()], b["traj_0/actions"][()])


def test_block_tmp_dirs_cannot_contain_dot_h5(tmp_path: Path) -> None:
    """ManiSkill writes its JSON next to `path.replace(".h5", ".json")`; no temporary block
    directory name may contain ".h5", whatever mkdtemp's random suffix is."""
    import tempfile

    from rpd.data.demos import block_tmp_prefix

    for block in (0, 1, 12):
        for _ in range(300):
            d = Path(tempfile.mkdtemp(prefix=block_tmp_prefix(block), dir=tmp_path))
            assert ".h5" not in d.name
            d.rmdir()
        assert ".h5" not in block_tmp_prefix(block) + "h5abcdef"


def test_generate_resumes_finished_blocks(tmp_path: Path) -> None:
    """A block finished by an interrupted run is reused, not planned again."""
    from rpd.data.demos import GenerateConfig, _generate_block, generate_demos, run_manifest

    cfg = GenerateConfig(env_id="PushCube-v1", num=3, out=tmp_path / "d", block_size=2, seed=7)
    parts = cfg.out / ".parts"
    parts.mkdir(parents=True)
    (parts / "manifest.json").write_text(json.dumps(run_manifest(cfg)))
    _generate_block("PushCube-v1", 0, 7, 2, 20, "pd_ee_delta_pose", str(parts), None)
    stats = json.loads((parts / "block_0" / "stats.json").read_text())
    (parts / "block_0" / "stats.json").write_text(json.dumps({**stats, "attempts": 1000}))

    ticks: list[int] = []
    result = generate_demos(cfg, progress=ticks.append)
    assert ticks[0] == 2  # the resumed block is reported first
    assert sum(ticks) == 3
    assert result.episodes == 3
    assert result.attempts >= 1000  # block 0's own record: it was not planned again
    seeds = [e["episode_seed"] for e in open_trajectory(result.path).episodes]
    assert seeds[0] == 7  # block 0 starts at --seed
    assert len(set(seeds)) == 3


def test_generate_is_deterministic_in_seed(tmp_path: Path) -> None:
    from rpd.data.demos import GenerateConfig, generate_demos

    paths = [generate_demos(GenerateConfig(env_id="PushCube-v1", num=1, out=tmp_path / str(w),
                                           seed=11, workers=w)).path for w in (1, 2)]
    with h5py.File(paths[0]) as a, h5py.File(paths[1]) as b:
        np.testing.assert_allclose(a["traj_0/actions"][()], b["traj_0/actions"][()])


def _tiny_pair(tmp: Path, n: int) -> tuple[Path, dict]:
    h5 = tmp / f".tiny{n}.h5.tmp"
    with h5py.File(h5, "w") as f:
        f.create_dataset("traj_0/actions", data=np.zeros((n, 7), np.float32))
    meta = {"env_info": {"env_id": "PushCube-v1"},
            "episodes": [{"episode_id": 0, "elapsed_steps": n}]}
    return h5, meta


def test_an_interrupted_publish_never_leaves_a_pair_that_opens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .h5 and .json are replaced as a pair: a crash between the two moves leaves files
    that `open_trajectory` (and so `rpd run`) refuses, not a new .h5 beside an old .json."""
    import os

    from rpd.data.trajectories import is_complete_pair, open_trajectory, publish_pair

    out = tmp_path / "trajectory.h5"
    publish_pair(*_tiny_pair(tmp_path, 3), out)
    assert open_trajectory(out).episodes[0]["elapsed_steps"] == 3 and is_complete_pair(out)

    real_replace, calls = os.replace, []

    def crash_on_the_json(src, dst):  # the machine dies after the .h5 moved
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_json)
    with pytest.raises(OSError):
        publish_pair(*_tiny_pair(tmp_path, 3), out)  # same length: content checks can't tell
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(calls) == 2 and not is_complete_pair(out)
    with pytest.raises(InputError, match="missing"):
        open_trajectory(out)

    # an old .json put back beside the new .h5 is refused too
    publish_pair(*_tiny_pair(tmp_path, 3), out)
    old = out.with_suffix(".json").read_text()
    publish_pair(*_tiny_pair(tmp_path, 3), out)
    out.with_suffix(".json").write_text(old)
    with pytest.raises(InputError, match=r"was not written with trajectory\.h5"):
        open_trajectory(out)
