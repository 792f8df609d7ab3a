"""The arrows of the design: handlers -> reconcile -> render/status/kube -> spec, and render/status pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modelplane"
PURE = sorted([*(PACKAGE / "render").glob("*.py"), PACKAGE / "status.py", PACKAGE / "spec.py"])
FORBIDDEN_IN_PURE = (
    "modelplane.kube",
    "modelplane.reconcile",
    "modelplane.handlers",
    "modelplane.config",
    "kopf",
    "kubernetes",
)


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_modules_do_no_io(path: Path) -> None:
    bad = {name for name in imports(path) if name.startswith(FORBIDDEN_IN_PURE)}
    assert not bad, f"{path.name} imports {bad}"


def test_only_kube_talks_to_the_api() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name != "kube.py":
            assert not any(
                n.startswith(("kubernetes.client", "kubernetes.dynamic")) for n in imports(path)
            ), path


def test_only_handlers_and_cli_use_kopf() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("handlers.py", "cli.py"):
            assert not any(n.startswith("kopf") for n in imports(path)), path


def test_handlers_register_the_md_and_every_child_kind() -> None:
    import kopf
    from modelplane import handlers

    registry = kopf.get_default_registry()
    watched = {(h.selector.group, h.selector.any_name) for h in registry._watching.get_all_handlers()}  # noqa: SLF001
    assert ("modelplane.io", "modeldeployments") in watched
    for group, _version, plural in handlers.CHILD_RESOURCES:
        assert (group, plural) in watched
    assert not list(registry._changing.get_all_handlers())  # noqa: SLF001
    assert not list(registry._spawning.get_all_handlers())  # noqa: SLF001
