"""`scripted`: a state-based teacher of controlled error, to separate the method from the teacher.

A hand-written controller that reads the simulator state (object, goal and gripper poses)
instead of an image. Two knobs make it as weak as a fine-tuned VLA, in known ways:

- `offset` [dx, dy, dz] (m): where the teacher believes the object is, relative to where it
  is (a perception error). On PickCube the grasp lands off-centre; on Push/PullCube the push
  line misses the cube's centre.
- `speed` (0, 1]: the largest end-effector step it takes, as a fraction of the controller's
  0.1 m. A slow teacher is right but runs out of time at a short horizon, as VLAs imitating
  slow motion-planned demos do.

The policy is a pure function of the state (no memory), so any visited state can be labelled
on its own: it restores each state in a private state-only env and reads the poses there.
Actions are `pd_ee_delta_pose` (normalised position delta, rotation delta, gripper).
`rpd scripted-teacher` writes its checkpoint (teacher.json only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.tasks import DEFAULT_CONTROL_MODE, get_task
from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher

STEP_M = 0.1
"""The controller's largest position step (m) for a normalised action of 1."""
ROT_STEP = 0.1
"""The controller's largest rotation step (rad) for a normalised action of 1."""
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, -1.0
CONTROLLER_VERSIONS = {"PushCube-v1": 3, "PullCube-v1": 3, "PickCube-v1": 4, "StackCube-v1": 1}
"""Per task, bumped whenever its controller acts differently, so a teacher.json written by
another version is refused rather than silently acting otherwise under the same fingerprint.
Push 3: continuous phase blends. Pick 4: continuous descent, grasp and carry blends and a
continuous yaw command (version 3 switched phases and flipped its yaw label at ±45°). Stack 1:
the pick controller carrying to a point above the green cube, then letting go."""

PUSH_TASKS = ("PushCube-v1", "PullCube-v1")
PICK_TASKS = ("PickCube-v1",)
STACK_TASKS = ("StackCube-v1",)
SCRIPTED_TASKS = PUSH_TASKS + PICK_TASKS + STACK_TASKS

CUBE_HALF = 0.02
PUSH_BEHIND = 0.045
"""Distance behind the cube centre (m) the fingertips start a push from."""
APPROACH_HEIGHT = 0.08
"""Height (m) above the table at which the gripper travels to the start of a push."""
HOVER = 0.06
"""Height (m) above the grasp point from which the gripper descends."""


