"""The consumer directory: who may hold an API key, as the platform team's Secrets say (pure).

A consumer is one Secret in the consumer namespace (the operator's MODELPLANE_CONSUMER_NAMESPACE),
labelled ``modelplane.io/consumer``, named after the consumer, holding its API keys under the client
ids "<consumer>.1" and "<consumer>.2" (two, so a key is rotated without downtime), and optionally
annotated ``modelplane.io/groups: "team-a,premium"``. docs/consumers.md shows the shape.

The operator reads these Secrets' metadata only (names, labels, annotations): never a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from modelplane import spec as specs

LABEL_CONSUMER: Final = "modelplane.io/consumer"
ANNOTATION_GROUPS: Final = "modelplane.io/groups"
DEFAULT_NAMESPACE: Final = "modelplane-consumers"


@dataclass(frozen=True)
class Consumer:
    name: str  # the Secret's name
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Directory:
    """Every consumer Secret of the consumer namespace, sorted by name."""

    namespace: str
    consumers: tuple[Consumer, ...] = ()

    def resolve(self, names: Iterable[str]) -> Resolution:
        """The consumers that NAMES (consumer or group names) allow, and the names that are neither."""
        allowed: set[str] = set()
        unknown: list[str] = []
        for name in names:
            found = {c.name for c in self.consumers if c.name == name or name in c.groups}
            if not found:
                unknown.append(name)
            allowed |= found
        return Resolution(tuple(sorted(allowed)), tuple(unknown))


@dataclass(frozen=True)
class Resolution:
    allowed: tuple[str, ...]
    unknown: tuple[str, ...]


def directory(namespace: str, metadata: Iterable[Mapping[str, Any]]) -> Directory:
    """A directory from the consumer Secrets' metadata. A Secret whose name is not a consumer name
    (a dot in it, say) is no consumer: its keys could never be told apart from another's."""
    consumers = []
    for meta in metadata:
        name = str(meta.get("name") or "")
        if not specs.CONSUMER_NAME.match(name):
            continue
        raw = str((meta.get("annotations") or {}).get(ANNOTATION_GROUPS) or "")
        groups = frozenset(g.strip() for g in raw.split(",") if specs.CONSUMER_NAME.match(g.strip()))
        consumers.append(Consumer(name, groups))
    consumers.sort(key=lambda c: c.name)
    return Directory(namespace, tuple(consumers))
