"""What ``pip install .`` installs: the product, and nothing that drives calls."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel: several seconds

REPO = Path(__file__).resolve().parent.parent

# An AMI action dict that originates a call, as the test probe (tests/probe.py) builds them.
_ORIGINATE = re.compile(r"""["']Action["']\s*:\s*["']Originate["']""")


def _checkout(dest: Path) -> Path:
    """A copy of the files a clean checkout has (tracked, plus new files not yet ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():  # a file deleted but not yet committed is not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[zipfile.ZipFile, str]:
    """The wheel built from a clean copy of the checkout, and the build's output."""
    source = _checkout(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build must work offline, with the setuptools of the dev install.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = out.glob("screener-*.whl")
    return zipfile.ZipFile(path), built.stdout + built.stderr


def test_wheel_holds_only_the_screener_package(wheel: tuple[zipfile.ZipFile, str]) -> None:
    """Every file of the wheel is the screener package or its metadata; no probe, no tests."""
    archive, _ = wheel
    names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"screener", "screener-0.1.0.dist-info"}, sorted(top)
    assert "screener/ami.py" in names
    # The store and the CLI are packages (one module per concern): every module is in the wheel.
    for package in ("store", "cli"):
        folder = REPO / "screener" / package
        modules = {f"screener/{package}/{p.name}" for p in folder.glob("*.py")}
        assert f"screener/{package}/__init__.py" in modules, sorted(modules)
        assert modules <= set(names), sorted(modules - set(names))
    # The web console's pages and assets are package data: without them `screener web` fails.
    assert "screener/web/templates/base.html" in names and "screener/web/static/app.js" in names
    assert not [n for n in names if "probe" in n or n.startswith(("tests/", "bench/"))]


def test_no_installed_module_can_originate_a_call(wheel: tuple[zipfile.ZipFile, str]) -> None:
    """No module in the wheel builds an ``Originate`` action (only tests/probe.py does)."""
    archive, _ = wheel
    sources = {n: archive.read(n).decode() for n in archive.namelist() if n.endswith(".py")}
    assert sources
    assert [n for n, text in sources.items() if _ORIGINATE.search(text)] == []
    # The pattern does find the probe's Originate, so the check above can fail.
    assert _ORIGINATE.search((REPO / "tests" / "probe.py").read_text(encoding="utf-8"))


def test_wheel_metadata_uses_the_spdx_license(wheel: tuple[zipfile.ZipFile, str]) -> None:
    """The license is an SPDX expression, and the build warns about nothing deprecated."""
    archive, output = wheel
    metadata = archive.read("screener-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "deprecat" not in output.lower(), output
    entry_points = archive.read("screener-0.1.0.dist-info/entry_points.txt").decode()
    assert "screener = screener.cli:main" in entry_points
