"""scripts/setup.sh refuses a Python it cannot support with one clear line (issue 17)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SETUP = Path(__file__).parents[1] / "scripts" / "setup.sh"


def test_setup_refuses_python_3_13_with_one_line(tmp_path: Path) -> None:
    """Debian 13's python3 is 3.13, for which numpy < 2 (mplib's pin) has no wheels: the setup
    used to fail deep inside pip. A stand-in interpreter reports 3.13 (the real check runs)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, repo / "scripts" / "setup.sh")
    fake = tmp_path / "python3.13"
    fake.write_text("#!/bin/sh\n"
                    'case "$1" in --version) echo "Python 3.13.5";;\n'
                    "  -c) exec python3 -c 'import sys; sys.exit(1)';; esac\n")
    fake.chmod(0o755)
    # the system-package part finds everything installed (the suite runs after the setup)
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, capture_output=True,
                            text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake),
                                 "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "Python 3.13.5 is not supported" in errors[0], errors
    assert "PYTHON=python3.12" in errors[0]
    assert not (repo / ".venv").exists()
