"""`modelplane-runtime pull --uri URI --dest DIR [--digest sha256:HEX]`: fetch, verify, place a model.

URI is ``s3://``, ``gs://``, ``http(s)://``, ``file://`` or a local path, or ``hf://ORG/REPO[@REV]``
(see ``storage/``). A URI naming one file puts that file into DEST, unpacked when it is a
``.tar.gz``/``.tgz``/``.tar``/``.zip``; a prefix, directory or repository puts its whole tree into
DEST. ``--digest`` pins the sha256 of the file as fetched, or of the tree's manifest (the format is in
``storage/digest.py``); a mismatch is refused.

Atomic: everything is fetched and verified in a staging directory first. When DEST does not exist
the staging directory sits beside it and is renamed to DEST at the end. When DEST exists (an
emptyDir mount point cannot be renamed over) staging happens inside it and the verified tree is
moved in. Either way the pull record (``contract.PULL_RECORD_FILE``, ``{"uri", "digest", "bytes"}``)
is written last, so a DEST without it never passes for a whole pull; a DEST whose record already
names the same URI (and digest) is left as it is.

Failure: one line ``<Reason>: <message>`` on stderr and in the termination log (the kubelet's
``/dev/termination-log``, when it exists), exit ``contract.EXIT_PERMANENT`` or ``EXIT_TRANSIENT``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import modelplane_contract as contract

from modelplane_runtime.storage import archive, digest
from modelplane_runtime.storage.base import Backend, PullError, Settings
from modelplane_runtime.storage.dispatch import backend_for
from modelplane_runtime.storage.transfer import RetryPolicy, fetch_all, with_retries

log = logging.getLogger("modelplane.pull")
STAGING_PREFIX = ".modelplane-staging-"
# Present in DEST while a verified tree is being moved in: what is there is ours to replace.
PARTIAL_MARKER = ".modelplane-pull.partial"


@dataclass(frozen=True)
class PullRecord:
    uri: str
    digest: str
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "digest": self.digest, "bytes": self.bytes}


def pull(
    uri: str,
    dest: Path,
    expected: str | None,
    settings: Settings,
    policy: RetryPolicy,
    concurrency: int = 4,
) -> PullRecord:
    """Fetches URI into DEST; see the module docstring. Raises PullError."""
    existing = read_record(dest)
    if existing and existing.uri == uri and expected in (None, existing.digest):
        log.info("%s already holds %s (%s); nothing to do", dest, uri, existing.digest)
        return existing
    backend = backend_for(uri, settings)
    try:
        record = fetch_verified(backend, uri, dest, expected, policy, concurrency)
    finally:
        backend.close()
    log.info("pulled %s into %s: %d bytes, %s", uri, dest, record.bytes, record.digest)
    return record


def fetch_verified(
    backend: Backend, uri: str, dest: Path, expected: str | None, policy: RetryPolicy, concurrency: int
) -> PullRecord:
    """Fetches, verifies (and unpacks) into a staging directory, then places the tree at DEST."""
    workspace = make_workspace(dest)
    try:
        listing = with_retries("listing", backend, policy, backend.list)
        log.info("pulling %s: %d file(s) into %s", uri, len(listing.files), dest)
        tree = workspace / "tree"
        tree.mkdir()
        if listing.single and archive.is_archive(listing.files[0].relpath):
            fetched = fetch_all(backend, listing, workspace / "download", policy, concurrency)
            [(name, (sha, _size))] = fetched.items()
            actual = digest.file_digest(sha)
            digest.verify(expected, actual, uri)  # before unpacking: never open an unverified archive
            archive.unpack(workspace / "download" / name, tree)
        else:
            fetched = fetch_all(backend, listing, tree, policy, concurrency)
            if listing.single:
                actual = digest.file_digest(next(iter(fetched.values()))[0])
            else:
                actual = digest.manifest_digest({path: sha for path, (sha, _) in fetched.items()})
            digest.verify(expected, actual, uri)
        record = PullRecord(uri, actual, sum(size for _, size in fetched.values()))
        place(tree, dest, record)
        return record
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def read_record(dest: Path) -> PullRecord | None:
    try:
        data = json.loads((dest / contract.PULL_RECORD_FILE).read_text())
        return PullRecord(str(data["uri"]), str(data["digest"]), int(data["bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_workspace(dest: Path) -> Path:
    """A staging directory on DEST's filesystem: inside DEST when it exists, else beside it."""
    if dest.exists() and not dest.is_dir():
        raise PullError(contract.REASON_INVALID_ARGUMENT, f"--dest {dest} is a file: name a directory")
    if dest.is_dir():
        for stale in dest.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a pull that was killed
        # lost+found: the root of an ext4 volume (a PVC) has one and it is not the user's content.
        others = [p.name for p in dest.iterdir() if p.name not in (PARTIAL_MARKER, "lost+found")]
        if others and read_record(dest) is None and not (dest / PARTIAL_MARKER).exists():
            raise PullError(
                contract.REASON_INVALID_ARGUMENT,
                f"--dest {dest} is not empty and holds no earlier pull ({', '.join(sorted(others)[:3])}...): "
                "name an empty or new directory",
            )
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dest.name}{STAGING_PREFIX}"
    for stale in dest.parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a pull that was killed
    return Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))


