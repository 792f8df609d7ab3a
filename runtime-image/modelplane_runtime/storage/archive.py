"""Unpacking ``.tar.gz``/``.tgz``/``.tar`` and ``.zip`` archives, safely.

No entry may land outside the destination: absolute paths, ``..`` components and links are refused
(tar through the standard library's ``data`` filter, zip by checking every name), as are device
files. A corrupt archive is an unsupported artifact, not a crash.
"""

from __future__ import annotations

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
            with tarfile.open(archive, "r:*") as tar:
                # The data filter would quietly make absolute names relative; refuse them instead.
                for member in tar.getmembers():
                    safe_relpath(member.name, f"{name} entry")
                tar.extractall(dest, filter="data")
    except tarfile.FilterError as error:
        raise PullError(contract.REASON_UNSUPPORTED, f"{name}: unsafe entry refused: {error}") from error
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise PullError(contract.REASON_UNSUPPORTED, f"{name} is not a readable archive: {error}") from error


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
