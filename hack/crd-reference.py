#!/usr/bin/env python3
"""Write docs/crd-reference.md from the ModelDeployment CRD (`make crd-reference`).

Every field under spec and status comes from the CRD's OpenAPI schema: its type, default, allowed
values, length and range, the CEL rules that check it (its own and those of its parent that name
it) with their messages, and its description. The hand-written part, the sections with a sentence
and examples each, is hack/crd-reference-examples.yaml; every example is checked against the schema
here, so the page never shows a field the API server would drop or refuse by type.

    crd-reference.py            write the page
    crd-reference.py --check    exit 1 when the page differs from what would be written
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CRD: Final = REPO_ROOT / "crds" / "modeldeployments.modelplane.io.yaml"
EXAMPLES: Final = REPO_ROOT / "hack" / "crd-reference-examples.yaml"
OUTPUT: Final = REPO_ROOT / "docs" / "crd-reference.md"

Schema = Mapping[str, Any]

# CEL rules of these shapes are also summed up as a range or a pattern beside the rule itself.
_RANGE: Final = re.compile(r"^self >= (-?\d+) && self <= (-?\d+)$")
_MINIMUM: Final = re.compile(r"^self >= (-?\d+)$")
_PATTERN: Final = re.compile(r"^self\.matches\('([^']*)'\)$")


class ReferenceBuildError(Exception):
    """The CRD or the examples file cannot make the page; the message says what to fix."""


@dataclass(frozen=True)
class Rule:
    rule: str
    message: str


@dataclass(frozen=True)
class Field:
    path: str  # spec.runtime.env[].name: "[]" marks the items of an array
    schema: Schema
    required: bool
    sibling_rules: tuple[tuple[str, Rule], ...]  # (parent path, rule) of parent rules naming the field


@dataclass(frozen=True)
class Example:
    title: str | None
    yaml: str


@dataclass(frozen=True)
class Section:
    title: str
    paths: tuple[str, ...]
    text: str
    examples: tuple[Example, ...]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the page differs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        page = render(load_crd(CRD), load_sections(EXAMPLES))
    except ReferenceBuildError as error:
        print(f"crd-reference: {error}", file=sys.stderr)
        return 2
    output: Path = args.output
    if args.check:
        if not output.exists() or output.read_text() != page:
            print(f"{output} differs from the CRD: run `make crd-reference`", file=sys.stderr)
            return 1
        return 0
    output.write_text(page)
    print(f"wrote {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
    return 0


def load_crd(path: Path) -> Mapping[str, Any]:
    crd = yaml.safe_load(path.read_text())
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ReferenceBuildError(f"{path} is not a CustomResourceDefinition")
    return crd


def load_sections(path: Path) -> list[Section]:
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list):
        raise ReferenceBuildError(f"{path} must be a list of sections (title, paths, text, examples)")
    sections = []
    for index, item in enumerate(raw):
        where = f"{path.name}: section {index + 1}"
        missing = {"title", "paths", "text", "examples"} - set(item)
        if missing:
            raise ReferenceBuildError(f"{where} lacks {', '.join(sorted(missing))}")
        examples = tuple(Example(title=ex.get("title"), yaml=ex["yaml"]) for ex in item["examples"])
        sections.append(Section(item["title"], tuple(item["paths"]), item["text"].strip(), examples))
    return sections


def version_schema(crd: Mapping[str, Any]) -> tuple[Mapping[str, Any], Schema]:
    """The storage version and its OpenAPI schema."""
    [version] = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version, version["schema"]["openAPIV3Schema"]


def fields(root: Schema) -> list[Field]:
    """spec and status and every field below them, depth first in the schema's order."""
    top = root.get("properties", {})
    required = set(root.get("required", []))
    result: list[Field] = []
    for name in ("spec", "status"):
        result.extend(_walk(name, top[name], name in required, ()))
    return result


def _walk(
    path: str, schema: Schema, required: bool, sibling_rules: tuple[tuple[str, Rule], ...]
) -> Iterator[Field]:
    yield Field(path, schema, required, sibling_rules)
    holder, prefix = schema, path
    if schema.get("type") == "array" and "properties" in schema.get("items", {}):
        holder, prefix = schema["items"], f"{path}[]"
    own_rules = rules(holder)
    child_required = set(holder.get("required", []))
    for name, child in holder.get("properties", {}).items():
        naming = tuple((prefix, rule) for rule in own_rules if _names(rule.rule, name))
        yield from _walk(f"{prefix}.{name}", child, name in child_required, naming)


def _names(rule: str, name: str) -> bool:
    """The CEL rule reads field `name` of self."""
    return re.search(rf"\bself\.{re.escape(name)}\b", rule) is not None


