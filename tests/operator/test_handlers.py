"""kopf settings of handlers.py that need no cluster."""

from __future__ import annotations

import kopf
from modelplane.handlers import NoEssenceStorage


def test_kopf_builds_no_essence_of_the_objects() -> None:
    """No on.create/on.update handler reads it (tests/chart/test_rbac.py checks kopf's registry), so
    no deep copy of each body is made at each event, and nothing is stored in our objects."""
    body = kopf.Body(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "annotations": {"operator.modelplane.io/last-handled-configuration": '{"spec": {}}'},
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
    storage = NoEssenceStorage()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch
