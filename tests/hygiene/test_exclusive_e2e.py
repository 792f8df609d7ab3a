"""make test-e2e runs the e2e tests in two workers and then, one at a time, the ones marked `exclusive`:
those that stop or replace what the others share. A test that does so unmarked would break the tests
running beside it at random, so this finds it from the source: what a test (or, for a module's own
fixtures and helpers, the module) names that disrupts the shared cluster."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# String constants whose presence in a test means it disrupts the others.
DISRUPTIVE_STRINGS = {
    "operator-down": "stops the host operator",
    "apiserver-restart": "restarts kube-apiserver",
    "s3-down": "stops the S3 server",
    "SIGKILL": "kills a shared process",
    "audit.log": "counts the whole cluster's requests",
    "MODELPLANE_PEERING_PRIORITY": "starts an operator that takes over from the host operator",
}
# Fixtures (parameters of a test) and helpers whose use means the same.
DISRUPTIVE_NAMES = {
    "no_host_operator": "stops the host operator",
    "host_operator_stopped": "stops the host operator",
    "http_models": "binds the fixed port the examples name",
    "xgboost_model": "binds the fixed port the examples name (through http_models)",
}


def _disruptions(node: ast.AST) -> set[str]:
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value in DISRUPTIVE_STRINGS:
            found.add(f"{sub.value!r} ({DISRUPTIVE_STRINGS[sub.value]})")
        elif isinstance(sub, ast.Attribute) and sub.attr == "SIGKILL":
            found.add(f"SIGKILL ({DISRUPTIVE_STRINGS['SIGKILL']})")
        elif isinstance(sub, ast.Name) and sub.id in DISRUPTIVE_NAMES:
            found.add(f"{sub.id} ({DISRUPTIVE_NAMES[sub.id]})")
        elif isinstance(sub, ast.arg) and sub.arg in DISRUPTIVE_NAMES:
            found.add(f"{sub.arg} ({DISRUPTIVE_NAMES[sub.arg]})")
        elif isinstance(sub, ast.Call):
            words = {a.value for a in sub.args if isinstance(a, ast.Constant)}
            if {"delete", "crd"} <= words:
                found.add("kubectl delete crd (removes every object of a cluster-wide kind)")
    return found


def _marks_exclusive(decorators: list[ast.expr]) -> bool:
    marks = (node for decorator in decorators for node in ast.walk(decorator))
    return any(isinstance(node, ast.Attribute) and node.attr == "exclusive" for node in marks)


def unmarked_disruptive_tests(source: str) -> list[str]:
    """The test functions of a module's SOURCE that disrupt the shared cluster without the mark (the
    module's own fixtures and helpers that do make the whole module need it)."""
    module = ast.parse(source)
    module_marks = [
        node.value
        for node in module.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)
    ]
    if _marks_exclusive(module_marks):
        return []
    problems = []
    for node in module.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        found = _disruptions(node)
        if not found:
            continue
        if not node.name.startswith("test_"):
            problems.append(f"{node.name} (a fixture or helper: mark the module) {sorted(found)}")
        elif not _marks_exclusive(node.decorator_list):
            problems.append(f"{node.name} {sorted(found)}")
    return problems


def test_every_disruptive_e2e_test_is_marked_exclusive() -> None:
    paths = [path for path in sorted(TESTS.rglob("test_*.py")) if "hygiene" not in path.parts]
    sources = {path: path.read_text() for path in paths}
    problems = {
        str(path.relative_to(TESTS)): found
        for path, source in sources.items()
        if "pytest.mark.e2e" in source
        for found in [unmarked_disruptive_tests(source)]
        if found
    }
    assert not problems, f"mark these @pytest.mark.exclusive (see pyproject's markers): {problems}"


def test_the_check_finds_an_unmarked_disruptive_test_and_accepts_a_marked_one() -> None:
    unmarked = 'def test_restart(cluster):\n    make("operator-down")\n'
    marked = '@pytest.mark.exclusive\ndef test_restart(cluster):\n    make("operator-down")\n'
    in_a_fixture = "def release(cluster):\n    with host_operator_stopped():\n        yield\n"
    module_marked = "pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]\n" + in_a_fixture
    [problem] = unmarked_disruptive_tests(unmarked)
    assert problem.startswith("test_restart")
    assert "stops the host operator" in problem
    assert unmarked_disruptive_tests(marked) == []
    assert unmarked_disruptive_tests(in_a_fixture)[0].startswith("release (a fixture or helper")
    assert unmarked_disruptive_tests(module_marked) == []
    assert unmarked_disruptive_tests("def test_port(xgboost_model):\n    pass\n")
