"""Errors the runtime shows to users: each names what was wrong and how to fix it.

``status`` is the HTTP code of each failure: REST answers with it, and every protocol records it
in the metrics, so dashboards read one set of codes for REST and gRPC alike.
"""

from __future__ import annotations

from typing import ClassVar


class RuntimeFailure(Exception):
    """Base of every error the runtime raises on purpose."""

    status: ClassVar[int] = 500


class ModelLoadError(RuntimeFailure):
    """The model could not be loaded (missing artifact, unsafe format without trust, bad file)."""


class InvalidInput(RuntimeFailure):
    """A request the client must fix (HTTP 400, gRPC INVALID_ARGUMENT)."""

    status = 400


class ModelNotFound(RuntimeFailure):
    """The request names a model this server does not serve (HTTP 404, gRPC NOT_FOUND)."""

    status = 404


class ModelNotReady(RuntimeFailure):
    """The model is still loading or warming up (HTTP 503, gRPC UNAVAILABLE)."""

    status = 503


class Overloaded(RuntimeFailure):
    """The batch queue is full: the client should retry later (HTTP 503 with Retry-After)."""

    status = 503


class RequestTimeout(RuntimeFailure):
    """The request took longer than the server's request timeout (HTTP 504, gRPC DEADLINE_EXCEEDED)."""

    status = 504


class ModelError(RuntimeFailure):
    """The model itself failed on an input it accepted (HTTP 500, gRPC INTERNAL)."""


class ClientGone(RuntimeFailure):
    """The client hung up before its request was answered (nothing is sent; recorded as 499)."""

    status = 499
