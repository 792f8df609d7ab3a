#!/usr/bin/env bash
# image-import.sh REF CONTEXT CONTAINERFILE [buildah bud args...]
# Builds an image with buildah (no Docker engine here) into an OCI archive and imports that into the
# node's containerd. ARCHIVE_ONLY=1 stops at the archive (make builds makes the images before the cluster
# is up; `image-import.sh --import REF` imports it later and removes it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
BUILDAH=(buildah --root "$CACHE_DIR/buildah/root" --runroot /run/modelplane/buildah --storage-driver vfs)
CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
mkdir -p "$CACHE_DIR/images"

import_archive() { # ref archive
  local ref=$1 archive=$2
  "${CTR[@]}" images import --no-unpack=false "$archive" >/dev/null
  # Keep the image from the kubelet's garbage collector and from buildah's growing store.
  "${CTR[@]}" images label "$ref" io.cri-containerd.pinned=pinned >/dev/null || true
  # Older builds of the same image are pinned too: drop them so the node's disk stays bounded.
  "${CTR[@]}" images ls -q | grep "^${ref%:*}:" | grep -vx "$ref" | xargs -r "${CTR[@]}" images rm >/dev/null || true
  rm -f "$archive"
  log "imported $ref"
}

if [ "${1:-}" = --import ]; then
  ref=$2; import_archive "$ref" "$(image_archive "$ref")"; exit 0
fi

ref=$1 context=$2 file=$3; shift 3
archive=$(image_archive "$ref")
# LAYERS=true reuses the cached layers of a build before (images.sh keeps a dependency stage so).
"${BUILDAH[@]}" bud --isolation chroot --layers="${LAYERS:-false}" -q -f "$file" -t "$ref" "$@" "$context" >/dev/null
rm -f "$archive" "$archive.tmp"
"${BUILDAH[@]}" push -q --disable-compression "$ref" "oci-archive:$archive.tmp:$ref"
mv "$archive.tmp" "$archive"  # whole or absent: an archive present is a finished image
# The base image stays in buildah's store for the images built FROM it; others leave.
[ "${KEEP_IN_BUILDAH:-0}" = 1 ] || "${BUILDAH[@]}" rmi "$ref" >/dev/null 2>&1 || true
if [ "${ARCHIVE_ONLY:-0}" = 1 ]; then log "built $ref (archived, imported with the cluster up)"; exit 0; fi
if [ -S "$CONTAINERD_SOCK" ]; then import_archive "$ref" "$archive"; else rm -f "$archive"; fi
