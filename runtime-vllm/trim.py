"""Delete what serving on CPU never loads from the image's venv: most of the CUDA libraries.

PyPI's torch 2.13.0 is a CUDA build, and its libraries name a dozen NVIDIA ones as dependencies, so
those must be there for `import torch` to succeed even on CPU; but several of them only load more
libraries later, on a GPU (cuDNN's engines, NCCL's plugins), and the wheels also carry headers and
static libraries. This imports what the server and its CPU engine import, in a child process, reads
the shared objects that child mapped, and deletes every shared object under the NVIDIA packages it
did not map, with their headers and static libraries. The image's smoke test and the e2e generate
afterwards, so a library serving needs after all fails the build or the test, not a user.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Set
from pathlib import Path

# What the API server and the CPU engine core import before they serve (the engine runs in a child).
IMPORTS = (
    "torch",
    "vllm.entrypoints.openai.api_server",
    "vllm.v1.engine.core",
    "vllm.v1.worker.cpu_worker",
    "vllm.model_executor.models.llama",
)
PROBE = f"""
import importlib
for name in {IMPORTS!r}:
    importlib.import_module(name)
from vllm.platforms import current_platform
current_platform.import_kernels()  # vLLM's CPU kernels: the AVX2 or AVX512 build this CPU runs
with open("/proc/self/maps") as maps:
    print("\\n".join(sorted({{line.split()[-1] for line in maps if ".so" in line}})))
"""
UNUSED_SUFFIXES = (".a", ".bc")  # static libraries and device bitcode: never loaded by a process


def removable(root: Path, mapped: Set[Path]) -> list[Path]:
    """Under ROOT: the include/ directories, static libraries and bitcode, and every shared object
    (a regular file, not a symlink) whose real path is not in MAPPED."""
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or any(parent in found for parent in path.parents):
            continue
        if path.is_dir():
            if path.name == "include":
                found.append(path)
        elif path.suffix in UNUSED_SUFFIXES or (".so" in path.name and path.resolve() not in mapped):
            found.append(path)
    return found


def size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.stat().st_size


def main() -> None:
    nvidia = Path(sysconfig.get_paths()["purelib"]) / "nvidia"
    probe = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True)
    mapped = {Path(line).resolve() for line in probe.stdout.split()}
    freed = 0
    for path in removable(nvidia, mapped):
        freed += size(path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    print(
        f"trim: {freed / 2**20:.0f} MiB of NVIDIA files serving on CPU never loads removed, "
        f"{size(nvidia) / 2**20:.0f} MiB kept"
    )


if __name__ == "__main__":
    main()
