"""The sha256 digest of what a pull fetched: of the file, or of a directory's manifest.

A single file's digest is ``sha256:`` and the hex sha256 of its bytes (for an archive, of the archive
as fetched, before unpacking): what ``sha256sum FILE`` prints.

A directory's (a prefix's, a repository's) digest is that of its manifest: one line per file,
``<hex sha256 of the file>  <relative path>\\n`` (two spaces, '/'-separated path), sorted by the
path's UTF-8 bytes, the pull record file left out; the digest is ``sha256:`` and the hex sha256 of
the manifest's UTF-8 bytes. It is what this prints inside the source directory (or inside DEST
after a pull, adding ``! -name .modelplane-pull.json`` to ``find``)::

    find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import modelplane_contract as contract

from modelplane_runtime.storage.base import PullError

PREFIX = "sha256:"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_digest(text: str) -> str:
    """A ``sha256:HEX`` digest, lower-cased; refuses anything else with a message naming the form."""
    digest = text.strip().lower()
    if not _DIGEST.fullmatch(digest):
        raise PullError(
            contract.REASON_INVALID_ARGUMENT,
            f"--digest {text!r} is not of the form sha256:<64 hex digits> (e.g. from `sha256sum FILE`)",
        )
    return digest


def file_digest(hex_sha256: str) -> str:
    return PREFIX + hex_sha256


def manifest(file_hashes: Mapping[str, str]) -> str:
    """The manifest text of files RELPATH -> hex sha256 (see the module docstring)."""
    ordered = sorted(file_hashes.items(), key=lambda item: item[0].encode())
    return "".join(f"{sha}  {relpath}\n" for relpath, sha in ordered)


def manifest_digest(file_hashes: Mapping[str, str]) -> str:
    return PREFIX + hashlib.sha256(manifest(file_hashes).encode()).hexdigest()


def hash_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(chunk_bytes):
            sha.update(chunk)
    return sha.hexdigest()


def directory_digest(root: Path, exclude: Iterable[str] = (contract.PULL_RECORD_FILE,)) -> str:
    """The manifest digest of every file under ROOT (for checking a pulled directory afterwards)."""
    skip = set(exclude)
    hashes = {
        p.relative_to(root).as_posix(): hash_file(p)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in skip
    }
    return manifest_digest(hashes)


def verify(expected: str | None, actual: str, what: str) -> None:
    if expected is not None and expected != actual:
        raise PullError(
            contract.REASON_DIGEST_MISMATCH, f"{what} has digest {actual}, expected {expected}; refusing it"
        )
