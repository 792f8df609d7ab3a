#!/usr/bin/env bash
# image-import.sh REF CONTEXT CONTAINERFILE [buildah bud args...]
# Builds an image with buildah (no Docker engine here) and imports it into the node's containerd.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
ref=$1 context=$2 file=$3; shift 3
BUILDAH=(buildah --root "$CACHE_DIR/buildah/root" --runroot /run/modelplane/buildah --storage-driver vfs)
mkdir -p "$CACHE_DIR/images"
# LAYERS=true reuses the cached layers of a build before (images.sh keeps a dependency stage so).
"${BUILDAH[@]}" bud --isolation chroot --layers="${LAYERS:-false}" -q -f "$file" -t "$ref" "$@" "$context" >/dev/null
archive="$CACHE_DIR/images/$(echo "$ref" | tr '/:' '__').oci.tar"
rm -f "$archive"
"${BUILDAH[@]}" push -q --disable-compression "$ref" "oci-archive:$archive:$ref"
trap 'rm -f "$archive"' EXIT
if [ -S "$CONTAINERD_SOCK" ]; then
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack=false "$archive" >/dev/null
  # Keep the image from the kubelet's garbage collector and from buildah's growing store.
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null || true
  # Older builds of the same image are pinned too: drop them so the node's disk stays bounded.
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep "^${ref%:*}:" | grep -vx "$ref" |
    xargs -r ctr --address "$CONTAINERD_SOCK" -n k8s.io images rm >/dev/null || true
fi
# The base image stays in buildah's store for the images built FROM it; others leave.
[ "${KEEP_IN_BUILDAH:-0}" = 1 ] || "${BUILDAH[@]}" rmi "$ref" >/dev/null 2>&1 || true
log "imported $ref"
