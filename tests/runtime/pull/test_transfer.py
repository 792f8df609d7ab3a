"""fetch_all and its overlapped hash, against a stand-in backend (the one seam): files come down in
parallel, the hash of a chunk overlaps receiving the next, memory stays bounded when the hash is
the slower side, and a cut file resumes with the right digest."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import modelplane_contract as contract
import pytest
from modelplane_runtime.storage import transfer
from modelplane_runtime.storage.base import Listing, PullError, RemoteFile, transient
from modelplane_runtime.storage.transfer import HASH_DEPTH, Hash, OverlappedHash, RetryPolicy, fetch_all

WAIT = 10.0  # seconds a condition may take before the test fails (never reached when it holds)
NO_BACKOFF = RetryPolicy(retries=2, backoff_seconds=0.0)


class MemoryBackend:
    """Files held in memory, served in CHUNK-byte pieces. BEFORE_CHUNK(relpath, index, offset) runs
    before the INDEXth chunk of a read from OFFSET is handed out: the hook tests use to hold a
    download at a point."""

    def __init__(
        self,
        files: dict[str, bytes],
        chunk: int = 64 << 10,
        before_chunk: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.files, self.chunk, self.before_chunk = files, chunk, before_chunk
        self.offsets: list[tuple[str, int]] = []
        self.ranges: list[tuple[int, int | None]] = []

    def listing(self) -> Listing:
        return Listing([RemoteFile(p, len(d), p) for p, d in self.files.items()], single=len(self.files) == 1)

    def list(self) -> Listing:
        return self.listing()

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        self.offsets.append((remote.relpath, offset))
        self.ranges.append((offset, end))
        data = self.files[remote.locator]
        stop = len(data) if end is None else end
        for index, start in enumerate(range(offset, stop, self.chunk)):
            if self.before_chunk:
                self.before_chunk(remote.relpath, index, offset)
            yield bytes(data[start : min(start + self.chunk, stop)])  # a fresh object, as a socket gives

    def translate(self, error: Exception) -> PullError:
        return error if isinstance(error, PullError) else transient(str(error))

    def close(self) -> None:
        pass


def hashes_of(files: dict[str, bytes]) -> dict[str, tuple[str, int]]:
    return {p: (hashlib.sha256(d).hexdigest(), len(d)) for p, d in files.items()}


def test_files_come_down_in_parallel(tmp_path: Path) -> None:
    files = {f"model-{i}.safetensors": os.urandom(300_000) for i in range(3)}
    # No file gets past its first chunk until all three are being read at once.
    all_reading = threading.Barrier(3, timeout=WAIT)

    def before_chunk(relpath: str, index: int, _offset: int) -> None:
        if index == 0:
            all_reading.wait()

    backend = MemoryBackend(files, before_chunk=before_chunk)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=3)
    assert result == hashes_of(files)
    for relpath, data in files.items():
        assert (tmp_path / relpath).read_bytes() == data


def test_hashing_a_chunk_overlaps_receiving_the_next(tmp_path: Path) -> None:
    data = os.urandom(10 * (64 << 10))
    third_chunk_asked = threading.Event()
    hashed_on: set[int] = set()

    def before_chunk(_relpath: str, index: int, _offset: int) -> None:
        if index == 2:
            third_chunk_asked.set()

    class WaitingHash:
        """Holds the first chunk's hash until the download has moved on to the third chunk: a
        download that hashed inline could never get there."""

        def __init__(self) -> None:
            self.sha = hashlib.sha256()
            self.updates = 0

        def update(self, chunk: bytes | memoryview, /) -> None:
            hashed_on.add(threading.get_ident())
            if self.updates == 0 and not third_chunk_asked.wait(WAIT):
                raise AssertionError("the download waited for the hash of its first chunk")
            self.updates += 1
            self.sha.update(chunk)

        def hexdigest(self) -> str:
            return self.sha.hexdigest()

    backend = MemoryBackend({"model.bin": data}, before_chunk=before_chunk)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, new_hash=WaitingHash, overlap=True)
    assert result == hashes_of({"model.bin": data})
    assert threading.get_ident() not in hashed_on


def test_update_waits_when_the_hash_falls_behind() -> None:
    release = threading.Event()
    taken = threading.Event()

    class StuckHash:
        def update(self, _chunk: bytes | memoryview, /) -> None:
            taken.set()
            release.wait(WAIT)

        def hexdigest(self) -> str:
            return ""

    overlapped = OverlappedHash(StuckHash, depth=2)
    given: list[int] = []

    def produce() -> None:
        for i in range(10):
            overlapped.update(b"x" * 4096)
            given.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    assert taken.wait(WAIT)
    # One chunk in the hash's hands and DEPTH queued; the next update() must wait.
    producer.join(timeout=0.5)
    assert producer.is_alive()
    assert len(given) == 3
    release.set()
    producer.join(WAIT)
    assert len(given) == 10
    overlapped.hexdigest()
    overlapped.close()


def test_memory_stays_bounded_when_the_hash_is_slower(tmp_path: Path) -> None:
    chunk = 256 << 10
    files = {f"shard-{i}.bin": os.urandom(48 * chunk) for i in range(2)}

    class SlowHash:
        """sha256 slower than the download (as it is on a busy node), so chunks would pile up."""

        def __init__(self) -> None:
            self.sha = hashlib.sha256()

        def update(self, data: bytes | memoryview, /) -> None:
            time.sleep(0.002)
            self.sha.update(data)

        def hexdigest(self) -> str:
            return self.sha.hexdigest()

    backend = MemoryBackend(files, chunk=chunk)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fetch_all(
            backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=2, new_hash=SlowHash, overlap=True
        )
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert result == hashes_of(files)
    # Per file: DEPTH queued, one being hashed, one being written; never the whole 12 MiB file.
    bound = 2 * (HASH_DEPTH + 3) * chunk
    assert peak < bound, f"peak {peak / 2**20:.1f} MiB over the bound {bound / 2**20:.1f} MiB"


@pytest.mark.parametrize(("cores", "hashed_by"), [(2, "pull_"), (8, "pull-hash")])
def test_a_thread_of_its_own_hashes_a_file_only_when_cores_would_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, hashed_by: str
) -> None:
    """Two files in flight: on 2 cores their download threads hash them (both cores are busy already);
    on 8, each file's hash gets a thread of its own."""
    monkeypatch.setattr(transfer, "usable_cores", lambda: cores)
    names: set[str] = set()

    class NamingHash:
        def __init__(self) -> None:
            self.sha = hashlib.sha256()

        def update(self, data: bytes | memoryview, /) -> None:
            names.add(threading.current_thread().name)
            self.sha.update(data)

        def hexdigest(self) -> str:
            return self.sha.hexdigest()

    files = {f"shard-{i}.bin": os.urandom(200_000) for i in range(4)}
    backend = MemoryBackend(files)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=2, new_hash=NamingHash)
    assert result == hashes_of(files)
    assert names
    assert all(name.startswith(hashed_by) for name in names), names