def place(tree: Path, dest: Path, record: PullRecord) -> None:
    """Puts the verified TREE at DEST, the record last."""
    write_record(tree, record)
    if not dest.exists():
        tree.rename(dest)
        return
    marker = dest / PARTIAL_MARKER
    marker.touch()
    (dest / contract.PULL_RECORD_FILE).unlink(missing_ok=True)
    workspace = tree.parent
    for old in dest.iterdir():
        if old not in (marker, workspace) and old.name != "lost+found":
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    for entry in tree.iterdir():
        if entry.name != contract.PULL_RECORD_FILE:
            entry.rename(dest / entry.name)
    (tree / contract.PULL_RECORD_FILE).rename(dest / contract.PULL_RECORD_FILE)
    marker.unlink()


def write_record(tree: Path, record: PullRecord) -> None:
    (tree / contract.PULL_RECORD_FILE).write_text(json.dumps(record.as_json()) + "\n")


def write_termination_message(line: str, termination_log: Path) -> None:
    # The kubelet creates the file; elsewhere (a laptop, a test) there is nothing to write to.
    if termination_log.exists():
        try:
            termination_log.write_text(line + "\n")
        except OSError as error:
            log.warning("could not write %s: %s", termination_log, error)


def report_failure(failure: PullError, termination_log: Path) -> int:
    line = contract.format_termination_message(failure.reason, failure.message)
    print(line, file=sys.stderr)  # noqa: T201 - the one line a user reads in the container's log
    write_termination_message(line, termination_log)
    return contract.EXIT_PERMANENT if failure.permanent else contract.EXIT_TRANSIENT


def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise PullError(contract.REASON_INVALID_ARGUMENT, f"{name}={raw!r} is not a number") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{contract.RUNTIME_COMMAND} {contract.PULL_SUBCOMMAND}",
        description="Fetch a model (file, prefix, archive or Hub repository) into DEST, verified.",
    )
    p.add_argument(
        "--uri", default=os.environ.get(contract.ENV_MODEL_URI), help=f"env {contract.ENV_MODEL_URI}"
    )
    p.add_argument(
        "--dest",
        default=os.environ.get(contract.ENV_MODEL_DIR, contract.MODEL_DIR),
        help=f"directory to fill (env {contract.ENV_MODEL_DIR}, default {contract.MODEL_DIR})",
    )
    p.add_argument(
        "--digest",
        default=os.environ.get(contract.ENV_MODEL_DIGEST) or None,
        help=f"sha256:HEX of the file or of the directory manifest (env {contract.ENV_MODEL_DIGEST})",
    )
    p.add_argument(
        "--stall-seconds",
        type=float,
        help=f"abort a read with no bytes for this long (env {contract.ENV_PULL_STALL_SECONDS}, default 30)",
    )
    p.add_argument(
        "--retries",
        type=int,
        help=f"retries of a transient failure (env {contract.ENV_PULL_RETRIES}, default 4)",
    )
    p.add_argument(
        "--backoff-seconds",
        type=float,
        help=f"first retry delay, doubling (env {contract.ENV_PULL_BACKOFF_SECONDS}, default 1)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        help=f"files fetched at once (env {contract.ENV_PULL_CONCURRENCY}, default 4)",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        default=Path(contract.TERMINATION_LOG),
        help="where the one-line failure reason also goes, when it exists",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # A handler of our own for this call: the root logger may belong to a host program (or pytest).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("modelplane")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return run(args)
    finally:
        logger.removeHandler(handler)


def run(args: argparse.Namespace) -> int:
    try:
        if not args.uri:
            raise PullError(
                contract.REASON_INVALID_URI, f"no model URI: pass --uri or set {contract.ENV_MODEL_URI}"
            )
        expected = digest.parse_digest(args.digest) if args.digest else None
        stall = (
            args.stall_seconds
            if args.stall_seconds is not None
            else env_number(contract.ENV_PULL_STALL_SECONDS, 30)
        )
        retries = args.retries if args.retries is not None else int(env_number(contract.ENV_PULL_RETRIES, 4))
        backoff = (
            args.backoff_seconds
            if args.backoff_seconds is not None
            else env_number(contract.ENV_PULL_BACKOFF_SECONDS, 1)
        )
        concurrency = (
            args.concurrency
            if args.concurrency is not None
            else int(env_number(contract.ENV_PULL_CONCURRENCY, 4))
        )
        if stall <= 0 or retries < 0 or backoff < 0 or concurrency < 1:
            raise PullError(
                contract.REASON_INVALID_ARGUMENT,
                "stall seconds and concurrency must be > 0, retries and backoff seconds >= 0",
            )
        record = pull(
            args.uri,
            Path(args.dest),
            expected,
            Settings(stall_seconds=stall),
            RetryPolicy(retries, backoff),
            concurrency,
        )
        write_termination_message(
            contract.format_pulled_message(contract.Pulled(record.uri, record.digest, record.bytes)),
            args.termination_log,
        )
    except PullError as failure:
        return report_failure(failure, args.termination_log)
    except Exception as error:  # an unforeseen error still ends in the contract's one line
        log.exception("unexpected error")
        return report_failure(
            PullError(contract.REASON_TRANSIENT, f"{type(error).__name__}: {error}"), args.termination_log
        )
    return contract.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
