#!/usr/bin/env bash
# Builds KEDA's operator and its metrics API server (the "adapter") from the Go module
# github.com/kedacore/keda/v2 into $KEDA_BIN_DIR (one directory per version). The module's go.mod
# has a replace, so `go install ...@version` refuses it; building inside the downloaded module
# directory uses the module's own go.mod and go.sum (its replace and exclude included) unchanged.
# Only the two commands the harness runs are compiled (not the admission webhooks).
set -euo pipefail
: "${KEDA_VERSION:?}" "${KEDA_BIN_DIR:?}"
stamp="$KEDA_BIN_DIR/.built"
[ -f "$stamp" ] && [ -x "$KEDA_BIN_DIR/keda" ] && [ -x "$KEDA_BIN_DIR/keda-adapter" ] && exit 0
log() { printf '[build-keda %s] %s\n' "$(date +%T)" "$*"; }
json=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION")
src=$(jq -r '.Dir // empty' <<<"$json")
[ -n "$src" ] || { echo "go mod download keda $KEDA_VERSION failed: $(jq -r .Error <<<"$json")" >&2; exit 1; }
log "keda $KEDA_VERSION: operator and metrics API server"
mkdir -p "$KEDA_BIN_DIR"
v=github.com/kedacore/keda/v2/version
# The module cache is read-only: -mod=readonly (the default) builds from go.sum without writing.
cd "$src"
CGO_ENABLED=0 nice go build -trimpath -gcflags "${GO_GCFLAGS:-}" \
  -ldflags "-s -w -X $v.Version=${KEDA_VERSION#v} -X $v.GitCommit=$KEDA_VERSION" \
  -o "$KEDA_BIN_DIR/keda" ./cmd/operator
CGO_ENABLED=0 nice go build -trimpath -gcflags "${GO_GCFLAGS:-}" \
  -ldflags "-s -w -X $v.Version=${KEDA_VERSION#v} -X $v.GitCommit=$KEDA_VERSION" \
  -o "$KEDA_BIN_DIR/keda-adapter" ./cmd/adapter
touch "$stamp"
log "built $(ls "$KEDA_BIN_DIR" | tr '\n' ' ')"
