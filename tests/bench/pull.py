"""`make bench-pull`: `modelplane-runtime pull` against the store's own speed, on the S3 server of `make s3`.

Two artifacts: one 1 GiB object, and a directory of 8 shard files of 256 MiB (2 GiB, the shape of a
large model). Three ways to fetch each, every one in a fresh process (tests/bench/pull_client.py)
so that its CPU time and peak RSS are its own: a raw single-stream boto3 GET (the body read and
dropped, no hashing; the directory's files one after another), boto3's ``download_file`` (its
managed, multi-threaded ranged transfer) into files, and ``modelplane-runtime pull`` with the
digest verified. Rounds interleave the methods (in a rotating order) so that other work on the
machine disturbs them alike; the table gives the median of the rounds.

Not pinned to cores, unlike bench-runtime: the S3 server runs on this same 2-core machine and is
shared with other tests, and a pull's point is to use the cores a pod has (hashing on one thread
while another receives). For each run the bench records the client's CPU seconds, the S3 server's
(from its pid file, when readable) and what everything else on the machine used meanwhile.

    python -m tests.bench.pull --work-dir DIR --results FILE [--rounds N] [--weed-pid-file FILE]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane_runtime.storage.digest import file_digest, manifest_digest

from tests.bench import harness, machine
from tests.support.s3 import S3Server, server_from_env_lines, start_s3

MiB = 1 << 20
GiB = 1 << 30
METHODS = ("raw GET", "download_file", "pull")
CLIENT_METHOD = {"raw GET": "raw", "download_file": "download_file", "pull": "pull"}
SINGLE, SHARDED = "1 GiB object", "8 shards, 2 GiB"
KEY_ROOT = "bench-pull/v1"  # objects are kept between runs; a new layout gets a new version
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Artifact:
    case: str
    uri_key: str  # what `pull` is given: the object's key, or the prefix ending in "/"
    keys: tuple[str, ...]  # the objects, in order
    digest: str


@dataclass(frozen=True)
class Sample:
    case: str
    method: str
    seconds: float
    bytes: int
    client_cpu: float  # seconds, every thread of the client, during the transfer
    server_cpu: float | None  # seconds of the S3 server's process meanwhile
    others_cpu: float  # seconds the rest of the machine used while the client process ran
    window_seconds: float  # how long the client process ran (start-up included)
    peak_rss_kib: int

    @property
    def mib_per_second(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds > 0 else 0.0

    @property
    def others_cores(self) -> float:
        return self.others_cpu / self.window_seconds if self.window_seconds > 0 else 0.0

    @property
    def gib(self) -> float:
        return self.bytes / GiB


# --- pure pieces (tests/bench/test_pull.py) --------------------------------------------------------


def rotated(methods: Sequence[str], round_index: int) -> list[str]:
    """The order of round ROUND_INDEX: each method goes first in turn."""
    shift = round_index % len(methods)
    return [*methods[shift:], *methods[:shift]]


def median_rate(samples: Sequence[Sample], case: str, method: str) -> float | None:
    rates = [s.mib_per_second for s in samples if (s.case, s.method) == (case, method)]
    return statistics.median(rates) if rates else None


def per_gib(values: Sequence[float], samples: Sequence[Sample]) -> float:
    total = sum(s.gib for s in samples)
    return sum(values) / total if total else 0.0


def markdown_table(samples: Sequence[Sample]) -> str:
    lines = [
        (
            "| artifact | method | MiB/s (median) | each round MiB/s | client CPU s/GiB "
            "| S3 server CPU s/GiB | others' CPU (cores) | peak RSS MiB |"
        ),
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for case in dict.fromkeys(s.case for s in samples):
        for method in METHODS:
            runs = [s for s in samples if (s.case, s.method) == (case, method)]
            if not runs:
                continue
            servers = [s.server_cpu for s in runs if s.server_cpu is not None]
            server = f"{per_gib(servers, runs):.2f}" if len(servers) == len(runs) else "n/a"
            others = statistics.median(s.others_cores for s in runs)
            lines.append(
                f"| {case} | {method} | {median_rate(runs, case, method) or 0:,.0f} "
                f"| {', '.join(f'{s.mib_per_second:,.0f}' for s in runs)} "
                f"| {per_gib([s.client_cpu for s in runs], runs):.2f} | {server} | {others:.2f} "
                f"| {max(s.peak_rss_kib for s in runs) / 1024:,.0f} |"
            )
    return "\n".join(lines)


def ratios(samples: Sequence[Sample]) -> list[harness.Ratio]:
    """The targets: pull >= 0.9x the raw GET for one object, >= 1x for the directory; and against
    download_file, which a pull should not lose to."""
    found = []
    for case, target in ((SINGLE, 0.9), (SHARDED, 1.0)):
        pull = median_rate(samples, case, "pull")
        for other, wanted in (("raw GET", target), ("download_file", 1.0)):
            base = median_rate(samples, case, other)
            if pull is None or not base:
                continue
            value = pull / base
            found.append(
                harness.Ratio(
                    label=f"{case}: pull {pull:,.0f} / {other} {base:,.0f} MiB/s",
                    value=value,
                    target=f">= {wanted:g}x",
                    met=value >= wanted,
                )
            )
    return found


def cpu_per_gib(samples: Sequence[Sample], case: str, method: str) -> float | None:
    """Client plus S3 server CPU seconds per GiB (None without the server's figures)."""
    runs = [s for s in samples if (s.case, s.method) == (case, method)]
    if not runs or any(s.server_cpu is None for s in runs):
        return None
    return per_gib([s.client_cpu + (s.server_cpu or 0.0) for s in runs], runs)


def cpu_bound_lines(samples: Sequence[Sample]) -> list[str]:
    """When the transfer itself keeps the cores busy, speed goes as 1 / CPU per byte: the pull's
    ceiling against the raw GET is then the ratio of their CPU costs."""
    lines = []
    for case in (SINGLE, SHARDED):
        raw, pulled = cpu_per_gib(samples, case, "raw GET"), cpu_per_gib(samples, case, "pull")
        if raw is None or pulled is None or not pulled:
            continue
        lines.append(
            f"- {case}: client + S3 server CPU per GiB: raw GET {raw:.2f} s, pull {pulled:.2f} s; "
            f"on cores that the transfer keeps busy, a pull can reach {raw / pulled:.2f}x the raw GET"
        )
    return lines


def hash_ceiling_lines(samples: Sequence[Sample], sha_mib_per_cpu_second: float) -> list[str]:
    """The best any verified pull can do on cores the transfer keeps busy: the raw GET's own client and
    server CPU per GiB plus one sha256 of every byte (nothing for writing the file, nothing else)."""
    if sha_mib_per_cpu_second <= 0:
        return []
    sha = 1024 / sha_mib_per_cpu_second
    lines = []
    for case in (SINGLE, SHARDED):
        raw = cpu_per_gib(samples, case, "raw GET")
        if raw is None or not raw:
            continue
        lines.append(
            f"- {case}: the raw GET's {raw:.2f} CPU s/GiB plus the sha256 alone ({sha:.2f} s/GiB): on busy "
            f"cores a verified pull can reach at most {raw / (raw + sha):.2f}x the raw GET, before writing "
            "a byte"
        )
    return lines


def round_ratios(samples: Sequence[Sample], case: str) -> list[float]:
    """pull / raw GET within each round (the two measured minutes apart at most)."""
    pulls = [s for s in samples if (s.case, s.method) == (case, "pull")]
    raws = [s for s in samples if (s.case, s.method) == (case, "raw GET")]
    return [p.mib_per_second / r.mib_per_second for p, r in zip(pulls, raws, strict=False) if r.seconds > 0]


# --- the artifacts on the server -------------------------------------------------------------------


def ensure_artifacts(s3: S3Server, single_mib: int, shards: int, shard_mib: int) -> list[Artifact]:
    """Uploads the artifacts unless an earlier run left them (sizes and recorded digests match)."""
    client = s3.client()
    layout = f"{KEY_ROOT}/{single_mib}m-{shards}x{shard_mib}m"
    single_key = f"{layout}/model.safetensors"
    shard_keys = [f"{layout}/sharded/model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    digests_key = f"{layout}/digests.json"
    sizes = {single_key: single_mib * MiB, **dict.fromkeys(shard_keys, shard_mib * MiB)}
    hashes = _recorded(client, s3.bucket, digests_key, sizes)
    if hashes is None:
        hashes = {}
        for key, size in sizes.items():
            print(f"uploading {size / MiB:,.0f} MiB to s3://{s3.bucket}/{key}", flush=True)
            hashes[key] = s3.upload_random(key, size)
        client.put_object(Bucket=s3.bucket, Key=digests_key, Body=json.dumps(hashes).encode())
    prefix = f"{layout}/sharded/"
    return [
        Artifact(SINGLE, single_key, (single_key,), file_digest(hashes[single_key])),
        Artifact(
            SHARDED,
            prefix,
            tuple(shard_keys),
            manifest_digest({k.removeprefix(prefix): hashes[k] for k in shard_keys}),
        ),
    ]


def _recorded(client: Any, bucket: str, digests_key: str, sizes: dict[str, int]) -> dict[str, str] | None:
    try:
        hashes: dict[str, str] = json.loads(client.get_object(Bucket=bucket, Key=digests_key)["Body"].read())
        for key, size in sizes.items():
            if int(client.head_object(Bucket=bucket, Key=key)["ContentLength"]) != size or key not in hashes:
                return None
    except client.exceptions.ClientError:
        return None
    return hashes


# --- measuring -------------------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (every core; /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def process_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def read_pid(path: Path | None) -> int | None:
    try:
        return int(path.read_text().strip()) if path else None
    except (OSError, ValueError):
        return None


class Bench:
    def __init__(self, args: argparse.Namespace, s3: S3Server) -> None:
        self.args, self.s3 = args, s3
        self.work: Path = args.work_dir
        self.server_pid = read_pid(args.weed_pid_file)
        self.samples: list[Sample] = []
        self.sizes: dict[str, int] = {}
        self.round_loads: list[str] = []  # the load average as each round began
        self.env = {**os.environ, **s3.env, "PYTHONUNBUFFERED": "1"}

    def measure(self, artifact: Artifact, method: str) -> Sample:
        dest = self.work / "dest"
        shutil.rmtree(dest, ignore_errors=True)
        argv = [
            sys.executable,
            "-m",
            "tests.bench.pull_client",
            CLIENT_METHOD[method],
            self.s3.bucket,
            str(dest),
            artifact.digest,
            *([artifact.uri_key] if method == "pull" else artifact.keys),
        ]
        log = self.work / "client.log"
        server_before, busy_before = process_cpu(self.server_pid), busy_seconds()
        started = time.monotonic()
        with log.open("wb") as stderr:
            process = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=stderr)
            assert process.stdout is not None
            out = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        window = time.monotonic() - started
        server_after, busy_after = process_cpu(self.server_pid), busy_seconds()
        # Dropped at once: unlinked files' dirty pages are never written back to disk.
        shutil.rmtree(dest, ignore_errors=True)
        if process.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"{method} of {artifact.case} failed ({process.returncode}):\n{tail}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        expected = sum(self.sizes[k] for k in artifact.keys)
        if result["bytes"] != expected:
            raise SystemExit(f"{method} of {artifact.case} fetched {result['bytes']} bytes, not {expected}")
        client_total = usage.ru_utime + usage.ru_stime
        server = (
            server_after - server_before if server_after is not None and server_before is not None else None
        )
        sample = Sample(
            case=artifact.case,
            method=method,
            seconds=result["seconds"],
            bytes=result["bytes"],
            client_cpu=result["cpu_seconds"],
            server_cpu=server,
            # Start-up (imports) is the client's too, though outside its clock: not "others".
            others_cpu=max(0.0, busy_after - busy_before - client_total - (server or 0.0)),
            window_seconds=window,
            peak_rss_kib=result["peak_rss_kib"],
        )
        print(
            f"{artifact.case:16} {method:14} {sample.mib_per_second:7,.0f} MiB/s  "
            f"client {sample.client_cpu:5.2f} s  server {server or float('nan'):5.2f} s  "
            f"others {sample.others_cores:4.2f} cores  "
            f"rss {sample.peak_rss_kib / 1024:6,.0f} MiB",
            flush=True,
        )
        return sample

    def run(self, artifacts: Sequence[Artifact]) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        client = self.s3.client()
        self.sizes = {
            k: int(client.head_object(Bucket=self.s3.bucket, Key=k)["ContentLength"])
            for a in artifacts
            for k in a.keys
        }
        for round_index in range(self.args.rounds):
            self.round_loads.append(machine.load_average())
            print(f"round {round_index + 1}/{self.args.rounds} (load {self.round_loads[-1]})", flush=True)
            for artifact in artifacts:
                for method in rotated(METHODS, round_index):
                    self.samples.append(self.measure(artifact, method))


def sha256_one_core(mib: int = 512) -> float:
    """hashlib's sha256 over memory, MiB per CPU second: the ceiling of any verified single-file pull."""
    block = os.urandom(MiB)
    sha = hashlib.sha256()
    started = time.process_time()
    for _ in range(mib):
        sha.update(block)
    return mib / max(time.process_time() - started, 1e-9)


def weed_version(pid: int | None) -> str:
    """The running server's own version (its executable, through /proc)."""
    try:
        exe = str(Path(f"/proc/{pid}/exe").readlink()) if pid else "weed"
        out = subprocess.run([exe, "version"], capture_output=True, text=True, check=False, timeout=30)
    except OSError:
        return "SeaweedFS (version unknown)"
    first = out.stdout.splitlines()[0].split() if out.stdout.strip() else []
    return "SeaweedFS " + " ".join(first[1:]) if first else "SeaweedFS (version unknown)"


def report(bench: Bench, started: datetime.datetime, load_before: str, sha_rate: float) -> str:
    samples = bench.samples
    raw_single = median_rate(samples, SINGLE, "raw GET") or 0.0
    lines = [
        "# Pull benchmark",
        "",
        f"Made by `make bench-pull` on {started:%Y-%m-%d %H:%M} UTC at commit {machine.git_commit()}.",
        "",
        "## Machine and versions",
        "",
        (
            f"- CPU: {machine.cpu_model()}, {os.cpu_count()} cores; kernel {platform.release()}; "
            f"Python {platform.python_version()}"
        ),
        (
            f"- S3 server: {weed_version(bench.server_pid)} (`weed mini`, `make s3`) on this same machine "
            f"at {bench.s3.endpoint}; "
            "its volume files are in the page cache, so it serves from memory"
        ),
        "- Client: "
        + machine.versions(Path(sys.executable), "boto3", "botocore", "urllib3", "modelplane-runtime"),
        (
            f"- Not pinned to cores (the S3 server shares them); {bench.args.rounds} rounds, "
            "methods in a rotating order; each transfer in a fresh process, timed from its first "
            "request (imports and start-up not counted); downloaded files deleted after each run "
            "(never written back)"
        ),
        (
            f"- Load average before {load_before}, after {machine.load_average()}; as each round began: "
            f"{'; '.join(bench.round_loads)}. The machine is "
            "shared today with other helpers' builds and tests: \"others' CPU\" is what the rest "
            "of the machine used during each transfer (median, in cores of the 2); numbers move by "
            "tens of percent between runs, so compare within a round."
        ),
        (
            f"- sha256 (hashlib, OpenSSL) on one core: {sha_rate:,.0f} MiB/s; a single file's digest is one "
            f"sequential sha256, so a verified pull of one object cannot beat this "
            f"({sha_rate / raw_single if raw_single else 0:.2f}x this run's raw GET)"
        ),
        "",
        "## Results",
        "",
        markdown_table(samples),
        "",
        "## Ratios",
        "",
        *harness.ratio_lines(ratios(samples)),
        *[
            f"- {case}: pull / raw GET in each round: "
            + ", ".join(f"{r:.2f}x" for r in round_ratios(samples, case))
            for case in (SINGLE, SHARDED)
        ],
        *cpu_bound_lines(samples),
        *hash_ceiling_lines(samples, sha_rate),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, required=True, help="where pulls and downloads land")
    p.add_argument("--results", type=Path, help="write the markdown table here")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--weed-pid-file", type=Path, help="the S3 server's pid file, to count its CPU time")
    p.add_argument(
        "--s3-env",
        type=Path,
        help="AWS_* and MODELPLANE_S3_BUCKET lines (as `make s3-env` prints) of another server; "
        "default: start the one of `make s3`",
    )
    p.add_argument("--single-mib", type=int, default=1024)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--shard-mib", type=int, default=256)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    load_before = machine.load_average()
    s3 = server_from_env_lines(args.s3_env.read_text()) if args.s3_env else start_s3()
    artifacts = ensure_artifacts(s3, args.single_mib, args.shards, args.shard_mib)
    sha_rate = sha256_one_core()
    bench = Bench(args, s3)
    bench.run(artifacts)
    text = report(bench, started, load_before, sha_rate)
    print()
    print(text)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        previous = args.results.read_text() if args.results.exists() else ""
        args.results.write_text(harness.with_notes(text, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
