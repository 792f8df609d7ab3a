"""The optimize step's result, kept by the artifact's digest beside the artifact in its store.

The first pod of a digest converts, quantizes and measures; it writes the ONNX form and then its
record (the record last: a reader that finds it finds a whole result) under
``<uri without a trailing '/'>.modelplane-optimized/<key>/``, outside any prefix the model is pulled
from. Later pods take both from there and re-run only the gate (deterministic, on the same sample):
what they serve is checked against the original in every pod, and the figures stay the same, so
status does not change. Stores written here: s3:// (with the pull's credentials, which then need
write access to that key) and local paths; for the others each pod optimizes on its own volume.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any, Protocol

import modelplane_contract as contract

from modelplane_runtime.storage.base import Settings

CACHE_SUFFIX = ".modelplane-optimized"


class CacheError(Exception):
    """The store could not be read or written; the step goes on without it (and says so)."""


class ResultCache(Protocol):
    where: str

    def get(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        """The record and the ONNX form kept under ``key``, or None."""
        ...

    def put(self, key: str, record: dict[str, Any], graph: bytes) -> None: ...


class S3Cache:
    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        from modelplane_runtime.storage import s3

        self.bucket, self.prefix = bucket, prefix
        self.where = f"s3://{bucket}/{prefix}"
        self._client = s3.client(settings)

    def _key(self, key: str, name: str) -> str:
        return posixpath.join(self.prefix, key, name)

    def get(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from modelplane_runtime.storage.s3 import NOT_FOUND_CODES, error_code

        try:
            body = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key, contract.OPTIMIZED_RECORD_FILE)
            )
            record = json.loads(body["Body"].read())
            graph = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key, contract.OPTIMIZED_MODEL_FILE)
            )
            return record, graph["Body"].read()
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise CacheError(f"{self.where}: {error_code(error)}") from error
        except (BotoCoreError, ValueError) as error:
            raise CacheError(f"{self.where}: {error}") from error

    def put(self, key: str, record: dict[str, Any], graph: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from modelplane_runtime.storage.s3 import error_code

        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key, contract.OPTIMIZED_MODEL_FILE), Body=graph
            )
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key, contract.OPTIMIZED_RECORD_FILE),
                Body=json.dumps(record, sort_keys=True).encode(),
            )
        except ClientError as error:
            raise CacheError(f"{self.where}: {error_code(error)}") from error
        except BotoCoreError as error:
            raise CacheError(f"{self.where}: {error}") from error


class DirCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def get(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        folder = self.root / key
        try:
            record = json.loads((folder / contract.OPTIMIZED_RECORD_FILE).read_text())
            return record, (folder / contract.OPTIMIZED_MODEL_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise CacheError(f"{folder}: {error}") from error

    def put(self, key: str, record: dict[str, Any], graph: bytes) -> None:
        folder = self.root / key
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / contract.OPTIMIZED_MODEL_FILE).write_bytes(graph)
            (folder / contract.OPTIMIZED_RECORD_FILE).write_text(json.dumps(record, sort_keys=True))
        except OSError as error:
            raise CacheError(f"{folder}: {error}") from error


def cache_for(uri: str, settings: Settings) -> ResultCache | None:
    """Where results of ``uri`` are kept, or None when its store is not one modelplane writes."""
    base = uri.rstrip("/") + CACHE_SUFFIX
    if uri.startswith("s3://"):
        bucket, _, prefix = base.removeprefix("s3://").partition("/")
        return S3Cache(bucket, prefix, settings)
    if uri.startswith("file://"):
        return DirCache(Path(base.removeprefix("file://")))
    if "://" not in uri:
        return DirCache(Path(base))
    return None
