"""Fetching a listing's files into a directory: retries with backoff, stall limits, hashing, progress.

Each file is streamed to disk chunk by chunk (never whole in memory) and hashed on the way. A
transient failure (connection lost, a read that stalled past the limit, 5xx) restarts that file
after an exponential backoff with jitter, up to the retry budget; a permanent one ends the pull.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from modelplane_runtime.storage.base import Backend, Listing, PullError, RemoteFile, safe_relpath, transient

log = logging.getLogger("modelplane.pull")
T = TypeVar("T")
MiB = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # attempts after the first
    backoff_seconds: float = 1.0  # before the first retry; doubles each time
    max_backoff_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ATTEMPT (1-based), with +-25% jitter so pods do not retry in step."""
        base: float = min(self.backoff_seconds * 2.0 ** (attempt - 1), self.max_backoff_seconds)
        return base * random.uniform(0.75, 1.25)


def with_retries(what: str, backend: Backend, policy: RetryPolicy, action: Callable[[], T]) -> T:
    """Runs ACTION, translating client errors through BACKEND and retrying transient ones."""
    attempt = 0
    while True:
        try:
            return action()
        except Exception as error:  # every client error is translated, none swallowed
            failure = error if isinstance(error, PullError) else backend.translate(error)
            if failure.permanent or attempt >= policy.retries:
                if attempt and not failure.permanent:
                    failure = PullError(
                        failure.reason, f"{failure.message} (gave up after {attempt + 1} attempts)"
                    )
                raise failure from error
            attempt += 1
            delay = policy.delay(attempt)
            log.warning("%s: %s; retry %d/%d in %.1fs", what, failure.message, attempt, policy.retries, delay)
            time.sleep(delay)


class Progress:
    """Logs bytes fetched against the expected total, at most every INTERVAL seconds."""

    def __init__(self, total: int | None, interval: float = 5.0) -> None:
        self.total = total
        self.done = 0
        self.interval = interval
        self.started = time.monotonic()
        self.last_log = self.started

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last_log >= self.interval:
            self.last_log = now
            self.report("pulling")

    def report(self, verb: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        of_total = f" of {self.total / MiB:.1f}" if self.total else ""
        log.info(
            "%s: %.1f%s MiB in %.1fs (%.1f MiB/s)",
            verb,
            self.done / MiB,
            of_total,
            elapsed,
            self.done / MiB / elapsed,
        )


def fetch_file(backend: Backend, remote: RemoteFile, target: Path, progress: Progress) -> tuple[str, int]:
    """Streams REMOTE to TARGET; returns its hex sha256 and size. Raises PullError on a short read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    count = 0
    try:
        with open(target, "wb") as out:
            for chunk in backend.read(remote):
                out.write(chunk)
                sha.update(chunk)
                count += len(chunk)
                progress.add(len(chunk))
    except BaseException:
        progress.done -= count  # the retry fetches these bytes again
        raise
    if remote.size is not None and count != remote.size:
        progress.done -= count
        raise transient(f"{remote.relpath}: got {count} of {remote.size} bytes")
    return sha.hexdigest(), count


def fetch_all(
    backend: Backend, listing: Listing, into: Path, policy: RetryPolicy
) -> dict[str, tuple[str, int]]:
    """Fetches every file of LISTING under INTO; returns relpath -> (hex sha256, bytes)."""
    sizes = [f.size for f in listing.files]
    progress = Progress(None if None in sizes else sum(s or 0 for s in sizes))
    results: dict[str, tuple[str, int]] = {}
    for remote in listing.files:
        relpath = safe_relpath(remote.relpath, remote.locator)
        target = into / relpath

        def fetch(remote: RemoteFile = remote, target: Path = target) -> tuple[str, int]:
            return fetch_file(backend, remote, target, progress)

        results[relpath] = with_retries(remote.relpath, backend, policy, fetch)
    progress.report("pulled")
    return results
