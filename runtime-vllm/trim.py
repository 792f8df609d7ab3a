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


def main() -> None:
    nvidia = Path(sysconfig.get_paths()["purelib"]) / "nvidia"
    mapped = {
        Path(p).resolve()
        for p in subprocess.run(
            [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
        ).stdout.split()
    }
    freed = 0
    for path in sorted(nvidia.rglob("*")):
        if not path.exists() or path.is_symlink():
            continue
        unused_library = path.is_file() and ".so" in path.name and path.resolve() not in mapped
        if path.is_dir() and path.name == "include":
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif unused_library or (path.is_file() and path.suffix in (".a", ".bc")):
            freed += path.stat().st_size
            path.unlink()
    kept = sum(f.stat().st_size for f in nvidia.rglob("*") if f.is_file() and not f.is_symlink())
    print(
        f"trim: {freed / 2**20:.0f} MiB of NVIDIA files serving on CPU never loads removed, "
        f"{kept / 2**20:.0f} MiB kept"
    )


if __name__ == "__main__":
    main()
