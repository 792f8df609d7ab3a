"""Fetching a listing's files into a directory: retries with backoff, stall limits, hashing, progress.

Each file is streamed to disk chunk by chunk (never whole in memory) and hashed on the way. Several
files (the shards of a large model) come down side by side, each hashed by the thread that
downloads it, which spreads the hashing over the cores. When fewer files are in flight than there
are cores, each file's sha256 runs on a thread of its own (:class:`OverlappedHash`): it is the
dearest step of a pull, about one core's worth, so the download thread receives and writes the next
chunk while the last one is hashed. At most ``HASH_DEPTH`` chunks per file wait for the hash, which
bounds the memory of a pull whatever the file sizes. (Where every core is already busy, the hand-off
only adds cost: chunks hashed on another core leave the cache they were written from.)

A large file of known size with streams to spare (fewer files than ``concurrency``: one large
model file) comes down as several byte ranges at once (:class:`RangedFileFetch`), since one
stream of one connection is slower than the store; the hash follows the ranges in order, reading
what has landed back from the page cache.

A transient failure (connection lost, a read that stalled past the limit, 5xx) is retried after an
exponential backoff with jitter, up to the retry budget, resuming the file (or the range) where it
stopped; a permanent one ends the pull.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from modelplane_runtime.storage.base import Backend, Listing, PullError, RemoteFile, safe_relpath, transient

log = logging.getLogger("modelplane.pull")
T = TypeVar("T")
MiB = 1 << 20
#: Chunks of one file received but not yet hashed, at most (the download waits beyond that).
HASH_DEPTH = 8
#: A file is split into ranges fetched side by side only when each range gets at least this many bytes.
MIN_RANGE_BYTES = 64 * MiB
#: How much of a file the hash of a ranged download maps at a time.
HASH_WINDOW_BYTES = 16 * MiB
#: The hash's maps are populated in one call (Linux): cheaper than a page fault per few pages.
MAP_READ_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class Hash(Protocol):
    """What hashlib's sha256 offers and a pull uses (a seam for tests)."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class OverlappedHash:
    """A sha256 fed on a thread of its own: update() queues the chunk and returns, so hashing one
    chunk overlaps receiving and writing the next (hashlib releases the GIL on large buffers).
    With THREADED false, update() hashes in the caller's thread (same interface).

    The queue holds at most DEPTH chunks; update() blocks beyond that, so memory stays bounded when
    the hash is the slower side. The chunks are hashed in the order given.
    """

    def __init__(
        self, new_hash: Callable[[], Hash] = hashlib.sha256, depth: int = HASH_DEPTH, threaded: bool = True
    ) -> None:
        self.threaded = threaded
        self.new_hash = new_hash
        self.hash = new_hash()
        self.pending: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def update(self, chunk: bytes) -> None:
        if not self.threaded:
            self.hash.update(chunk)
            return
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="pull-hash", daemon=True)
            self.thread.start()
        self.pending.put(chunk)

    def _run(self) -> None:
        while (chunk := self.pending.get()) is not None:
            try:
                if self.error is None:
                    self.hash.update(chunk)
            except Exception as error:  # noqa: BLE001 - kept, and raised by hexdigest() in the caller
                self.error = error
            finally:
                self.pending.task_done()
        self.pending.task_done()

    def hexdigest(self) -> str:
        """The digest of every chunk given so far (waits for the queue to drain)."""
        self.pending.join()
        if self.error is not None:
            raise self.error
        return self.hash.hexdigest()

    def reset(self) -> None:
        """Starts over (the remote file changed): drops what was hashed so far."""
        self.pending.join()
        self.hash = self.new_hash()
        self.error = None

    def close(self) -> None:
        """Ends the thread; call once the digest is taken or the file given up."""
        if self.thread is not None:
            self.pending.put(None)
            self.thread.join()
            self.thread = None


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
    disk (and in the hash), so a cut near the end of a large file costs little. A chunk is written
    before it is queued for the hash, so what is on disk and what is hashed always agree."""

    def __init__(
        self,
        backend: Backend,
        remote: RemoteFile,
        target: Path,
        progress: Progress,
        abort: threading.Event,
        new_hash: Callable[[], Hash] = hashlib.sha256,
        overlap: bool = True,
    ) -> None:
        self.backend, self.remote, self.target, self.progress = backend, remote, target, progress
        self.abort = abort
        self.sha = OverlappedHash(new_hash, threaded=overlap)
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
        self.sha.reset()
        self.count = 0

    def fetch(self, what: str, policy: RetryPolicy) -> tuple[str, int]:
        """Every attempt at the file, then the hash thread ended (whatever the outcome)."""
        try:
            return with_retries(what, self.backend, policy, self, self.abort)
        finally:
            self.sha.close()


@dataclass
class ByteRange:
    """Bytes [START, END) of a file; DONE of them, from START on, are on disk."""

    start: int
    end: int
    done: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


def split_ranges(size: int, streams: int, min_range: int | None = None) -> list[ByteRange]:
    """SIZE bytes as at most STREAMS contiguous ranges of at least MIN_RANGE bytes (default
    MIN_RANGE_BYTES; one range when the file is too small to split), each a multiple of the page
    size long but the last."""
    count = min(streams, size // max(min_range or MIN_RANGE_BYTES, 1))
    if count <= 1:
        return [ByteRange(0, size)]
    step = -(-size // count)
    step += -step % mmap.ALLOCATIONGRANULARITY
    return [ByteRange(start, min(start + step, size)) for start in range(0, size, step)]


class RangedFileFetch:
    """One large file fetched as several byte ranges side by side (as s5cmd and boto3's transfer
    manager do): one request per range, since a request costs milliseconds of client CPU. Each range
    is written in place (os.pwrite into the file at its full size) as it arrives; a retry resumes the
    range at its first byte not yet on disk. The sha256 must see the bytes in order, so the calling
    thread hashes them behind the downloads: range by range, each as far as it has landed, read back
    through a memory map of the page cache (no copy, nothing held in memory for the hash; at most
    HASH_WINDOW_BYTES mapped at a time)."""

    def __init__(
        self,
        backend: Backend,
        remote: RemoteFile,
        target: Path,
        progress: Progress,
        abort: threading.Event,
        streams: int,
        new_hash: Callable[[], Hash] = hashlib.sha256,
    ) -> None:
        if remote.size is None:
            raise ValueError(f"{remote.relpath}: a ranged download needs the file's size")
        self.backend, self.remote, self.target, self.progress = backend, remote, target, progress
        self.abort = abort
        self.new_hash = new_hash
        self.ranges = split_ranges(remote.size, streams)
        self.landed = threading.Condition()
        target.parent.mkdir(parents=True, exist_ok=True)

    def fetch(self, what: str, policy: RetryPolicy) -> tuple[str, int]:
        """Every range with its own retries, and the hash in this thread; the first failure ends all."""
        size = self.remote.size or 0
        fd = os.open(self.target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            with ThreadPoolExecutor(len(self.ranges), thread_name_prefix="pull-range") as pool:
                downloads = [
                    pool.submit(self._fetch_range, what, policy, fd, byte_range) for byte_range in self.ranges
                ]
                try:
                    digest = self._hash_in_order(fd)
                except BaseException as error:
                    self._stop()
                    # Every range ends before the file is closed; a range's own failure is the one to tell.
                    failures = [download.exception() for download in downloads]
                    cause = next((f for f in failures if f is not None and not isinstance(f, Aborted)), None)
                    if cause is not None:
                        raise cause from None
                    if isinstance(error, Exception) and not isinstance(error, PullError):
                        raise transient(f"{self.remote.relpath}: {type(error).__name__}: {error}") from error
                    raise
                for download in downloads:
                    download.result()
        finally:
            os.close(fd)
        return digest, size

    def _fetch_range(self, what: str, policy: RetryPolicy, fd: int, byte_range: ByteRange) -> None:
        try:
            with_retries(
                f"{what} [{byte_range.start}, {byte_range.end})",
                self.backend,
                policy,
                lambda: self._attempt(fd, byte_range),
                self.abort,
            )
        except BaseException:
            self._stop()  # the file, and so the pull, has failed: the hash and the other ranges stop
            raise

    def _attempt(self, fd: int, byte_range: ByteRange) -> None:
        """One request for the rest of BYTE_RANGE."""
        if byte_range.done < byte_range.size:
            for chunk in self.backend.read(self.remote, byte_range.start + byte_range.done, byte_range.end):
                if self.abort.is_set():
                    raise Aborted
                if len(chunk) > byte_range.size - byte_range.done:
                    raise transient(f"{self.remote.relpath}: the store sent more than the range asked")
                write_at(fd, chunk, byte_range.start + byte_range.done)
                with self.landed:
                    byte_range.done += len(chunk)
                    self.landed.notify_all()
                self.progress.add(len(chunk))
        if byte_range.done != byte_range.size:
            raise transient(
                f"{self.remote.relpath}: got {byte_range.done} of {byte_range.size} bytes "
                f"from {byte_range.start}"
            )

    def _stop(self) -> None:
        self.abort.set()
        with self.landed:
            self.landed.notify_all()

    def _hash_in_order(self, fd: int) -> str:
        sha = self.new_hash()
        for byte_range in self.ranges:
            hashed = 0
            while hashed < byte_range.size:
                with self.landed:
                    while byte_range.done == hashed and not self.abort.is_set():
                        self.landed.wait()
                    landed = byte_range.done
                if landed == hashed:
                    raise Aborted  # a range failed (its error is what fetch() raises)
                hash_mapped(sha, fd, byte_range.start + hashed, byte_range.start + landed)
                hashed = landed
        return sha.hexdigest()


def write_at(fd: int, data: bytes, offset: int) -> None:
    """All of DATA into FD at OFFSET (os.pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def hash_mapped(sha: Hash, fd: int, start: int, end: int) -> None:
    """Feeds bytes [START, END) of the file FD to SHA through memory maps of HASH_WINDOW_BYTES at most."""
    while start < end:
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        length = min(end, aligned + HASH_WINDOW_BYTES) - aligned
        with (
            mmap.mmap(fd, length, MAP_READ_FLAGS, mmap.PROT_READ, offset=aligned) as mapped,
            memoryview(mapped) as view,
            view[start - aligned :] as landed,  # released even when update() raises: the map can close
        ):
            sha.update(landed)
        start = aligned + length


def usable_cores() -> int:
    """The cores this process may run on (its affinity; a CPU quota is not seen)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fetch_all(
    backend: Backend,
    listing: Listing,
    into: Path,
    policy: RetryPolicy,
    concurrency: int = 4,
    new_hash: Callable[[], Hash] = hashlib.sha256,
    overlap: bool | None = None,
) -> dict[str, tuple[str, int]]:
    """Fetches every file of LISTING under INTO, CONCURRENCY files at once (shards of a large model
    come down side by side); returns relpath -> (hex sha256, bytes). The first failure stops the rest.

    OVERLAP: hash each file on a thread of its own; by default when fewer files are in flight than
    this process may use cores. When there are fewer files than CONCURRENCY, each large file of known
    size is fetched as CONCURRENCY // files ranges at once (:class:`RangedFileFetch`)."""
    sizes = [f.size for f in listing.files]
    progress = Progress(None if None in sizes else sum(s or 0 for s in sizes))
    abort = threading.Event()
    workers = max(1, min(concurrency, len(listing.files)))
    if overlap is None:
        overlap = workers < usable_cores()
    streams = concurrency // len(listing.files) if listing.files else 1
    jobs: dict[str, FileFetch | RangedFileFetch] = {}
    for remote in listing.files:
        relpath = safe_relpath(remote.relpath, remote.locator)
        target = into / relpath
        if remote.size is not None and len(split_ranges(remote.size, streams)) > 1:
            jobs[relpath] = RangedFileFetch(backend, remote, target, progress, abort, streams, new_hash)
        else:
            jobs[relpath] = FileFetch(backend, remote, target, progress, abort, new_hash, overlap)
    results: dict[str, tuple[str, int]] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull") as pool:
        futures = {pool.submit(fetch.fetch, relpath, policy): relpath for relpath, fetch in jobs.items()}
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
