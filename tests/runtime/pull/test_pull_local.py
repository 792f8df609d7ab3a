"""`pull` from local paths: files, directories, archives, digests, and how DEST is filled atomically."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import modelplane_contract as contract
import pytest
from modelplane_runtime.storage import archive
from modelplane_runtime.storage.base import PullError, RemoteFile, Settings
from modelplane_runtime.storage.local import LocalBackend

from tests.runtime.pull.conftest import PullRunner, assert_failed, sha256
from tests.support.cluster import REPO_ROOT

PERMANENT, TRANSIENT = contract.EXIT_PERMANENT, contract.EXIT_TRANSIENT


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "model.json": b'{"trees": 3}',
        "sub/weights.bin": bytes(range(256)) * 64,
        "sub/deeper/x.txt": b"x",
    }
    for relpath, data in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    return files


def shell_manifest_digest(root: Path) -> str:
    """The digest as the storage.digest docstring tells users to compute it, with coreutils."""
    out = subprocess.run(
        "find . -type f ! -name .modelplane-pull.json -printf '%P\\0' | LC_ALL=C sort -z "
        "| xargs -0 sha256sum | sha256sum",
        shell=True,
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "sha256:" + out.split()[0]


def test_file_lands_in_dest_with_its_record(tmp_path: Path, run_pull: PullRunner) -> None:
    source = tmp_path / "model.ubj"
    source.write_bytes(b"\x00model bytes\xff" * 1000)
    result = run_pull(str(source))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model.ubj").read_bytes() == source.read_bytes()
    assert result.record() == {"uri": str(source), "digest": sha256(source.read_bytes()), "bytes": 13000}
    # The operator reads the digest served (and a cache's bytes) from the pull's termination message.
    assert result.termination_log == f"Pulled: {source} {sha256(source.read_bytes())} (13000 bytes)"
    pulled = contract.parse_pulled_message(result.termination_log)
    assert pulled == contract.Pulled(str(source), sha256(source.read_bytes()), 13000)


def test_file_uri_and_matching_digest(tmp_path: Path, run_pull: PullRunner) -> None:
    source = tmp_path / "m.bin"
    source.write_bytes(b"abc")
    result = run_pull(source.as_uri(), "--digest", sha256(b"abc").upper().replace("SHA256", "sha256"))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "m.bin").read_bytes() == b"abc"


def test_directory_digest_is_the_documented_manifest(tmp_path: Path, run_pull: PullRunner) -> None:
    source = tmp_path / "src"
    files = make_tree(source)
    expected = shell_manifest_digest(source)
    result = run_pull(str(source), "--digest", expected)
    assert result.code == contract.EXIT_OK, result.stderr
    assert {p.relative_to(result.dest).as_posix() for p in result.dest.rglob("*") if p.is_file()} == {
        *files,
        contract.PULL_RECORD_FILE,
    }
    assert result.record()["digest"] == expected == shell_manifest_digest(result.dest)
    assert result.record()["bytes"] == sum(len(d) for d in files.values())


def test_digest_mismatch_is_refused_and_dest_stays_absent(tmp_path: Path, run_pull: PullRunner) -> None:
    source = tmp_path / "m.bin"
    source.write_bytes(b"abc")
    wrong = sha256(b"abd")
    result = run_pull(str(source), "--digest", wrong)
    assert_failed(result, PERMANENT, contract.REASON_DIGEST_MISMATCH, wrong, sha256(b"abc"))
    assert not result.dest.exists()
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_malformed_digest_is_refused(tmp_path: Path, run_pull: PullRunner) -> None:
    source = tmp_path / "m.bin"
    source.write_bytes(b"abc")
    result = run_pull(str(source), "--digest", "md5:1234")
    assert_failed(result, PERMANENT, contract.REASON_INVALID_ARGUMENT, "sha256:<64 hex digits>")


def test_missing_path_is_not_found(tmp_path: Path, run_pull: PullRunner) -> None:
    assert_failed(run_pull(str(tmp_path / "nope")), PERMANENT, contract.REASON_NOT_FOUND, "nope")


@pytest.mark.parametrize("uri", ["ftp://host/model", "s3:///key", "hf://just-a-name", "file://otherhost/x"])
def test_invalid_uri(run_pull: PullRunner, uri: str) -> None:
    assert_failed(run_pull(uri), PERMANENT, contract.REASON_INVALID_URI, "s3://")


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "pack"), [("model.tar.gz", tar_gz), ("model.zip", zip_bytes)])
def test_archive_is_unpacked_and_digest_is_the_archives(
    tmp_path: Path, run_pull: PullRunner, name: str, pack: Callable[[dict[str, bytes]], bytes]
) -> None:
    members = {"model.json": b"{}", "assets/vocab.txt": b"a\nb\n"}
    data = pack(members)
    (tmp_path / name).write_bytes(data)
    result = run_pull(str(tmp_path / name), "--digest", sha256(data))
    assert result.code == contract.EXIT_OK, result.stderr
    for relpath, content in members.items():
        assert (result.dest / relpath).read_bytes() == content
    assert not (result.dest / name).exists()
    assert result.record() == {"uri": str(tmp_path / name), "digest": sha256(data), "bytes": len(data)}


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("evil.tar.gz", tar_gz({"../escaped.txt": b"x"})),
        ("evil.tgz", tar_gz({"/etc/escaped.txt": b"x"})),
        ("evil.zip", zip_bytes({"../../escaped.txt": b"x"})),
    ],
)
def test_archive_escaping_dest_is_refused(
    tmp_path: Path, run_pull: PullRunner, name: str, data: bytes
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(data)
    result = run_pull(str(tmp_path / "in" / name), dest=tmp_path / "out" / "model")
    assert_failed(result, PERMANENT, contract.REASON_UNSUPPORTED, name)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_tar_symlink_out_of_dest_is_refused(tmp_path: Path, run_pull: PullRunner) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "l.tar.gz").write_bytes(buffer.getvalue())
    assert_failed(run_pull(str(tmp_path / "l.tar.gz")), PERMANENT, contract.REASON_UNSUPPORTED, "l.tar.gz")


def tar_with(*entries: tarfile.TarInfo, files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for relpath, data in (files or {}).items():
            info = tarfile.TarInfo(relpath)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for entry in entries:
            tar.addfile(entry)
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname = kind, linkname
    return entry


@pytest.mark.parametrize(
    "entry",
    [
        tar_entry("sub/up", tarfile.SYMTYPE, "../../escaped.txt"),
        tar_entry("hard", tarfile.LNKTYPE, "../escaped.txt"),
        tar_entry("dev", tarfile.CHRTYPE),
        tar_entry("fifo", tarfile.FIFOTYPE),
    ],
    ids=["symlink-up", "hardlink-up", "device", "fifo"],
)
@pytest.mark.parametrize("data_filter", [True, False], ids=["with-data-filter", "python-3.11.2"])
def test_tar_links_out_and_special_files_are_refused_with_or_without_the_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: tarfile.TarInfo, data_filter: bool
) -> None:
    # The image's Debian Python (3.11.2) has no tarfile data filter: the checks must not need it.
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter")
    archive_path = tmp_path / "m.tar.gz"
    archive_path.write_bytes(tar_with(entry, files={"model.json": b"{}"}))
    (tmp_path / "out").mkdir()
    with pytest.raises(PullError) as refused:
        archive.unpack(archive_path, tmp_path / "out")
    assert refused.value.reason == contract.REASON_UNSUPPORTED
    assert entry.name in str(refused.value)
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("data_filter", [True, False], ids=["with-data-filter", "python-3.11.2"])
def test_tar_with_links_inside_unpacks_with_or_without_the_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool
) -> None:
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter")
    archive_path = tmp_path / "m.tar.gz"
    setuid = tarfile.TarInfo("bin/tool")
    setuid.size, setuid.mode = 2, 0o4777
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(setuid, io.BytesIO(b"#!"))
        blob = tarfile.TarInfo("blobs/abc")
        blob.size = 3
        tar.addfile(blob, io.BytesIO(b"w=1"))
        tar.addfile(tar_entry("snapshots/main/weights", tarfile.SYMTYPE, "../../blobs/abc"))
        tar.addfile(tar_entry("copy", tarfile.LNKTYPE, "blobs/abc"))
    archive_path.write_bytes(buffer.getvalue())
    out = tmp_path / "out"
    out.mkdir()
    archive.unpack(archive_path, out)
    assert (out / "snapshots/main/weights").read_bytes() == b"w=1"
    assert (out / "copy").read_bytes() == b"w=1"
    assert (out / "bin/tool").stat().st_mode & 0o7777 == 0o755


def test_corrupt_archive_is_unsupported(tmp_path: Path, run_pull: PullRunner) -> None:
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tarball")
    assert_failed(
        run_pull(str(tmp_path / "bad.tar.gz")), PERMANENT, contract.REASON_UNSUPPORTED, "bad.tar.gz"
    )


def test_existing_empty_dest_is_filled_in_place(tmp_path: Path, run_pull: PullRunner) -> None:
    # An emptyDir mount point: it exists and cannot be renamed over, so staging happens inside it.
    dest = tmp_path / "mnt" / "models"
    dest.mkdir(parents=True)
    source = tmp_path / "src"
    files = make_tree(source)
    result = run_pull(str(source), dest=dest)
    assert result.code == contract.EXIT_OK, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(["model.json", "sub", contract.PULL_RECORD_FILE])
    assert (dest / "sub/weights.bin").read_bytes() == files["sub/weights.bin"]


def test_second_pull_of_the_same_uri_keeps_dest(tmp_path: Path, run_pull: PullRunner) -> None:
    source = tmp_path / "m.bin"
    source.write_bytes(b"v1")
    first = run_pull(str(source))
    source.write_bytes(b"v2 changed")
    second = run_pull(str(source), dest=first.dest)
    assert second.code == contract.EXIT_OK, second.stderr
    assert "nothing to do" in second.stderr
    assert (first.dest / "m.bin").read_bytes() == b"v1"


def test_pull_of_another_uri_replaces_an_earlier_pull(tmp_path: Path, run_pull: PullRunner) -> None:
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    first = run_pull(str(tmp_path / "a.bin"))
    second = run_pull(str(tmp_path / "b.bin"), dest=first.dest)
    assert second.code == contract.EXIT_OK, second.stderr
    assert sorted(p.name for p in first.dest.iterdir()) == sorted(["b.bin", contract.PULL_RECORD_FILE])


def test_foreign_nonempty_dest_is_refused(tmp_path: Path, run_pull: PullRunner) -> None:
    (tmp_path / "m.bin").write_bytes(b"m")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    result = run_pull(str(tmp_path / "m.bin"), dest=dest)
    assert result.code == PERMANENT
    assert result.reason_line.startswith(f"{contract.REASON_INVALID_ARGUMENT}: --dest {dest} is not empty")
    assert (dest / "precious.txt").read_text() == "keep me"


def test_the_cli_exits_with_the_code_and_one_line(tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplane_runtime.pull",
            "--uri",
            str(tmp_path / "missing.onnx"),
            "--dest",
            str(tmp_path / "dest"),
            "--termination-log",
            str(termination_log),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == PERMANENT
    line = f"{contract.REASON_NOT_FOUND}: no file or directory at {tmp_path / 'missing.onnx'}"
    assert result.stderr.strip().splitlines()[-1] == line
    assert termination_log.read_text() == line + "\n"


def test_staging_left_by_a_killed_pull_is_cleaned(tmp_path: Path, run_pull: PullRunner) -> None:
    (tmp_path / "m.bin").write_bytes(b"m")
    dest = tmp_path / "out" / "model"
    leftover = tmp_path / "out" / ".model.modelplane-staging-killed"
    (leftover / "tree").mkdir(parents=True)
    (leftover / "tree" / "half.bin").write_bytes(b"ha")
    result = run_pull(str(tmp_path / "m.bin"), dest=dest)
    assert result.code == contract.EXIT_OK, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]


def test_local_read_of_a_byte_range(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "m.bin").write_bytes(data)
    backend = LocalBackend(tmp_path / "m.bin", Settings(chunk_bytes=1 << 20))
    remote = RemoteFile("m.bin", len(data), str(tmp_path / "m.bin"))
    for start, end in [(0, 10), (5, (2 << 20) + 3), (len(data) - 1, len(data)), (7, None), (len(data), None)]:
        assert b"".join(backend.read(remote, start, end)) == data[start:end]
