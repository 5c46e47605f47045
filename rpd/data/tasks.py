"""The registry of supported tasks and the instruction a VLA teacher is given for each."""

from __future__ import annotations

from dataclasses import dataclass

from rpd.errors import InputError

DEFAULT_CONTROL_MODE = "pd_ee_delta_pose"
"""7-D end-effector delta pose + gripper: the action space closest to what VLAs output."""


@dataclass(frozen=True)
class TaskSpec:
    """A supported task. ManiSkill's tabletop tasks ship no language, so rpd defines it.

    Attributes:
        env_id: ManiSkill environment id.
        instruction: Natural-language instruction given to a VLA teacher.
        motion_planner: Whether ManiSkill ships a motion-planning solution (`rpd demos generate`).
    """

    env_id: str
    instruction: str
    motion_planner: bool


TASKS: dict[str, TaskSpec] = {
    t.env_id: t
    for t in [
        TaskSpec("PickCube-v1", "pick up the red cube and move it to the goal", True),
        TaskSpec("PushCube-v1", "push the cube forward onto the red and white target", True),
        TaskSpec("PullCube-v1", "pull the cube back onto the red and white target", True),
        TaskSpec("StackCube-v1", "stack the red cube on top of the green cube", True),
        TaskSpec("LiftPegUpright-v1", "lift the peg lying on the table and stand it upright", True),
        TaskSpec(
            "PegInsertionSide-v1", "insert the peg into the hole of the box from the side", True
        ),
        TaskSpec("PlugCharger-v1", "plug the charger into the socket on the wall", True),
        TaskSpec("PullCubeTool-v1", "use the L-shaped tool to pull the cube closer", True),
        TaskSpec("PokeCube-v1", "use the peg to poke the cube onto the goal", False),
        TaskSpec("RollBall-v1", "push the ball so that it rolls into the goal region", False),
    ]
}


def get_task(env_id: str, option: str = "--env") -> TaskSpec:
    """Return the task spec for `env_id`, or raise an InputError listing the supported ids."""
    try:
        return TASKS[env_id]
    except KeyError:
        raise InputError(
            f"{option} {env_id!r}: unknown task; supported: {', '.join(TASKS)}"
        ) from None
