#!/usr/bin/env bash
# Builds kube-router from its Go module github.com/cloudnativelabs/kube-router/v2 (no replace
# directives, so `go install` works) into $KUBE_ROUTER_DIR, a cache directory keyed by this
# script's inputs (version, Go toolchain, flags). The harness runs only its network-policy firewall.
set -euo pipefail
: "${KUBE_ROUTER_VERSION:?}" "${KUBE_ROUTER_DIR:?}"
[ -x "$KUBE_ROUTER_DIR/kube-router" ] && exit 0
log() { printf '[build-kube-router %s] %s\n' "$(date +%T)" "$*"; }
log "kube-router $KUBE_ROUTER_VERSION into $KUBE_ROUTER_DIR"
v=github.com/cloudnativelabs/kube-router/v2/pkg/version
tmp=$KUBE_ROUTER_DIR.tmp
rm -rf "$tmp"; mkdir -p "$tmp"
GOBIN="$tmp" CGO_ENABLED=0 nice go install -trimpath -gcflags "${GO_GCFLAGS:-}" \
  -ldflags "-s -w -X $v.Version=$KUBE_ROUTER_VERSION -X $v.BuildDate=1970-01-01T00:00:00Z" \
  "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
rm -rf "$KUBE_ROUTER_DIR"; mv "$tmp" "$KUBE_ROUTER_DIR"
log "built $KUBE_ROUTER_DIR/kube-router ($("$KUBE_ROUTER_DIR/kube-router" --version 2>&1 | head -1))"
