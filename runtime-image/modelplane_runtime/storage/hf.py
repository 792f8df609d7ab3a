"""``hf://ORG/REPO[@REVISION]``: every file of a Hugging Face Hub model repository.

huggingface_hub resolves the repository (its file list at a commit) and builds the file URLs and
auth headers; the files are then streamed like any HTTP file, so stall handling and retries are the
same as everywhere. ``HF_TOKEN`` is the token, ``HF_ENDPOINT`` the Hub (a mirror, or a test server).
Nothing is written to the Hub cache: the files go straight to the staging directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import modelplane_contract as contract
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers

from modelplane_runtime.storage.base import Listing, PullError, RemoteFile, Settings
from modelplane_runtime.storage.http import http_client, status_error, stream_url, translate_httpx


class HfBackend:
    def __init__(self, repo_id: str, revision: str | None, settings: Settings) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.settings = settings
        self.uri = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
        # Read at call time, not import time, so the variable set for this process always counts.
        self.endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
        self.token = os.environ.get("HF_TOKEN") or None
        self.client = http_client(settings)

    def list(self) -> Listing:
        api = HfApi(endpoint=self.endpoint, token=self.token)
        info = api.model_info(
            self.repo_id, revision=self.revision, files_metadata=True, timeout=self.settings.stall_seconds
        )
        # Pin every file to the commit the listing came from, so a push meanwhile cannot mix versions.
        commit = info.sha or self.revision
        files = [
            RemoteFile(
                sibling.rfilename,
                sibling.size,
                hf_hub_url(self.repo_id, sibling.rfilename, revision=commit, endpoint=self.endpoint),
            )
            for sibling in info.siblings or []
        ]
        if not files:
            raise PullError(contract.REASON_NOT_FOUND, f"{self.uri} holds no files")
        return Listing(files, single=False)

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        headers = build_hf_headers(token=self.token or False)
        return stream_url(self.client, remote.locator, self.settings, headers, "HF_TOKEN", offset, end)

    def close(self) -> None:
        self.client.close()

    def translate(self, error: Exception) -> PullError:
        if isinstance(error, GatedRepoError):
            return PullError(
                contract.REASON_ACCESS_DENIED, f"{self.uri} is gated: accept its terms and set HF_TOKEN"
            )
        if isinstance(error, RepositoryNotFoundError):
            status = error.response.status_code if error.response is not None else 404
            if status in (401, 403):
                return PullError(
                    contract.REASON_ACCESS_DENIED,
                    f"{self.uri}: HTTP {status}: not found or HF_TOKEN lacks access",
                )
            return PullError(contract.REASON_NOT_FOUND, f"{self.uri}: no such repository")
        if isinstance(error, RevisionNotFoundError | EntryNotFoundError):
            return PullError(contract.REASON_NOT_FOUND, f"{self.uri}: {type(error).__name__}")
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            return status_error(error.response.status_code, self.uri, "HF_TOKEN")
        return translate_httpx(error, self.uri, self.settings)
