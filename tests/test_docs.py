"""The documentation stays true: generated parts are current, examples still work."""

from __future__ import annotations

import re
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


_CITED_TEST = re.compile(r"(tests/test_\w+\.py)::(\w+)")
_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_docs_cite_tests_that_exist() -> None:
    """Every ``tests/file.py::test`` that README.md or docs/ names is a test in that file."""
    cited = {
        (doc.name, m.group(1), m.group(2))
        for doc in _DOCS
        for m in _CITED_TEST.finditer(doc.read_text(encoding="utf-8"))
    }
    assert len(cited) > 50  # docs/security.md alone names dozens
    missing = []
    for doc, path, name in sorted(cited):
        source = REPO / path
        text = source.read_text(encoding="utf-8") if source.exists() else ""
        if not re.search(rf"^(async )?def {name}\(", text, re.MULTILINE):
            missing.append(f"{doc}: {path}::{name}")
    assert missing == []


def test_docs_and_code_cite_only_files_of_the_repository() -> None:
    """Every Markdown file the code and docs cite is one of the repository's (what they rely on
    about AMI is in docs/ami.md), so the project stands on its own."""
    tracked = [*REPO.glob("screener/**/*.py"), *REPO.glob("tests/*.py"), *_DOCS]
    ours = {p.name for p in REPO.rglob("*.md") if ".venv" not in p.parts}
    cited = {
        (p.name, name)
        for p in tracked
        for name in re.findall(r"\b[\w.-]+\.md\b", p.read_text(encoding="utf-8"))
    }
    assert {(where, name) for where, name in cited if name not in ours} == set()
    assert (REPO / "docs" / "ami.md").exists()


def test_systemd_unit_runs_what_the_readme_installs() -> None:
    """docs/screener.service starts the screener from the virtual environment the README makes."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    unit = (REPO / "docs" / "screener.service").read_text(encoding="utf-8")
    venv = re.search(r"python3 -m venv (\S+) ", readme)
    assert venv is not None
    (exec_start,) = re.findall(r"^ExecStart=(\S+)", unit, re.MULTILINE)
    assert exec_start == f"{venv.group(1)}/bin/screener"


def test_secret_file_mode_is_the_same_everywhere() -> None:
    """README.md and docs/security.md give the AMI secret file one mode."""
    modes = {
        doc.name: re.findall(r"mode (0[0-7]{3})", doc.read_text(encoding="utf-8"))
        for doc in (REPO / "README.md", REPO / "docs" / "security.md")
    }
    assert modes == {"README.md": ["0400"], "security.md": ["0400"]}
