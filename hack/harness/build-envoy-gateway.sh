#!/usr/bin/env bash
# Builds Envoy Gateway from the Go module github.com/envoyproxy/gateway into $ENVOY_GATEWAY_BIN_DIR
# (one directory per version): one binary whose subcommands are the controller (`server`), `certgen`
# and `envoy shutdown-manager`. Built inside the downloaded module directory with its own go.mod and
# go.sum. The version is stamped, so `envoy-gateway version` names the release it was built from.
# `build-envoy-gateway.sh egctl` builds the module's CLI instead (make egctl; its `x translate` is
# what make bench-gateway runs), into the directory given the same way.
set -euo pipefail
: "${ENVOY_GATEWAY_VERSION:?}" "${ENVOY_GATEWAY_BIN_DIR:?}"
command=${1:-envoy-gateway}
case "$command" in envoy-gateway | egctl) ;; *) echo "usage: $0 [envoy-gateway|egctl]" >&2; exit 2 ;; esac
stamp="$ENVOY_GATEWAY_BIN_DIR/.built"
[ "$command" = envoy-gateway ] || stamp="$ENVOY_GATEWAY_BIN_DIR/.built-$command"
[ -f "$stamp" ] && [ -x "$ENVOY_GATEWAY_BIN_DIR/$command" ] && exit 0
log() { printf '[build-envoy-gateway %s] %s\n' "$(date +%T)" "$*"; }
json=$(go mod download -json "github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION")
src=$(jq -r '.Dir // empty' <<<"$json")
[ -n "$src" ] || { echo "go mod download envoy gateway $ENVOY_GATEWAY_VERSION failed: $(jq -r .Error <<<"$json")" >&2; exit 1; }
log "$command $ENVOY_GATEWAY_VERSION"
mkdir -p "$ENVOY_GATEWAY_BIN_DIR"
v=github.com/envoyproxy/gateway/internal/cmd/version
cd "$src"
CGO_ENABLED=0 nice go build -trimpath \
  -ldflags "-s -w -X $v.envoyGatewayVersion=$ENVOY_GATEWAY_VERSION -X $v.gitCommitID=$ENVOY_GATEWAY_VERSION" \
  -o "$ENVOY_GATEWAY_BIN_DIR/$command.tmp" "./cmd/$command"
mv "$ENVOY_GATEWAY_BIN_DIR/$command.tmp" "$ENVOY_GATEWAY_BIN_DIR/$command"
touch "$stamp"
log "built $ENVOY_GATEWAY_BIN_DIR/$command"
