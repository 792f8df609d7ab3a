"""Errors the runtime shows to users: each names what was wrong and how to fix it."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base of every error the runtime raises on purpose."""


class ModelLoadError(RuntimeFailure):
    """The model could not be loaded (missing artifact, unsafe format without trust, bad file)."""


class InvalidInput(RuntimeFailure):
    """A request the client must fix (HTTP 400, gRPC INVALID_ARGUMENT)."""


class ModelNotFound(RuntimeFailure):
    """The request names a model this server does not serve (HTTP 404, gRPC NOT_FOUND)."""


class ModelNotReady(RuntimeFailure):
    """The model is still loading or warming up (HTTP 503, gRPC UNAVAILABLE)."""


class Overloaded(RuntimeFailure):
    """The batch queue is full: the client should retry later (HTTP 503 with Retry-After)."""


class ModelError(RuntimeFailure):
    """The model itself failed on an input it accepted (HTTP 500, gRPC INTERNAL)."""
