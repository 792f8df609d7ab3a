"""One measured transfer in a process of its own (so its CPU time and peak RSS are its own).

    python -m tests.bench.pull_client raw|download_file|pull BUCKET DEST DIGEST KEY [KEY...]

``raw``: boto3 ``get_object`` and the body read to its end in 1 MiB chunks, nothing kept, nothing
hashed: the store's single-stream speed as a Python client sees it. Several keys are read one
after another (a single stream). ``download_file``: boto3's managed transfer (ranged parts on 10
threads) of each key into DEST, one key after another. ``pull``: ``modelplane-runtime pull`` of
``s3://BUCKET/KEY`` (one key: an object; a key ending in ``/``: the prefix) into DEST with
``--digest DIGEST``, called as its CLI calls it. Imports and the client come before the clock
starts, so interpreter start-up is not counted. Prints one JSON line: seconds, bytes, cpu_seconds
(all threads, during the transfer) and peak_rss_kib (the process's high-water mark, VmHWM: a new
address space at exec, unlike getrusage's maxrss, which a child inherits from its parent).
Endpoint and credentials come from the AWS_* variables.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from modelplane_runtime.pull import main as pull_main

RAW_CHUNK = 1 << 20


def client() -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def raw(s3: Any, bucket: str, keys: Sequence[str]) -> int:
    total = 0
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(RAW_CHUNK):
            total += len(chunk)
    return total


def download_file(s3: Any, bucket: str, keys: Sequence[str], dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for key in keys:
        target = dest / key.rsplit("/", 1)[-1]
        s3.download_file(bucket, key, str(target), Config=TransferConfig())
        total += target.stat().st_size
    return total


def pull(bucket: str, key: str, dest: Path, digest: str) -> int:
    code = pull_main(["--uri", f"s3://{bucket}/{key}", "--dest", str(dest), "--digest", digest])
    if code != 0:
        raise SystemExit(f"pull exited with {code}")
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.name.startswith("."))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(argv: Sequence[str]) -> int:
    method, bucket, dest_text, digest, *keys = argv
    dest = Path(dest_text)
    s3 = client()
    transfers: dict[str, Callable[[], int]] = {
        "raw": lambda: raw(s3, bucket, keys),
        "download_file": lambda: download_file(s3, bucket, keys, dest),
        "pull": lambda: pull(bucket, keys[0], dest, digest),
    }
    transfer = transfers[method]
    cpu_before, started = cpu_seconds(), time.perf_counter()
    count = transfer()
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    print(
        json.dumps({"seconds": seconds, "bytes": count, "cpu_seconds": cpu, "peak_rss_kib": peak_rss_kib()})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