@register_teacher("scripted")
class ScriptedTeacher(Teacher):
    """A scripted controller on the simulator state (see the module docstring).

    `config`: env_id, offset [3] (m), speed (0, 1], controller (`CONTROLLER_VERSIONS`).
    """

    device_support = True  # no network: runs wherever it is asked to
    has_weights = False
    made_by = "rpd scripted-teacher --env ENV --out DIR"
    uses_env_state = True

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None) -> None:
        config = dict(config)
        env_id = config.get("env_id")
        if env_id not in SCRIPTED_TASKS:
            raise InputError(f"--env {env_id}: the scripted teacher knows "
                             f"{', '.join(SCRIPTED_TASKS)}; pick one of them")
        offset = config.get("offset", [0.0, 0.0, 0.0])
        if len(offset) != 3 or not all(np.isfinite(offset)):
            raise InputError(f"--offset {offset}: give three finite numbers dx dy dz (m)")
        speed = float(config.get("speed", 1.0))
        if not 0 < speed <= 1:
            raise InputError(f"--speed {speed}: must be in (0, 1] (fraction of the 0.1 m step)")
        current = CONTROLLER_VERSIONS[env_id]
        version = config.setdefault("controller", current)
        if version != current:
            raise InputError(f"scripted {env_id} teacher of controller version {version}, this "
                             f"rpd has {current}: re-create it with `rpd scripted-teacher`")
        config.update(offset=[float(v) for v in offset], speed=speed)
        super().__init__(spec, config, action_stats)
        self._env: Any = None

    @classmethod
    def build(cls, env_id: str, offset: tuple[float, float, float] = (0.0, 0.0, 0.0),
              speed: float = 1.0) -> ScriptedTeacher:
        """A scripted teacher for `env_id` (see the module docstring for the knobs)."""
        spec = TeacherSpec(camera=CameraSpec(), control_mode=DEFAULT_CONTROL_MODE,
                           action_dim=7, chunk_size=1, proprio_dim=0,
                           tasks={env_id: get_task(env_id).instruction})
        return cls(spec, dict(env_id=env_id, offset=list(offset), speed=speed))

    # ---- checkpoint -----------------------------------------------------------------------

    def _save_weights(self, path: Path) -> None:
        raise TypeError("a scripted teacher has no weights")

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> ScriptedTeacher:
        try:
            return cls(TeacherSpec.from_dict(meta["spec"]), dict(meta["config"]))
        except (TypeError, KeyError, ValueError) as e:
            raise InputError(f"{weights.parent / 'teacher.json'}: malformed scripted teacher "
                             f"({e}); re-create it with `rpd scripted-teacher`") from None

    # ---- acting ---------------------------------------------------------------------------

    @property
    def env(self) -> Any:
        """A private state-only env of the task, to read poses from restored states."""
        if self._env is None:
            from rpd.data.vec_envs import EnvConfig, make_env

            self._env = make_env(EnvConfig(self.config["env_id"],
                                           control_mode=self.spec.control_mode))
            self._env.reset(seed=0)
        return self._env

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        """Actions [B, 1, 7] for the states in `batch.env_states` (images are ignored)."""
        if batch.env_states is None:
            raise InputError("the scripted teacher needs simulator states (it reads no image); "
                             "use it through rpd train, rpd cache or rpd eval")
        from rpd.data.env_state import set_env_state

        out = np.zeros((len(batch), 1, 7), np.float32)
        for i, state in enumerate(np.asarray(batch.env_states, np.float32)):
            set_env_state(self.env, state)
            out[i, 0] = self.act_in_env(self.env.unwrapped)
        return out

    def act_in_env(self, base: Any) -> np.ndarray:
        """The action in the current state of ManiSkill env `base` (unwrapped): [7] f32."""
        poses = _poses(base, self.config["env_id"])
        poses["obj"] = poses["obj"] + np.asarray(self.config["offset"], np.float64)
        if self.config["env_id"] in PUSH_TASKS:
            target, gripper, yaw = _push(poses), GRIPPER_CLOSED, 0.0
        elif self.config["env_id"] in STACK_TASKS:
            target, gripper, yaw = _stack(poses)
        else:
            target, gripper, yaw = _pick(poses)
        speed = self.config["speed"]
        action = np.zeros(7, np.float32)
        action[:3] = np.clip((target - poses["tcp"]) / STEP_M, -speed, speed)
        # `yaw` is already a smooth command in [-1, 1] (see _pick); the tool frame's z points
        # down, hence the sign
        action[5] = np.clip(-yaw, -speed, speed)
        action[6] = gripper
        return action

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _np(x: Any) -> np.ndarray:
    x = x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)
    return np.asarray(x[0] if x.ndim > 1 else x, np.float64)


def _poses(base: Any, env_id: str) -> dict[str, Any]:
    """Positions (and the gripper state) the controllers need, from the env's current state."""
    if env_id in PUSH_TASKS:
        obj, goal = base.obj, base.goal_region
    elif env_id in STACK_TASKS:  # pick up cube A (red), put it on cube B (green)
        obj, goal = base.cubeA, base.cubeB
    else:
        obj, goal = base.cube, base.goal_site
    qpos = _np(base.agent.robot.get_qpos())
    return dict(tcp=_np(base.agent.tcp.pose.p), tcp_q=_np(base.agent.tcp.pose.q),
                obj=_np(obj.pose.p), obj_q=_np(obj.pose.q), goal=_np(goal.pose.p),
                gripper_width=float(qpos[-2:].sum()))


