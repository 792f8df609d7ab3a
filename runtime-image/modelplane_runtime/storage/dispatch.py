"""From a URI to its backend: the one place that knows which scheme each backend serves.

Backends import their client library only when their scheme is used (boto3, google-cloud-storage
and huggingface_hub are slow to import and a pod pulls from one store).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import modelplane_contract as contract

from modelplane_runtime.storage.base import Backend, PullError, Settings

SCHEMES = ("s3://", "gs://", "http://", "https://", "file://", "hf://", "a local path")


def invalid(uri: str, why: str) -> PullError:
    return PullError(contract.REASON_INVALID_URI, f"{uri!r}: {why}; use one of {', '.join(SCHEMES)}")


def backend_for(uri: str, settings: Settings) -> Backend:
    if not uri.strip():
        raise invalid(uri, "empty URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "gs"):
        # Split by hand: object keys may hold '?' and '#', which a URL parser would cut off.
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        if not bucket:
            raise invalid(uri, "no bucket")
        if scheme == "s3":
            from modelplane_runtime.storage.s3 import S3Backend

            return S3Backend(bucket, key, settings)
        from modelplane_runtime.storage.gcs import GcsBackend

        return GcsBackend(bucket, key, settings)
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise invalid(uri, "no host")
        from modelplane_runtime.storage.http import HttpBackend

        return HttpBackend(uri, settings)
    if scheme == "hf":
        return _hf(uri, settings)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise invalid(uri, "file:// URIs name a local path (file:///abs/path)")
        from modelplane_runtime.storage.local import LocalBackend

        return LocalBackend(Path(unquote(parts.path)), settings)
    if scheme == "" or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        from modelplane_runtime.storage.local import LocalBackend

        return LocalBackend(Path(uri), settings)
    raise invalid(uri, f"unsupported scheme {scheme}://")


def _hf(uri: str, settings: Settings) -> Backend:
    """hf://ORG/REPO[@REVISION]."""
    rest = uri[len("hf://") :].strip("/")
    repo_id, _, revision = rest.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (_ and not revision):
        raise invalid(uri, "a Hub model is hf://ORG/REPO or hf://ORG/REPO@REVISION")
    from modelplane_runtime.storage.hf import HfBackend

    return HfBackend(repo_id, revision or None, settings)
