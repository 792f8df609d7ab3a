"""``gs://BUCKET/OBJECT`` and ``gs://BUCKET/PREFIX/``: the google-cloud-storage client.

Credentials are the client's usual ones (``GOOGLE_APPLICATION_CREDENTIALS``, workload identity).
With ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server in the tests) the client talks to the emulator
anonymously. The client's own retries are off (the generic retry loop owns them); the read timeout
is the stall limit; objects are read in ranged chunks, never whole into memory.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Any

import modelplane_contract as contract
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import storage

from modelplane_runtime.storage.base import (
    Listing,
    PullError,
    RemoteFile,
    Settings,
    bounded_chunks,
    stalled,
    transient,
)


class GcsBackend:
    def __init__(self, bucket: str, name: str, settings: Settings) -> None:
        self.bucket_name = bucket
        self.name = name
        self.settings = settings
        self.uri = f"gs://{bucket}/{name}"
        self.timeout = (settings.connect_seconds, settings.stall_seconds)
        self._client: Any = None

    @property
    def bucket(self) -> Any:
        if self._client is None:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                project = os.environ.get("GOOGLE_CLOUD_PROJECT", "modelplane")
                self._client = storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
            else:
                self._client = storage.Client()
        return self._client.bucket(self.bucket_name)

    def list(self) -> Listing:
        bucket = self.bucket
        if self.name and not self.name.endswith("/"):
            blob = bucket.get_blob(self.name, timeout=self.timeout, retry=None)
            if blob is not None:
                return Listing([RemoteFile(posixpath.basename(self.name), blob.size, self.name)], single=True)
        prefix = self.name.rstrip("/") + "/" if self.name else ""
        files = [
            RemoteFile(blob.name[len(prefix) :], blob.size, blob.name)
            for blob in bucket.list_blobs(prefix=prefix, timeout=self.timeout, retry=None)
            if not blob.name.endswith("/")
        ]
        if not files:
            raise PullError(
                contract.REASON_NOT_FOUND,
                f"no object {self.uri} and no objects under gs://{self.bucket_name}/{prefix}",
            )
        return Listing(files, single=False)

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        blob = self.bucket.blob(remote.locator)
        with blob.open(
            "rb", chunk_size=self.settings.chunk_bytes, timeout=self.timeout, retry=None
        ) as reader:
            reader.seek(offset)
            yield from bounded_chunks(reader.read, self.settings.chunk_bytes, offset, end)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def translate(self, error: Exception) -> PullError:
        if isinstance(error, gexc.NotFound):
            return PullError(contract.REASON_NOT_FOUND, f"{self.uri}: no such bucket or object")
        if isinstance(error, gexc.Forbidden | gexc.Unauthorized | DefaultCredentialsError):
            return PullError(
                contract.REASON_ACCESS_DENIED,
                f"{self.uri}: {type(error).__name__}: check the service account's access to the bucket",
            )
        if isinstance(error, requests.ReadTimeout):
            return stalled(self.settings.stall_seconds)
        if isinstance(error, gexc.ClientError):
            return PullError(contract.REASON_NOT_FOUND, f"{self.uri}: {error}")
        return transient(f"{self.uri}: {type(error).__name__}: {error}")
