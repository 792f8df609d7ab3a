"""Test images `make images` builds into the node, as fixtures.

Registered once, by tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster, make, make_print


@pytest.fixture(scope="session")
def echo_image(cluster: Cluster) -> str:
    """The tests' small HTTP server image (tests/cluster/images/http-echo: Debian base with python3 and
    sh), built and imported into the node; its reference carries the content hash of its inputs."""
    make("image", "NAME=http-echo")
    return make_print("image-ref", "NAME=http-echo")
