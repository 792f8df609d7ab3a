#!/usr/bin/env bash
# Builds KWOK's controller (`kwok`, not kwokctl) from the Go module sigs.k8s.io/kwok into
# $KWOK_BIN_DIR (one directory per version). The module's go.mod has no replace directives, so a
# plain `go install` of the tagged command works. Stamped as KWOK's release script does.
set -euo pipefail
: "${KWOK_VERSION:?}" "${KWOK_BIN_DIR:?}"
stamp="$KWOK_BIN_DIR/.built-$(go env GOVERSION)"
[ -f "$stamp" ] && [ -x "$KWOK_BIN_DIR/kwok" ] && exit 0
printf '[build-kwok %s] kwok %s\n' "$(date +%T)" "$KWOK_VERSION"
mkdir -p "$KWOK_BIN_DIR"
GOBIN="$KWOK_BIN_DIR" CGO_ENABLED=0 nice go install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
rm -f "$KWOK_BIN_DIR"/.built-*
touch "$stamp"
