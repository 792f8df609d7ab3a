"""What the benchmarks record about the machine and the code they ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def versions(python: Path, *packages: str) -> str:
    """``name version`` of each installed package, as PYTHON's environment has them."""
    code = "import importlib.metadata as m, sys; print(' '.join(f'{p} {m.version(p)}' for p in sys.argv[1:]))"
    try:
        out = subprocess.run(
            [str(python), "-c", code, *packages], check=False, capture_output=True, text=True, timeout=60
        )
    except OSError as error:
        return f"({python}: {error})"
    return out.stdout.strip() or f"({python}: {out.stderr.strip()[-200:]})"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# The local cluster idling (API server, etcd, kubelet, controllers) keeps the 1-minute load near 0.3.
QUIET_LOAD = 1.0


def standing(load_before: str) -> str:
    """How the machine stood as a benchmark began, from the load averages (load_average()) read
    then: what a reader needs to trust durations, which other work stretches (counts it does not)."""
    one_minute = float(load_before.split()[0])
    if one_minute < QUIET_LOAD:
        return f"quiet as this began (load average {load_before}: nothing but the idle cluster running)"
    return (
        f"**shared**: other work was running as this began (load average {load_before}); durations "
        "are pessimistic and noisy"
    )


def pin_pod(pod_uid: str, cpu: int) -> int:
    """Pin every thread of every process of the pod POD_UID (found by its cgroup, as the kubelet names
    it with either driver) to CPU, as `taskset` pins a host server; threads started later inherit it.
    The number of threads pinned (0: no process of the pod on this host)."""
    marks = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    pinned = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            if not any(mark in (proc / "cgroup").read_text() for mark in marks):
                continue
            for task in (proc / "task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), {cpu})
                    pinned += 1
    return pinned
