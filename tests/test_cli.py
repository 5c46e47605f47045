"""Smoke tests of the `rpd` entry point itself."""

import json
import subprocess
import sys

from click.testing import CliRunner

import rpd
from rpd.cli import main
from rpd.data.tasks import TASKS


def test_version_from_console_script() -> None:
    out = subprocess.run([sys.executable, "-m", "rpd.cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"rpd, version {rpd.__version__}"


def test_help_lists_command_groups() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for word in ("demos", "tasks", "--verbose", "--version"):
        assert word in result.output


def test_demos_help_lists_subcommands() -> None:
    result = CliRunner().invoke(main, ["demos", "--help"])
    assert result.exit_code == 0
    for word in ("generate", "import", "info"):
        assert word in result.output


def test_tasks_json_has_an_instruction_for_every_required_task() -> None:
    result = CliRunner().invoke(main, ["tasks", "--json"])
    assert result.exit_code == 0
    tasks = {t["env_id"]: t for t in json.loads(result.output)}
    required = ["PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "LiftPegUpright-v1",
                "PegInsertionSide-v1", "PlugCharger-v1", "PullCubeTool-v1", "PokeCube-v1",
                "RollBall-v1"]
    assert set(required) <= set(tasks)
    assert all(len(tasks[t]["instruction"].split()) >= 4 for t in required)
    assert tasks["PickCube-v1"]["motion_planner"] and not tasks["RollBall-v1"]["motion_planner"]
    assert set(tasks) == set(TASKS)


def test_phase_bars_show_one_phase_at_a_time_and_close_each_when_done() -> None:
    from rpd.commands._common import PhaseBars

    with PhaseBars({"render": ("render", "frame"), "fit": ("fit", "step")}) as bars:
        bars.update("render", 64, 100)
        first = bars.bar
        assert first is not None and first.bar.total == 100
        bars.update("fit", 20, 60)  # a new phase closes the previous bar
        assert first.bar is None and bars.bar is not None and bars.bar.bar.n == 20
        bars.update("fit", 40, 60)  # its total reached: closed, so its rate is its own
        assert bars.bar is None