def test_a_cut_file_resumes_where_it_stopped_with_the_right_digest(tmp_path: Path) -> None:
    data = os.urandom(8 * (64 << 10))
    cuts = [True]

    def before_chunk(_relpath: str, index: int, _offset: int) -> None:
        if index == 5 and cuts:
            cuts.pop()
            raise ConnectionResetError("connection reset by peer")

    backend = MemoryBackend({"model.bin": data}, before_chunk=before_chunk)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF)
    assert result == hashes_of({"model.bin": data})
    assert backend.offsets == [("model.bin", 0), ("model.bin", 5 * (64 << 10))]
    assert (tmp_path / "model.bin").read_bytes() == data


def test_a_failing_hash_fails_the_file_instead_of_hanging(tmp_path: Path) -> None:
    class BrokenHash:
        def update(self, _chunk: bytes | memoryview, /) -> None:
            raise MemoryError("no memory for the hash")

        def hexdigest(self) -> str:
            return ""

    backend = MemoryBackend({"model.bin": os.urandom(40 * (64 << 10))})
    new_hash: Callable[[], Hash] = BrokenHash
    with pytest.raises(PullError, match="no memory for the hash"):
        fetch_all(backend, backend.listing(), tmp_path, RetryPolicy(retries=0), new_hash=new_hash)


# --- one large file as ranges fetched side by side -------------------------------------------------

RANGE = 256 << 10  # the smallest range in these tests (MIN_RANGE_BYTES is 64 MiB)


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "MIN_RANGE_BYTES", RANGE)


