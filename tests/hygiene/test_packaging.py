"""The operator's distribution installs and runs on its own: `pip install .` into a fresh venv, then
`modelplane render`. Nothing of the runtime's distribution is installed; the contract the two share
comes packaged in each (runtime-image/modelplane_contract).

It installs from the package index through pip's cache (warm: about 12 s of CPU, most of it pip).
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import yaml

from tests.support.cluster import REPO_ROOT


def source_tree(dest: Path) -> Path:
    """The files a fresh clone has (with the work in progress), so that setuptools' build/ and
    egg-info land outside the work tree and no stale build/lib file can mask a missing one."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():  # deleted but not yet committed files are still listed
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return dest


def test_the_operator_installs_alone_and_renders(tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir)  # without pip: the test venv's pip installs into it (pip --python), faster
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--disable-pip-version-check",
         "--no-compile", "-c", str(tree / "runtime-image" / "constraints.txt"), str(tree)],
        check=True,
        timeout=600,
    )  # fmt: skip

    runtime_there = subprocess.run(
        [str(python), "-c", "import importlib.util; print(importlib.util.find_spec('modelplane_runtime'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert runtime_there.stdout.strip() == "None", "the runtime's package came along with the operator"

    rendered = subprocess.run(
        [str(env_dir / "bin" / "modelplane"), "render", str(REPO_ROOT / "examples" / "sklearn-s3.yaml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert {"Deployment", "Service"} <= kinds, kinds


def test_no_bench_module_shadows_the_standard_library() -> None:
    """The bench runs some of its files as scripts (the servers it compares against run
    tests/bench/kserve_*.py), which puts tests/bench first on sys.path: a file there named like a
    standard module (operator.py did) replaces that module for everything the script imports."""
    names = {path.stem for path in (REPO_ROOT / "tests" / "bench").glob("*.py")}
    assert not names & set(sys.stdlib_module_names)
