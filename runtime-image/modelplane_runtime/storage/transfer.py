"""Fetching a listing's files into a directory: retries with backoff, stall limits, hashing, progress.

Each file is streamed to disk chunk by chunk (never whole in memory) and hashed on the way. A
transient failure (connection lost, a read that stalled past the limit, 5xx) is retried after an
exponential backoff with jitter, up to the retry budget, resuming the file where it stopped; a
permanent one ends the pull.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
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


class Aborted(BaseException):
    """Another file of the same pull failed: stop this one. (Not an Exception, so never retried.)"""


def with_retries(
    what: str,
    backend: Backend,
    policy: RetryPolicy,
    action: Callable[[], T],
    abort: threading.Event | None = None,
) -> T:
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
            if abort is None:
                time.sleep(delay)
            elif abort.wait(delay):
                raise Aborted from error


class Progress:
    """Logs bytes fetched against the expected total, at most every INTERVAL seconds."""

    def __init__(self, total: int | None, interval: float = 5.0) -> None:
        self.total = total
        self.done = 0
        self.interval = interval
        self.started = time.monotonic()
        self.last_log = self.started
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.monotonic()
            due = now - self.last_log >= self.interval
            if due:
                self.last_log = now
        if due:
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


class FileFetch:
    """One file's download, called once per attempt: a retry resumes at the first byte not yet on
    disk (and in the hash), so a cut near the end of a large file costs little."""

    def __init__(
        self, backend: Backend, remote: RemoteFile, target: Path, progress: Progress, abort: threading.Event
    ) -> None:
        self.backend, self.remote, self.target, self.progress = backend, remote, target, progress
        self.abort = abort
        self.sha = hashlib.sha256()
        self.count = 0
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")

    def __call__(self) -> tuple[str, int]:
        """Streams the rest of the file; returns its hex sha256 and size. Raises PullError on a short read."""
        size = self.remote.size
        if size is not None and self.count > size:
            self.restart()  # the object changed under us: start over
        with self.target.open("r+b") as out:
            out.seek(self.count)
            out.truncate()  # drop a chunk that a failed write left half on disk
            for chunk in self.backend.read(self.remote, self.count):
                if self.abort.is_set():
                    raise Aborted
                out.write(chunk)
                self.sha.update(chunk)
                self.count += len(chunk)
                self.progress.add(len(chunk))
        if size is not None and self.count != size:
            raise transient(f"{self.remote.relpath}: got {self.count} of {size} bytes")
        return self.sha.hexdigest(), self.count

    def restart(self) -> None:
        self.progress.add(-self.count)
        self.sha = hashlib.sha256()
        self.count = 0


def fetch_all(
    backend: Backend, listing: Listing, into: Path, policy: RetryPolicy, concurrency: int = 4
) -> dict[str, tuple[str, int]]:
    """Fetches every file of LISTING under INTO, CONCURRENCY files at once (shards of a large model
    come down side by side); returns relpath -> (hex sha256, bytes). The first failure stops the rest."""
    sizes = [f.size for f in listing.files]
    progress = Progress(None if None in sizes else sum(s or 0 for s in sizes))
    abort = threading.Event()
    jobs = {
        relpath: FileFetch(backend, remote, into / relpath, progress, abort)
        for remote in listing.files
        for relpath in [safe_relpath(remote.relpath, remote.locator)]
    }
    results: dict[str, tuple[str, int]] = {}
    with ThreadPoolExecutor(
        max_workers=max(1, min(concurrency, len(jobs))), thread_name_prefix="pull"
    ) as pool:
        futures = {
            pool.submit(with_retries, relpath, backend, policy, fetch, abort): relpath
            for relpath, fetch in jobs.items()
        }
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except BaseException:
            abort.set()
            for future in futures:
                future.cancel()
            raise
    progress.report("pulled")
    return results
