"""Fixtures for the local cluster's own tests."""

from __future__ import annotations

from tests.support.images import echo_image

__all__ = ["echo_image"]