def _push(p: dict[str, Any]) -> np.ndarray:
    """Push the cube along the line from it to the goal: get behind it high, descend, push.

    A continuous function of the state (controller version 3): the phases blend through
    linear ramps instead of switching, so a student can fit the labels by regression. A
    switching version left the student's mean action at rest on a phase boundary (a state
    where the labels on either side pointed opposite ways and averaged to zero).
    """
    tcp, obj, goal = p["tcp"], p["obj"], p["goal"]
    d = goal[:2] - obj[:2]
    d /= np.linalg.norm(d) + 1e-9
    perp = np.array([-d[1], d[0]])
    rel = tcp[:2] - obj[:2]
    along, across = rel @ d, rel @ perp
    start = obj[:2] - PUSH_BEHIND * d
    # each factor goes 0 -> 1 over ~1-2 cm: past the cube's back face, on the push line,
    # below the cube's top; pushing is their product
    behind = _ramp(-along, CUBE_HALF, CUBE_HALF + 0.01)
    aligned = _ramp(-abs(across), -0.03, -0.01)
    low = _ramp(-tcp[2], -(CUBE_HALF + 0.02), -(CUBE_HALF + 0.01))
    push = behind * aligned * low
    xy = start + push * (goal[:2] - CUBE_HALF * d - start)
    # travel at APPROACH_HEIGHT until well behind the cube, then come down to push height
    clear = max(_ramp(-along, CUBE_HALF + 0.005, PUSH_BEHIND), push)
    z = APPROACH_HEIGHT + clear * (CUBE_HALF - APPROACH_HEIGHT)
    return np.array([*xy, z])


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 for x ≤ lo, 1 for x ≥ hi, linear between."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


ALIGN_XY = (0.02, 0.005)
"""Horizontal distance (m) from the cube at which descent starts / aims at its lowest."""
DESCEND_PAST = 0.015
"""Once lined up, the descent aims this far (m) below the cube's centre (the fingers stop on
the table first). Aiming past a phase's end makes its label large where the next phase
starts: a student whose mean action is a few hundredths off does not come to rest short of
the switch, where the label of a controller aiming exactly at the switch would be ~0."""
CLOSE_XY = (0.02, 0.01)
"""Horizontal distance (m) from the cube at which the gripper starts / has finished closing
(with CLOSE_Z): the fingers straddle a 4 cm cube well before the centre."""
CLOSE_Z = (0.02, 0.008)
"""Height (m) of the gripper above the cube's centre at which it starts / has finished
closing."""
HELD_WIDTH = (0.055, 0.045)
"""Gripper width (m; open ≈ 0.08, closed on the 4 cm cube ≈ 0.04) at which the cube starts to
count / fully counts as held (together with HELD_DIST)."""
HELD_DIST = (0.03, 0.02)
"""Gripper-to-cube distance (m) beyond / within which the cube is not / is held."""
CARRY_PAST = 0.02
"""The carry target lies this far (m) past the goal along the cube's way there (see
DESCEND_PAST); success needs the cube within 2.5 cm of the goal."""


def _grasp(p: dict[str, Any]) -> tuple[np.ndarray, float, float, float]:
    """The pick controller's first half: (approach target, close in [0, 1], held in [0, 1],
    yaw command in [-1, 1]) — hover over the cube, descend, close as the fingers straddle it."""
    tcp, obj = p["tcp"], p["obj"]
    # the cube looks the same every 90°: sin(4Δ)/4 ≈ Δ near 0 and is continuous everywhere
    # (0 at ±45°, where either way round is as short)
    delta = _yaw(p["obj_q"]) - _yaw(p["tcp_q"])
    dist = float(np.linalg.norm(tcp - obj))
    held = (_ramp(-p["gripper_width"], -HELD_WIDTH[0], -HELD_WIDTH[1])
            * _ramp(-dist, -HELD_DIST[0], -HELD_DIST[1]))
    yaw = (1.0 - held) * float(np.sin(4 * delta)) / 4 / (np.pi / 4)
    xy = float(np.linalg.norm(tcp[:2] - obj[:2]))
    aligned = _ramp(-xy, -ALIGN_XY[0], -ALIGN_XY[1])
    approach = np.array([*obj[:2], obj[2] + HOVER * (1.0 - aligned) - DESCEND_PAST * aligned])
    close = max(_ramp(-xy, -CLOSE_XY[0], -CLOSE_XY[1])
                * _ramp(-(tcp[2] - obj[2]), -CLOSE_Z[0], -CLOSE_Z[1]), held)
    return approach, close, held, yaw


