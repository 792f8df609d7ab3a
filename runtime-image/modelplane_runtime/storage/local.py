"""``file:///path`` and plain local paths: a file, or every file under a directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import modelplane_contract as contract

from modelplane_runtime.storage.base import (
    Listing,
    PullError,
    RemoteFile,
    Settings,
    bounded_chunks,
    transient,
)


class LocalBackend:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings

    def list(self) -> Listing:
        path = self.path
        if path.is_file():
            return Listing([RemoteFile(path.name, path.stat().st_size, str(path))], single=True)
        if path.is_dir():
            files = [
                RemoteFile(p.relative_to(path).as_posix(), p.stat().st_size, str(p))
                for p in sorted(path.rglob("*"))
                if p.is_file()
            ]
            if files:
                return Listing(files, single=False)
            raise PullError(contract.REASON_NOT_FOUND, f"directory {path} holds no files")
        raise PullError(contract.REASON_NOT_FOUND, f"no file or directory at {path}")

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        with Path(remote.locator).open("rb") as source:
            source.seek(offset)
            yield from bounded_chunks(source.read, self.settings.chunk_bytes, offset, end)

    def close(self) -> None:
        pass

    def translate(self, error: Exception) -> PullError:
        if isinstance(error, FileNotFoundError):
            return PullError(contract.REASON_NOT_FOUND, f"{error.filename}: no such file")
        if isinstance(error, PermissionError):
            return PullError(contract.REASON_ACCESS_DENIED, f"{error.filename}: permission denied")
        return transient(f"reading {self.path}: {error}")
