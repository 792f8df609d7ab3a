"""What every storage backend implements, and the one error type a pull fails with.

A backend turns a URI into the list of files it names (one file, or every file under a prefix or
directory) and streams one file's bytes as chunks. Everything else (retries, stall handling,
hashing, progress, unpacking, placing the result) is generic and lives beside it, so a backend stays
a thin adapter over its client library. Each backend maps its client's exceptions to
:class:`PullError` with a reason from the contract, which decides the exit code.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import modelplane_contract as contract


class PullError(Exception):
    """A pull failed for REASON (a ``contract.REASON_*``); MESSAGE says what and how to fix it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    @property
    def permanent(self) -> bool:
        return self.reason in contract.PERMANENT_REASONS


def transient(message: str) -> PullError:
    return PullError(contract.REASON_TRANSIENT, message)


def stalled(stall_seconds: float) -> PullError:
    return transient(f"download stalled: no bytes for {stall_seconds:g}s")


@dataclass(frozen=True)
class Settings:
    """Knobs shared by all backends."""

    stall_seconds: float = 30.0  # a read that gets no bytes for this long is aborted (and retried)
    connect_seconds: float = 10.0
    chunk_bytes: int = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: RELPATH is where it lands under the destination, '/'-separated."""

    relpath: str
    size: int | None
    locator: str  # the backend's own address of the file (key, URL, path)


@dataclass(frozen=True)
class Listing:
    """What a URI names: one file (SINGLE) or the files under a prefix or directory."""

    files: list[RemoteFile]
    single: bool


class Backend(Protocol):
    def list(self) -> Listing:
        """The files the URI names; raises PullError (ModelNotFound when there are none)."""
        ...

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        """Streams the file's bytes from OFFSET on, in chunks (a retry resumes where a cut left off),
        up to END (exclusive; None: to the end of the file). A ranged download reads a large file as
        several [OFFSET, END) ranges at once.

        Client errors may escape; they go through translate()."""
        ...

    def translate(self, error: Exception) -> PullError:
        """Maps a client library's exception to a PullError (permanent or transient)."""
        ...

    def close(self) -> None:
        """Releases the client's connections."""
        ...


def byte_range(offset: int, end: int | None) -> str:
    """The HTTP Range header of bytes [OFFSET, END) (END None: to the end)."""
    return f"bytes={offset}-{'' if end is None else end - 1}"


def bounded_chunks(
    read: Callable[[int], bytes], chunk_bytes: int, offset: int, end: int | None
) -> Iterator[bytes]:
    """Chunks from READ (a file-like read positioned at OFFSET) until END or the end of the file."""
    while (size := chunk_bytes if end is None else min(chunk_bytes, end - offset)) > 0:
        chunk = read(size)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def safe_relpath(relpath: str, where: str) -> str:
    """RELPATH normalised, refused if it would land outside the destination (absolute, '..')."""
    normalised = posixpath.normpath(relpath.replace("\\", "/"))
    parts = normalised.split("/")
    if relpath.startswith("/") or normalised in (".", "") or ".." in parts:
        raise PullError(
            contract.REASON_UNSUPPORTED, f"{where} names the path {relpath!r}, which would land outside DEST"
        )
    return normalised