def _pick(p: dict[str, Any]) -> tuple[np.ndarray, float, float]:
    """(target, gripper, yaw command in [-1, 1]): hover over the cube, descend, close, carry.

    A continuous function of the state (controller version 4): the height over the cube falls
    as the gripper lines up in xy, the gripper closes as it straddles the cube, and the target
    moves from the cube to (just past) the goal as the cube becomes held (a closed width near
    the cube's, close to it). Every phase aims past its end (DESCEND_PAST, CARRY_PAST), so its
    label stays large until the next phase takes over. Version 3 switched between these phases
    at hard thresholds, aimed exactly at them, and flipped its yaw label from +1 to -1 at
    ±45°; a student regressing on it hovered at a phase boundary and never grasped.
    """
    tcp, obj, goal = p["tcp"], p["obj"], p["goal"]
    approach, close, held, yaw = _grasp(p)
    way = goal - obj
    carry = goal + (tcp - obj) + CARRY_PAST * way / (np.linalg.norm(way) + 0.05)
    target = (1.0 - held) * approach + held * carry
    gripper = GRIPPER_OPEN + close * (GRIPPER_CLOSED - GRIPPER_OPEN)
    return target, gripper, yaw


STACK_CLEAR = 0.03
"""Height (m) by which the held cube clears the green cube's top before it moves over it."""
STACK_XY = (0.02, 0.005)
"""Horizontal distance (m) between the cubes at which lowering starts / aims at its lowest."""
STACK_PAST = 0.01
"""Lowering aims this far (m) below the resting height (see DESCEND_PAST)."""
ON_XY = (0.02, 0.008)
ON_Z = (0.015, 0.005)
"""Horizontal distance and height error (m) of the red cube over its resting place on the
green one at which the gripper starts / has finished letting go."""
RETREAT = 0.08
"""Height (m) above the stacked cube to which the gripper withdraws."""


def _stack(p: dict[str, Any]) -> tuple[np.ndarray, float, float]:
    """(target, gripper, yaw): grasp the red cube as `_pick` does, lift it clear of the green
    cube, move over it, lower it and let go, then withdraw upwards.

    Continuous like `_pick` (controller version 1): the carry target rises before it moves
    sideways (so the held cube does not sweep the green one), and lowers as the cubes line up;
    `on` (the red cube resting on the green one) opens the gripper and sends the gripper up, so
    a released cube is not grasped again.
    """
    tcp, obj, base = p["tcp"], p["obj"], p["goal"]
    approach, close, held, yaw = _grasp(p)
    rest_z = base[2] + 2 * CUBE_HALF  # the red cube's centre when it sits on the green one
    lifted = _ramp(obj[2], rest_z + 0.005, rest_z + STACK_CLEAR)
    xy = (1.0 - lifted) * obj[:2] + lifted * base[:2]
    over = _ramp(-float(np.linalg.norm(obj[:2] - base[:2])), -STACK_XY[0], -STACK_XY[1])
    z = rest_z + STACK_CLEAR * (1.0 - over) - STACK_PAST * over
    carry = np.array([*xy, z]) + (tcp - obj)
    on = (_ramp(-float(np.linalg.norm(obj[:2] - base[:2])), -ON_XY[0], -ON_XY[1])
          * _ramp(-abs(obj[2] - rest_z), -ON_Z[0], -ON_Z[1]))
    retreat = np.array([*tcp[:2], obj[2] + RETREAT])
    target = (1.0 - on) * ((1.0 - held) * approach + held * carry) + on * retreat
    close = (1.0 - on) * close
    gripper = GRIPPER_OPEN + close * (GRIPPER_CLOSED - GRIPPER_OPEN)
    return target, gripper, (1.0 - on) * yaw


def _yaw(q: np.ndarray) -> float:
    """Rotation about z of a wxyz quaternion."""
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
