"""The `scripted` teacher: a state-reading controller whose knobs control its error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.env_state import get_env_state
from rpd.data.schema import TEACHER_JSON, TEACHER_WEIGHTS
from rpd.data.vec_envs import EnvConfig, make_env
from rpd.errors import InputError
from rpd.labels.live import TeacherLabeler
from rpd.teachers.base import TeacherBatch, load_teacher, no_images
from rpd.teachers.scripted import CONTROLLER_VERSIONS, ScriptedTeacher


def _rpd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _scripted(tmp_path: Path, name: str, env_id: str, *options: str) -> Path:
    out = tmp_path / name
    code, output = _rpd("scripted-teacher", "--env", env_id, "--out", str(out), *options)
    assert code == 0, output
    return out


def _success_rate(teacher: Path, env_id: str, tmp_path: Path, episodes: int = 4) -> float:
    js = tmp_path / f"{teacher.name}.json"
    code, output = _rpd("eval", "--teacher", str(teacher), "--env", env_id, "--episodes",
                        str(episodes), "--horizon", "50", "--workers", "1", "--json", str(js))
    assert code == 0, output
    return json.loads(js.read_text())["success_rate"]


def test_saved_teacher_is_config_only_and_reloads_identically(tmp_path: Path) -> None:
    out = _scripted(tmp_path, "t", "PickCube-v1", "--offset", "0.01", "0", "0", "--speed", "0.5")
    assert (out / TEACHER_JSON).is_file() and not (out / TEACHER_WEIGHTS).exists()
    teacher = load_teacher(out)
    assert teacher.kind == "scripted" and teacher.uses_env_state
    assert teacher.config == dict(env_id="PickCube-v1", offset=[0.01, 0.0, 0.0], speed=0.5,
                                  controller=CONTROLLER_VERSIONS["PickCube-v1"])
    other = ScriptedTeacher.build("PickCube-v1", offset=(0.02, 0.0, 0.0), speed=0.5)
    assert teacher.fingerprint == load_teacher(out).fingerprint != other.fingerprint
    meta = json.loads((out / TEACHER_JSON).read_text())
    meta["config"]["controller"] = CONTROLLER_VERSIONS["PickCube-v1"] - 1
    (out / TEACHER_JSON).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="re-create it"):
        load_teacher(out)


def test_actions_are_a_function_of_the_state_alone() -> None:
    """Labels of the same states agree whatever order and batch they come in (no memory)."""
    teacher = ScriptedTeacher.build("PickCube-v1", speed=0.5)
    env = make_env(EnvConfig("PickCube-v1"))
    states = []
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(4):
            states.append(get_env_state(env))
            env.step(env.action_space.sample())
    env.close()
    states = np.concatenate(states)

    def act(s: np.ndarray) -> np.ndarray:
        return teacher.act(TeacherBatch(no_images(len(s)), ["x"] * len(s), env_states=s))

    forward, backward = act(states), act(states[::-1])[::-1]
    np.testing.assert_array_equal(forward, backward)
    assert forward.shape == (12, 7) and forward.dtype == np.float32
    assert np.abs(forward[:, :3]).max() <= 0.5 + 1e-6  # --speed caps the position step
    assert (np.abs(forward[:, 6]) <= 1.0).all()  # the gripper command blends open -> closed
    with pytest.raises(InputError, match="simulator states"):
        teacher.act(TeacherBatch(no_images(1), ["x"]))
    teacher.close()


def test_labeller_passes_states_and_renders_nothing() -> None:
    teacher = ScriptedTeacher.build("PushCube-v1")
    with TeacherLabeler(teacher, "PushCube-v1") as labeler:
        episode = labeler.rollout(seed=3, steps=50)
        assert episode["success"]  # the exact teacher pushes the cube onto the target
        relabelled = labeler.label_env_states(episode["env_state"])
        assert labeler.env.unwrapped.render_mode is None
    np.testing.assert_array_equal(relabelled, episode["teacher_action"])


def _rollout_successes(teacher: ScriptedTeacher, seeds: range) -> list[bool]:
    with TeacherLabeler(teacher, teacher.config["env_id"], max_episode_steps=50) as labeler:
        wins = [bool(labeler.rollout(seed=s, steps=50)["success"]) for s in seeds]
    teacher.close()
    return wins


def test_offset_and_speed_control_the_error() -> None:
    """Exact: succeeds; a 6 cm lateral perception error misses the cube; speed 0.05 is too
    slow for 50 steps."""
    seeds = range(100, 103)
    assert all(_rollout_successes(ScriptedTeacher.build("PushCube-v1"), seeds))
    assert not any(_rollout_successes(
        ScriptedTeacher.build("PushCube-v1", offset=(0.0, 0.06, 0.0)), seeds))
    assert not any(_rollout_successes(ScriptedTeacher.build("PushCube-v1", speed=0.05), seeds))


def test_push_targets_are_a_continuous_function_of_the_state() -> None:
    """A 1 mm move of the gripper moves the push controller's target by at most a few mm:
    no phase switch where labels on either side point opposite ways (the switching
    controller of version 2 jumped by centimetres there, and a student fitted to it came to
    rest on the boundary)."""
    from rpd.teachers.scripted import _push

    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(4000):
        obj = np.array([*rng.uniform(-0.1, 0.1, 2), 0.02])
        goal = np.array([obj[0] + rng.uniform(0.1, 0.3), obj[1] + rng.uniform(-0.05, 0.05),
                         0.0])
        tcp = obj + np.array([*rng.uniform(-0.08, 0.08, 2), rng.uniform(-0.005, 0.1)])
        step = rng.normal(size=3)
        step *= 0.001 / np.linalg.norm(step)
        a = _push(dict(tcp=tcp, obj=obj, goal=goal))
        b = _push(dict(tcp=tcp + step, obj=obj, goal=goal))
        worst = max(worst, float(np.linalg.norm(a - b)))
    assert worst < 0.05, f"target jumped {worst:.3f} m for a 1 mm move"


def test_pick_actions_are_a_continuous_function_of_the_state() -> None:
    """A 1 mm move of the gripper (or a 1 mm change of its width) changes the pick
    controller's target by a few mm and its gripper and yaw commands by a few hundredths:
    version 3 switched phases at hard thresholds (hover / descend / close / carry) and flipped
    its yaw label from +1 to -1 at ±45°, and a student regressing on it hovered."""
    from rpd.teachers.scripted import _pick

    rng = np.random.default_rng(0)
    worst_target = worst_command = 0.0
    for _ in range(4000):
        obj = np.array([*rng.uniform(-0.1, 0.1, 2), 0.02])
        goal = np.array([*rng.uniform(-0.1, 0.1, 2), rng.uniform(0.05, 0.3)])
        # within a few cm of the cube, where the phases meet
        tcp = obj + rng.uniform([-0.04, -0.04, -0.005], [0.04, 0.04, 0.08])
        yaw = rng.uniform(-np.pi, np.pi)
        pose = dict(obj=obj, goal=goal, obj_q=np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]),
                    tcp_q=np.array([1.0, 0, 0, 0]), gripper_width=rng.uniform(0.0, 0.08))
        step = rng.normal(size=3)
        step *= 0.001 / np.linalg.norm(step)
        moved = dict(pose, gripper_width=pose["gripper_width"] + rng.choice([-1, 1]) * 0.001)
        a, b = _pick(dict(pose, tcp=tcp)), _pick(dict(moved, tcp=tcp + step))
        worst_target = max(worst_target, float(np.linalg.norm(a[0] - b[0])))
        worst_command = max(worst_command, abs(a[1] - b[1]), abs(a[2] - b[2]))
    assert worst_target < 0.05, f"target jumped {worst_target:.3f} m for a 1 mm move"
    assert worst_command < 0.3, f"gripper or yaw command jumped {worst_command:.2f}"
    # the yaw command is continuous across the cube's 45° symmetry point
    base = dict(tcp=np.array([0.0, 0.0, 0.1]), obj=np.zeros(3), goal=np.ones(3),
                tcp_q=np.array([1.0, 0, 0, 0]), gripper_width=0.08)
    near45 = [_pick(dict(base, obj_q=np.array([np.cos(y / 2), 0, 0, np.sin(y / 2)])))[2]
              for y in (np.pi / 4 - 1e-3, np.pi / 4 + 1e-3)]
    assert abs(near45[0] - near45[1]) < 0.01


def test_rpd_eval_of_the_exact_pick_teacher(tmp_path: Path) -> None:
    teacher = _scripted(tmp_path, "pick", "PickCube-v1")
    assert _success_rate(teacher, "PickCube-v1", tmp_path, episodes=3) >= 2 / 3


def test_stack_actions_are_a_continuous_function_of_the_state() -> None:
    """The stack controller blends its phases as the pick controller does: a 1 mm move of the
    gripper or the held cube changes its target by a few mm and its commands a little, also
    around the green cube, where lifting, lowering and letting go meet."""
    from rpd.teachers.scripted import _stack

    rng = np.random.default_rng(1)
    worst_target = worst_command = 0.0
    for _ in range(4000):
        base = np.array([*rng.uniform(-0.1, 0.1, 2), 0.02])
        # the red cube anywhere from the table to just above the green one, near it half the time
        near = rng.random() < 0.5
        xy = base[:2] + rng.uniform(-0.03, 0.03, 2) if near else rng.uniform(-0.1, 0.1, 2)
        obj = np.array([*xy, rng.uniform(0.02, 0.11)])
        tcp = obj + rng.uniform([-0.01, -0.01, -0.005], [0.01, 0.01, 0.03])
        pose = dict(obj=obj, goal=base, obj_q=np.array([1.0, 0, 0, 0]),
                    tcp_q=np.array([1.0, 0, 0, 0]), gripper_width=rng.uniform(0.03, 0.08))
        step = rng.normal(size=3)
        step *= 0.001 / np.linalg.norm(step)
        moved = dict(pose, obj=obj + step, gripper_width=pose["gripper_width"] + 0.001)
        a, b = _stack(dict(pose, tcp=tcp)), _stack(dict(moved, tcp=tcp + step))
        worst_target = max(worst_target, float(np.linalg.norm(a[0] - b[0])))
        worst_command = max(worst_command, abs(a[1] - b[1]), abs(a[2] - b[2]))
    assert worst_target < 0.05, f"target jumped {worst_target:.3f} m for a 1 mm move"
    assert worst_command < 0.3, f"gripper or yaw command jumped {worst_command:.2f}"
    # a cube resting on the green one is let go and left: gripper open, target above it
    base = np.array([0.0, 0.0, 0.02])
    rest = dict(obj=base + np.array([0, 0, 0.04]), goal=base, tcp=base + np.array([0, 0, 0.04]),
                obj_q=np.array([1.0, 0, 0, 0]), tcp_q=np.array([1.0, 0, 0, 0]),
                gripper_width=0.04)
    target, gripper, _ = _stack(rest)
    assert gripper == 1.0 and target[2] > rest["tcp"][2] + 0.05


def test_rpd_eval_of_the_exact_stack_teacher(tmp_path: Path) -> None:
    teacher = _scripted(tmp_path, "stack", "StackCube-v1")
    assert _success_rate(teacher, "StackCube-v1", tmp_path, episodes=4) >= 3 / 4


def test_rpd_train_with_a_scripted_teacher_labels_every_state(tmp_path: Path) -> None:
    teacher = _scripted(tmp_path, "t", "PushCube-v1")
    out = tmp_path / "run"
    code, output = _rpd("train", "--env", "PushCube-v1", "--envs", "1", "--n-steps", "64",
                        "--batch-size", "32", "--n-epochs", "1", "--eval-every", "64",
                        "--eval-episodes", "1", "--net-arch", "32", "--steps", "64",
                        "--teacher", str(teacher), "--out", str(out))
    assert code == 0, output
    meta = json.loads((out / "student.json").read_text())
    assert meta["teacher"]["fingerprint"] == load_teacher(teacher).fingerprint
    assert meta["metrics"]["live_teacher_calls"] == 64


@pytest.mark.parametrize("args, message", [
    (["--env", "LiftPegUpright-v1"], "--env LiftPegUpright-v1"),
    (["--env", "PushCube-v1", "--speed", "0"], "--speed 0.0"),
    (["--env", "PushCube-v1", "--speed", "1.5"], "--speed 1.5"),
    (["--env", "PushCube-v1", "--offset", "0", "nan", "0"], "--offset"),
])
def test_bad_options_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, output = _rpd("scripted-teacher", *args, "--out", str(tmp_path / "t"))
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_existing_teacher_is_kept_without_force_and_not_served(tmp_path: Path) -> None:
    out = _scripted(tmp_path, "t", "PushCube-v1", "--speed", "0.3")
    before = (out / TEACHER_JSON).read_text()
    code, output = _rpd("scripted-teacher", "--env", "PickCube-v1", "--out", str(out))
    assert code == 2 and "--force" in output
    assert (out / TEACHER_JSON).read_text() == before
    code, output = _rpd("serve-teacher", str(out), "--port", "0")
    assert code == 2 and "simulator states" in output
    code, output = _rpd("finetune-teacher", "--demos", str(tmp_path / "none.h5"), "--out",
                        str(tmp_path / "ft"), "--kind", "scripted")
    assert code == 2 and "rpd scripted-teacher" in output  # refused before reading --demos


def test_rpd_cache_labels_rollouts_of_a_scripted_teacher(tmp_path: Path) -> None:
    """The cache stage (dask workers on loopback) takes a state-reading teacher too."""
    from rpd.data.store import TeacherStore

    teacher = _scripted(tmp_path, "t", "PushCube-v1")
    code, output = _rpd("cache", "--teacher", str(teacher), "--env", "PushCube-v1", "--out",
                        str(tmp_path / "store"), "--rollouts", "2", "--horizon", "30",
                        "--workers", "1")
    assert code == 0, output
    store = TeacherStore.open(tmp_path / "store")
    assert store.identity.teacher_fingerprint == load_teacher(teacher).fingerprint
    rows = store.read(["teacher_action"])
    # the exact teacher finishes a push in ~11 steps: two short episodes, every state labelled
    assert 2 <= len(rows.teacher_action) < 60
    assert np.isfinite(rows.teacher_action).all() and (rows.teacher_action[:, 6] == -1).all()
