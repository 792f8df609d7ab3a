"""Unpacking ``.tar.gz``/``.tgz``/``.tar`` and ``.zip`` archives, safely.

No entry may land outside the destination: absolute paths, ``..`` components and links are refused
(tar through the standard library's ``data`` filter, zip by checking every name), as are device
files. A corrupt archive is an unsupported artifact, not a crash.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import modelplane_contract as contract

from modelplane_runtime.storage.base import PullError, safe_relpath

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
ZIP_SUFFIXES = (".zip",)


def is_archive(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES + ZIP_SUFFIXES)


def unpack(archive: Path, dest: Path) -> None:
    """Unpacks ARCHIVE into the directory DEST (which exists)."""
    name = archive.name
    try:
        if name.lower().endswith(ZIP_SUFFIXES):
            _unzip(archive, dest)
        else:
            _untar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise PullError(contract.REASON_UNSUPPORTED, f"{name} is not a readable archive: {error}") from error


def _untar(archive: Path, dest: Path) -> None:
    # Every entry is checked here, not only by the standard library's `data` filter: the filter is
    # missing from the Python 3.11.2 of the image's Debian base (it came in 3.11.4), and it would
    # quietly make absolute names relative where this refuses them.
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_tar_member(archive.name, member)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members, filter="data")
        else:
            for member in members:
                member.mode &= 0o755  # as the data filter does: no setuid, nothing group/other-writable
            tar.extractall(dest, members)


def _check_tar_member(name: str, member: tarfile.TarInfo) -> None:
    relpath = safe_relpath(member.name, f"{name} entry")
    if member.issym() or member.islnk():
        # A symlink resolves from its own directory, a hard link from the archive's root.
        base = posixpath.dirname(relpath) if member.issym() else ""
        if member.linkname.startswith("/"):
            raise PullError(
                contract.REASON_UNSUPPORTED, f"{name}: link {member.name!r} to {member.linkname!r} refused"
            )
        safe_relpath(posixpath.join(base, member.linkname), f"{name}: the target of link {member.name!r}")
    elif not (member.isfile() or member.isdir()):
        raise PullError(contract.REASON_UNSUPPORTED, f"{name}: special file entry {member.name!r} refused")


def _unzip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            relpath = safe_relpath(info.filename, f"{archive.name} entry")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise PullError(
                    contract.REASON_UNSUPPORTED, f"{archive.name}: link entry {info.filename!r} refused"
                )
            target = dest / relpath
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
