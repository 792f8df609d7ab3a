"""``http://`` and ``https://``: one file per URL, streamed with httpx.

The read timeout is the stall limit, so a server that stops sending bytes is cut off after it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from urllib.parse import unquote, urlsplit

import httpx
import modelplane_contract as contract

from modelplane_runtime.storage.base import (
    Listing,
    PullError,
    RemoteFile,
    Settings,
    byte_range,
    stalled,
    transient,
)


def status_error(status: int, what: str, credentials: str = "the credentials") -> PullError:
    """The PullError for an HTTP error status: 5xx, 408 and 429 are worth retrying, other 4xx are not."""
    if status in (401, 403):
        return PullError(contract.REASON_ACCESS_DENIED, f"{what}: HTTP {status}; check {credentials}")
    if status >= 500 or status in (408, 429):
        return transient(f"{what}: HTTP {status}")
    return PullError(contract.REASON_NOT_FOUND, f"{what}: HTTP {status}")


def http_client(settings: Settings) -> httpx.Client:
    timeout = httpx.Timeout(settings.stall_seconds, connect=settings.connect_seconds)
    return httpx.Client(timeout=timeout, follow_redirects=True)


def stream_url(
    client: httpx.Client,
    url: str,
    settings: Settings,
    headers: Mapping[str, str] | None = None,
    credentials: str = "the credentials",
    offset: int = 0,
    end: int | None = None,
) -> Iterator[bytes]:
    """GETs bytes [OFFSET, END) of URL (END None: to its end): a Range request, or the whole body with
    the head skipped and the tail cut when the server ignores ranges (200 instead of 206)."""
    request_headers = dict(headers or {})
    if offset or end is not None:
        request_headers["Range"] = byte_range(offset, end)
        request_headers["Accept-Encoding"] = "identity"  # ranges are of the stored bytes
    with client.stream("GET", url, headers=request_headers) as response:
        if response.status_code >= 400:
            raise status_error(response.status_code, url, credentials)
        skip = offset if offset and response.status_code != 206 else 0
        left = None if end is None else end - offset
        for received in response.iter_bytes(settings.chunk_bytes):
            chunk = received
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if left is not None:
                chunk = chunk[:left]
                left -= len(chunk)
            if chunk:
                yield chunk
            if left == 0:
                return


def translate_httpx(error: Exception, what: str, settings: Settings) -> PullError:
    if isinstance(error, httpx.ReadTimeout):
        return stalled(settings.stall_seconds)
    if isinstance(error, httpx.TransportError):
        # Connection refused or cut, a body shorter than its Content-Length, a timeout connecting.
        return transient(f"{what}: {type(error).__name__}: {error}")
    return transient(f"{what}: {error}")


class HttpBackend:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.client = http_client(settings)

    def list(self) -> Listing:
        name = posixpath.basename(unquote(urlsplit(self.url).path))
        if not name:
            raise PullError(contract.REASON_INVALID_URI, f"{self.url} names no file: point it at a file")
        return Listing([RemoteFile(name, None, self.url)], single=True)

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        return stream_url(self.client, remote.locator, self.settings, offset=offset, end=end)

    def translate(self, error: Exception) -> PullError:
        return translate_httpx(error, self.url, self.settings)

    def close(self) -> None:
        self.client.close()
