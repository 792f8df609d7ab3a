"""Fixtures for the local cluster's own tests."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.cluster import REPO_ROOT, make_print


@pytest.fixture(scope="session")
def echo_image(cluster: object) -> str:
    """The test HTTP server image, built here and imported into the node (`make image`)."""
    subprocess.run(
        ["make", "-s", "--no-print-directory", "image", "NAME=http-echo"], cwd=REPO_ROOT, check=True
    )
    return make_print("image-ref", "NAME=http-echo")
