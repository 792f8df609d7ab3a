"""docs/crd-reference.md: generated from the CRD, complete, and its examples accepted for real."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml
from modelplane import spec

from tests.support.cluster import REPO_ROOT, Cluster

PAGE = REPO_ROOT / "docs" / "crd-reference.md"


def load_generator() -> ModuleType:
    """hack/crd-reference.py as a module (its name has a hyphen, like the repo's other hack scripts)."""
    path = REPO_ROOT / "hack" / "crd-reference.py"
    module_spec = importlib.util.spec_from_file_location("crd_reference", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up while the file runs
    module_spec.loader.exec_module(module)
    return module


generator = load_generator()
CRD = generator.load_crd(generator.CRD)
SECTIONS = generator.load_sections(generator.EXAMPLES)
_, ROOT = generator.version_schema(CRD)


def schema_paths(path: str, schema: dict[str, Any]) -> Iterator[str]:
    """Every property path below PATH, walked here independently of the generator."""
    yield path
    items = schema.get("items", {})
    if "properties" in items:
        for name, child in items["properties"].items():
            yield from schema_paths(f"{path}[].{name}", child)
    for name, child in schema.get("properties", {}).items():
        yield from schema_paths(f"{path}.{name}", child)


def rule_messages(node: Any) -> Iterator[str]:
    """The message of every CEL rule anywhere in the schema."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield rule["message"]
        for child in node.values():
            yield from rule_messages(child)
    elif isinstance(node, list):
        for child in node:
            yield from rule_messages(child)


def model_deployments() -> list[tuple[str, dict[str, Any]]]:
    """(section and example number, manifest) of every ModelDeployment the page shows."""
    found: list[tuple[str, dict[str, Any]]] = []
    for section in SECTIONS:
        for number, example in enumerate(section.examples, 1):
            found.extend(
                (f"{section.title} #{number}", document)
                for document in yaml.safe_load_all(example.yaml)
                if document and document.get("kind") == "ModelDeployment"
            )
    return found


EXAMPLES = model_deployments()


def test_page_is_what_the_generator_writes() -> None:
    expected = generator.render(CRD, SECTIONS)
    assert PAGE.read_text() == expected, (
        "docs/crd-reference.md differs from the CRD and hack/crd-reference-examples.yaml: "
        "run `make crd-reference` and commit the page"
    )


def test_every_spec_and_status_field_has_an_entry() -> None:
    page = PAGE.read_text()
    paths = [p for name in ("spec", "status") for p in schema_paths(name, ROOT["properties"][name])]
    assert len(paths) > 80
    missing = [path for path in paths if f"\n### `{path}`\n" not in page]
    assert not missing, f"fields without an entry: {missing}"


def test_every_rule_message_and_default_is_on_the_page() -> None:
    page = PAGE.read_text()
    messages = list(rule_messages(ROOT))
    assert len(messages) > 15
    missing = [message for message in messages if f"“{message}”" not in page]
    assert not missing, f"rule messages not on the page: {missing}"
    # spec.runtime.protocols has no schema default (it depends on the format): its text gives it.
    assert "Defaults to [v1, v2, grpc], or [openai] for format gguf" in page
    assert "- Allowed values: `RollingUpdate`, `Canary`" in page


@pytest.mark.parametrize(("where", "manifest"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_examples_parse_with_the_operators_parser(where: str, manifest: dict[str, Any]) -> None:
    parsed = spec.parse(manifest)
    assert parsed.name == manifest["metadata"]["name"]


def test_every_section_has_an_example_model_deployment() -> None:
    shown = {where.rsplit(" #", 1)[0] for where, _ in EXAMPLES}
    assert shown == {section.title for section in SECTIONS}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m["spec"]["model"].update(url="s3://b/k"), "spec.model.url is not a field"),
        (lambda m: m["spec"].update(replicas="2"), "spec.replicas is '2', not of type integer"),
        (lambda m: m["spec"]["model"].update(format="keras"), "spec.model.format is 'keras'"),
        (lambda m: m["spec"]["model"].pop("uri"), "spec.model.uri is required"),
        (lambda m: m["spec"]["model"].update(allowPickle="yes"), "spec.model.allowPickle is 'yes'"),
    ],
)
def test_an_example_off_the_schema_is_refused(change: Any, named: str) -> None:
    manifest = copy.deepcopy(EXAMPLES[0][1])
    change(manifest)
    with pytest.raises(generator.ReferenceBuildError, match=named):
        generator.check_example(manifest, ROOT, "example")


def test_a_field_in_no_section_is_refused() -> None:
    without_status = [s for s in SECTIONS if "status" not in s.paths]
    with pytest.raises(generator.ReferenceBuildError, match="field status is in no section"):
        generator.render(CRD, without_status)


@pytest.mark.e2e
@pytest.mark.parametrize(("where", "manifest"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_examples_pass_the_api_servers_validation(
    cluster: Cluster, namespace: str, where: str, manifest: dict[str, Any]
) -> None:
    """A server-side dry run: the installed CRD's schema and CEL rules accept every example."""
    body = copy.deepcopy(manifest)
    body["metadata"].pop("namespace", None)
    result = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-o", "name", "-f", "-", input=yaml.safe_dump(body)
    )
    assert result.stdout.strip() == f"modeldeployment.modelplane.io/{body['metadata']['name']}"


@pytest.mark.e2e
def test_a_documented_rule_message_is_what_the_api_server_answers(cluster: Cluster, namespace: str) -> None:
    """The page's messages are the API server's: a pvc:// model with a digest is refused with it."""
    body = copy.deepcopy(EXAMPLES[0][1])
    body["spec"]["model"].update(uri="pvc://models/onnx/model.onnx", digest="sha256:" + "0" * 64)
    result = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False
    )
    message = "spec.model.digest cannot be set for a pvc:// model: it is mounted, not pulled"
    assert result.returncode != 0
    assert message in result.stderr
    assert f"“{message}”" in PAGE.read_text()