def test_split_ranges_cover_the_file_in_page_aligned_pieces() -> None:
    for size, streams in [(10 * RANGE + 123, 4), (4 * RANGE, 4), (3 * RANGE, 8), (RANGE, 4), (0, 4)]:
        ranges = transfer.split_ranges(size, streams, RANGE)
        assert ranges[0].start == 0
        assert ranges[-1].end == size
        assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
        assert len(ranges) <= max(1, min(streams, size // RANGE))
        assert all(r.start % 4096 == 0 for r in ranges)
    assert len(transfer.split_ranges(10 * RANGE, 4, RANGE)) == 4
    assert len(transfer.split_ranges(RANGE * 2 - 1, 4, RANGE)) == 1  # too small to split


@pytest.mark.usefixtures("small_ranges")
def test_a_large_file_comes_down_as_ranges_at_once(tmp_path: Path) -> None:
    data = os.urandom(8 * RANGE + 5000)
    # No range gets past its first chunk until all four are being read at once.
    all_reading = threading.Barrier(4, timeout=WAIT)

    def before_chunk(_relpath: str, index: int, _offset: int) -> None:
        if index == 0:
            all_reading.wait()

    backend = MemoryBackend({"model.bin": data}, before_chunk=before_chunk)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=4)
    assert result == hashes_of({"model.bin": data})
    assert (tmp_path / "model.bin").read_bytes() == data
    ranges = sorted(backend.ranges)
    assert len(ranges) == 4
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@pytest.mark.usefixtures("small_ranges")
def test_the_hash_follows_the_ranges_while_they_download(tmp_path: Path) -> None:
    """The later ranges are held until the first range has been hashed: a hash that waited for
    the whole file could never get there."""
    data = os.urandom(8 * RANGE)
    first_range = len(data) // 4
    first_range_hashed = threading.Event()

    def before_chunk(_relpath: str, index: int, offset: int) -> None:
        if offset > 0 and index == 1 and not first_range_hashed.wait(WAIT):
            raise AssertionError("the hash did not start before the file was whole")

    class CountingHash:
        def __init__(self) -> None:
            self.sha = hashlib.sha256()
            self.count = 0

        def update(self, chunk: bytes | memoryview, /) -> None:
            self.sha.update(chunk)
            self.count += len(chunk)
            if self.count >= first_range:
                first_range_hashed.set()

        def hexdigest(self) -> str:
            return self.sha.hexdigest()

    backend = MemoryBackend({"model.bin": data}, before_chunk=before_chunk)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=4, new_hash=CountingHash)
    assert result == hashes_of({"model.bin": data})


@pytest.mark.usefixtures("small_ranges")
def test_a_cut_range_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = os.urandom(8 * RANGE)
    third = 2 * len(data) // 4  # where the third of four ranges starts
    cuts = [True]

    def before_chunk(_relpath: str, index: int, offset: int) -> None:
        if offset == third and index == 3 and cuts:
            cuts.pop()
            raise ConnectionResetError("connection reset by peer")

    backend = MemoryBackend({"model.bin": data}, before_chunk=before_chunk)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=4)
    assert result == hashes_of({"model.bin": data})
    assert (tmp_path / "model.bin").read_bytes() == data
    # The retry asks for the rest of that range only.
    assert (third + 3 * backend.chunk, third + len(data) // 4) in backend.ranges


@pytest.mark.usefixtures("small_ranges")
def test_a_range_that_fails_for_good_fails_the_pull_with_its_reason(tmp_path: Path) -> None:
    data = os.urandom(8 * RANGE)

    def before_chunk(_relpath: str, index: int, offset: int) -> None:
        if offset > 0 and index == 1:
            raise PullError(contract.REASON_ACCESS_DENIED, "the token expired mid-download")

    backend = MemoryBackend({"model.bin": data}, before_chunk=before_chunk)
    with pytest.raises(PullError, match="the token expired mid-download") as failure:
        fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=4)
    assert failure.value.reason == contract.REASON_ACCESS_DENIED


@pytest.mark.usefixtures("small_ranges")
def test_a_failing_hash_fails_a_ranged_file_instead_of_hanging(tmp_path: Path) -> None:
    class BrokenHash:
        def update(self, _chunk: bytes | memoryview, /) -> None:
            raise MemoryError("no memory for the hash")

        def hexdigest(self) -> str:
            return ""

    backend = MemoryBackend({"model.bin": os.urandom(8 * RANGE)})
    with pytest.raises(PullError, match="no memory for the hash"):
        fetch_all(
            backend, backend.listing(), tmp_path, RetryPolicy(retries=0), concurrency=4, new_hash=BrokenHash
        )


@pytest.mark.usefixtures("small_ranges")
def test_two_large_files_split_the_streams_and_small_ones_are_not_split(tmp_path: Path) -> None:
    files = {"a.bin": os.urandom(8 * RANGE), "b.bin": os.urandom(8 * RANGE), "c.json": b"{}"}
    backend = MemoryBackend(files)
    result = fetch_all(backend, backend.listing(), tmp_path, NO_BACKOFF, concurrency=6)
    assert result == hashes_of(files)
    starts = sorted(backend.offsets)
    # 6 streams over 3 files: 2 ranges for each large file, one read of the small one.
    assert starts == [("a.bin", 0), ("a.bin", 4 * RANGE), ("b.bin", 0), ("b.bin", 4 * RANGE), ("c.json", 0)]
