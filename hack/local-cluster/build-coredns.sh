#!/usr/bin/env bash
# Builds CoreDNS from its Go module into $BIN_DIR (it runs on the node as the cluster DNS).
set -euo pipefail
: "${COREDNS_VERSION:?}" "${BIN_DIR:?}" "${BUILD_DIR:?}"
stamp="$BIN_DIR/.coredns-$COREDNS_VERSION"
[ -f "$stamp" ] && [ -x "$BIN_DIR/coredns" ] && exit 0
printf '[build-coredns %s] coredns %s\n' "$(date +%T)" "$COREDNS_VERSION"
dir="$BUILD_DIR/coredns-$COREDNS_VERSION"; mkdir -p "$dir"; cd "$dir"
[ -f go.mod ] || go mod init local/corednsbuild >/dev/null 2>&1
go get "github.com/coredns/coredns@$COREDNS_VERSION" 2>&1 | tail -1
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/coredns" github.com/coredns/coredns
touch "$stamp"
