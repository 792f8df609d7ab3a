#!/usr/bin/env bash
# Builds the pod sandbox (pause) image and imports it into the node's containerd, once.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
ctr_ images ls -q | grep -x "$PAUSE_IMAGE" >/dev/null && exit 0  # no -q: see in_node in images.sh
log "building $PAUSE_IMAGE"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$HERE/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
cp "$HERE/pause/Containerfile" "$work/"
"$HERE/image-import.sh" "$PAUSE_IMAGE" "$work" "$work/Containerfile"
