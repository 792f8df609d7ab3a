"""runtime-vllm/trim.py's choice of what to delete: what a process never maps, nothing it does."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

TRIM = Path(__file__).parents[2] / "runtime-vllm" / "trim.py"


def trim_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_trim", TRIM)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unmapped_shared_objects_headers_and_static_libraries_go_mapped_ones_and_links_stay(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "cudnn" / "lib"
    lib.mkdir(parents=True)
    for name in ("libcudnn.so.9", "libcudnn_engines_precompiled.so.9", "libcudnn_static.a", "device.bc"):
        (lib / name).write_bytes(b"x")
    (lib / "libcudnn.so").symlink_to("libcudnn.so.9")
    (tmp_path / "cudnn" / "include").mkdir()
    (tmp_path / "cudnn" / "include" / "cudnn.h").write_text("/* */")
    (tmp_path / "cudnn" / "__init__.py").write_text("")

    removable = trim_module().removable(tmp_path, {(lib / "libcudnn.so.9").resolve()})

    assert sorted(p.relative_to(tmp_path).as_posix() for p in removable) == [
        "cudnn/include",
        "cudnn/lib/device.bc",
        "cudnn/lib/libcudnn_engines_precompiled.so.9",
        "cudnn/lib/libcudnn_static.a",
    ]
