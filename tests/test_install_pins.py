"""``constraints.txt`` pins what the tests run with, and ``deploy/install.sh`` installs by it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "deploy" / "pin_versions.py"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_constraints_match_the_installed_dependencies() -> None:
    result = _check(REPO / "constraints.txt")
    assert result.returncode == 0, (
        "constraints.txt differs from this virtualenv (run `python deploy/pin_versions.py` "
        "after changing a dependency):\n" + result.stderr
    )


def test_check_names_a_missing_a_stale_and_a_moved_pin(tmp_path: Path) -> None:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    dropped = next(line for line in pins if line.startswith("msgspec=="))
    moved = next(line for line in pins if line.startswith("ruff=="))
    edited = [line for line in pins if line not in (dropped, moved)]
    edited += ["ruff==0.0.1", "left-pad==1.0"]
    path = tmp_path / "constraints.txt"
    path.write_text("\n".join(edited) + "\n")
    result = _check(path)
    assert result.returncode == 1
    assert f"{dropped} is needed but not pinned" in result.stderr
    assert "left-pad==1.0 is pinned but no longer needed" in result.stderr
    assert f"ruff is pinned at 0.0.1 but {moved.split('==')[1]} is installed" in result.stderr


def test_install_script_installs_with_the_constraints() -> None:
    script = (REPO / "deploy" / "install.sh").read_text()
    commands = re.findall(r"-m pip install[^|]*?\|\|", script, flags=re.S)
    assert commands, "deploy/install.sh has no `pip install` command"
    for command in commands:
        assert '-c "$REPO_DIR/constraints.txt"' in command, command
    assert "constraints.txt -nt $VENV_STAMP" in script, "a new pin must re-run the install"
