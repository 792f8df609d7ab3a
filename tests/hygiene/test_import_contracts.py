"""import-linter, which `make lint` runs over our contracts, fails on a bad import and passes a good one.

Run on a fixture package so that this test cannot pass merely because our own code is clean.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    return tmp_path


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "contracts.toml"],
        cwd=project,  # lint-imports puts its working directory on sys.path: the fixture is importable
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_package_that_keeps_its_layers_passes(project: Path) -> None:
    result = lint_imports(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_one_import_upwards_breaks_the_contract(project: Path) -> None:
    base = project / "layered_fixture" / "base.py"
    base.write_text(base.read_text() + "\nfrom layered_fixture import front  # the bad import\n")
    result = lint_imports(project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    assert "layered_fixture.base -> layered_fixture.front" in result.stdout
