"""The documentation stays true: generated parts are current, examples still work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    """docs/cli.md matches what `screener --help` prints (regenerate with cog -r)."""
    result = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "--diff", "docs/cli.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_names_the_two_commands() -> None:
    """The README's two commands exist and are executable."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for command in ("scripts/demo", "scripts/test"):
        assert command in readme
        assert (REPO / command).stat().st_mode & 0o111