def rules(schema: Schema) -> list[Rule]:
    return [
        Rule(item["rule"], item.get("message", "")) for item in schema.get("x-kubernetes-validations", [])
    ]


def type_text(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {type_text(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {type_text(schema['additionalProperties'])}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind) or "any"


def flow(value: Any) -> str:
    """A value as it would be written in a manifest, on one line; strings YAML would read otherwise
    ("True", "") in double quotes, as kubectl users write them."""
    text: str = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("...").strip()
    if isinstance(value, str) and text.startswith("'"):
        return json.dumps(value)
    return text


def facts(item: Field) -> list[str]:
    """The bullet lines of one field: everything the schema says about it except the description."""
    schema = item.schema
    lines = [f"Type: `{type_text(schema)}`" + (", required" if item.required else "")]
    if "default" in schema:
        lines.append(f"Default: `{flow(schema['default'])}`")
    if "enum" in schema:
        lines.append("Allowed values: " + ", ".join(f"`{flow(v)}`" for v in schema["enum"]))
    items = schema.get("items", {})
    if "enum" in items:
        lines.append("Allowed items: " + ", ".join(f"`{flow(v)}`" for v in items["enum"]))
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None or high is not None:
        lines.append("Length: " + _bounds(low, high))
    if "minItems" in schema or "maxItems" in schema:
        lines.append("Items: " + _bounds(schema.get("minItems"), schema.get("maxItems")))
    if schema.get("x-kubernetes-list-type") == "set":
        lines.append("Each item at most once.")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(f"`{key}`" for key in schema.get("x-kubernetes-list-map-keys", []))
        lines.append(f"One item per {keys}.")
    for rule in rules(schema):
        if match := _RANGE.match(rule.rule):
            lines.append(f"Range: {match[1]} to {match[2]}")
        elif match := _MINIMUM.match(rule.rule):
            lines.append(f"Minimum: {match[1]}")
        elif match := _PATTERN.match(rule.rule):
            lines.append(f"Pattern: `{match[1]}`")
    lines.extend(f"Rule: `{rule.rule}` {_message(rule)}" for rule in rules(schema))
    lines.extend(f"Rule on `{parent}`: `{rule.rule}` {_message(rule)}" for parent, rule in item.sibling_rules)
    return lines


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _message(rule: Rule) -> str:
    return f"fails with “{rule.message}”" if rule.message else "(no message: a failure quotes the rule)"


def description(schema: Schema) -> str:
    return " ".join(str(schema.get("description", "")).split())


def section_of(path: str, sections: Sequence[Section]) -> Section:
    """The section with the longest path containing the field."""
    best: tuple[int, Section] | None = None
    for section in sections:
        for prefix in section.paths:
            contains = path == prefix or path.startswith((f"{prefix}.", f"{prefix}[]"))
            if contains and (best is None or len(prefix) > best[0]):
                best = (len(prefix), section)
    if best is None:
        raise ReferenceBuildError(
            f"field {path} is in no section of {EXAMPLES.name}: add it (or a parent) to a section's paths"
        )
    return best[1]


def check_example(document: Any, root: Schema, where: str) -> None:
    """A ModelDeployment manifest follows the schema: known fields, types, enums, required fields.

    CEL rules are left to the API server and to the operator's parser (tests/docs runs both)."""
    if not isinstance(document, dict):
        raise ReferenceBuildError(f"{where}: a manifest must be a mapping")
    for name in ("spec", "status"):
        if name in document:
            _check(document[name], root["properties"][name], f"{where}: {name}")
    if "spec" not in document:
        raise ReferenceBuildError(f"{where}: spec is required")


_PYTHON_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _check(value: Any, schema: Schema, path: str) -> None:
    if schema.get("x-kubernetes-int-or-string"):
        expected: tuple[type, ...] = (int, str)
    else:
        expected = _PYTHON_TYPES.get(schema.get("type", ""), (object,))
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise ReferenceBuildError(f"{path} is {value!r}, not of type {type_text(schema)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ReferenceBuildError(f"{path} is {value!r}, not one of {schema['enum']}")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{path}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name in schema.get("required", []):
            if name not in value:
                raise ReferenceBuildError(f"{path}.{name} is required")
        for name, item in value.items():
            if properties is not None and name in properties:
                _check(item, properties[name], f"{path}.{name}")
            elif isinstance(extra, dict):
                _check(item, extra, f"{path}.{name}")
            else:
                raise ReferenceBuildError(
                    f"{path}.{name} is not a field of the CRD (the API server drops it)"
                )


def example_documents(example: Example) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(example.yaml) if doc is not None]


def anchors(headings: Sequence[str]) -> list[str]:
    """GitHub's anchors of the page's headings, in page order: lowercase, punctuation dropped, spaces
    to hyphens, and "-1", "-2", ... after a repeat (the section Status and the field `status`)."""
    seen: dict[str, int] = {}
    result = []
    for heading in headings:
        slug = re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.append(slug if count == 0 else f"{slug}-{count}")
    return result


def render(crd: Mapping[str, Any], sections: Sequence[Section]) -> str:
    version, root = version_schema(crd)
    kind = crd["spec"]["names"]["kind"]
    api_version = f"{crd['spec']['group']}/{version['name']}"
    by_section: dict[str, list[Field]] = {section.title: [] for section in sections}
    for item in fields(root):
        by_section[section_of(item.path, sections).title].append(item)
    for section in sections:
        if not by_section[section.title]:
            raise ReferenceBuildError(f"section {section.title!r} of {EXAMPLES.name} documents no field")
        _check_examples(section, kind, api_version, root)

    title = f"{kind} reference"
    headings = [title, "Contents"]
    for section in sections:
        headings += [section.title] + [f"`{item.path}`" for item in by_section[section.title]]
    anchor = dict(zip(headings, anchors(headings), strict=True))

    out = [
        "<!-- Generated by hack/crd-reference.py from crds/modeldeployments.modelplane.io.yaml and",
        "     hack/crd-reference-examples.yaml. Edit those, then run `make crd-reference`. -->",
        "",
        f"# {title}",
        "",
        description(root),
        "",
        *_overview(crd, version, api_version),
        "",
        "Each field below lists its type, default, allowed values, the rules the API server checks (their",
        "message is what `kubectl apply` answers when a rule fails) and its description; `kubectl explain`",
        "shows the same descriptions.",
        "",
        "## Contents",
        "",
    ]
    out += [f"- [{section.title}](#{anchor[section.title]})" for section in sections]
    for section in sections:
        out += ["", f"## {section.title}", "", section.text, ""]
        for example in section.examples:
            if example.title:
                out += [f"{example.title}:", ""]
            out += ["```yaml", example.yaml.rstrip("\n"), "```", ""]
        out += ["| field | type | default |", "| --- | --- | --- |"]
        for item in by_section[section.title]:
            link = f"[`{item.path}`](#{anchor[f'`{item.path}`']})"
            default = f"`{flow(item.schema['default'])}`" if "default" in item.schema else ""
            out.append(f"| {link} | {type_text(item.schema)} | {default} |")
        for item in by_section[section.title]:
            out += ["", f"### `{item.path}`", ""]
            text = description(item.schema)
            if text:
                out += [text, ""]
            out += [f"- {line}" for line in facts(item)]
    return "\n".join(out) + "\n"


def _check_examples(section: Section, kind: str, api_version: str, root: Schema) -> None:
    for number, example in enumerate(section.examples, 1):
        where = f"{EXAMPLES.name}: {section.title}, example {number}"
        for document in example_documents(example):
            if document.get("kind") != kind:
                continue
            if document.get("apiVersion") != api_version:
                raise ReferenceBuildError(f"{where}: apiVersion must be {api_version}")
            check_example(document, root, where)


def _overview(crd: Mapping[str, Any], version: Mapping[str, Any], api_version: str) -> list[str]:
    """Names, subresources and the columns of `kubectl get`."""
    names = crd["spec"]["names"]
    shorts = ", ".join(f"`{short}`" for short in names.get("shortNames", []))
    categories = ", ".join(f"`{category}`" for category in names.get("categories", []))
    out = [
        f"- API version: `{api_version}`, kind `{names['kind']}`, {crd['spec']['scope'].lower()}",
        f"- Names: `{names['plural']}`, `{names['singular']}`, short {shorts}"
        + (f"; categories {categories}" if categories else ""),
    ]
    subresources = version.get("subresources", {})
    if "scale" in subresources:
        scale = {key: path.removeprefix(".") for key, path in subresources["scale"].items()}
        out.append(
            f"- Scale subresource: `kubectl scale md NAME --replicas=N` sets `{scale['specReplicasPath']}`;"
            f" replicas read from `{scale['statusReplicasPath']}`,"
            f" the pods' selector from `{scale['labelSelectorPath']}`"
        )
    if "status" in subresources:
        out.append(
            "- Status subresource: `status` is written by the operator only; `kubectl apply` never changes it"
        )
    out += ["", "`kubectl get md` prints these columns (`-o wide` adds those marked wide):", ""]
    out += ["| column | from | shows |", "| --- | --- | --- |"]
    for column in version.get("additionalPrinterColumns", []):
        wide = " (wide)" if column.get("priority", 0) > 0 else ""
        shows = description(column) or "the age of the object"
        out.append(f"| {column['name']}{wide} | `{column['jsonPath']}` | {shows} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
