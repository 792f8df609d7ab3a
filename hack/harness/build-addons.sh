#!/usr/bin/env bash
# Builds the cluster add-ons that run as host processes from their Go modules into $BIN_DIR:
# metrics-server and rancher's local-path-provisioner (neither has replace directives).
set -euo pipefail
: "${METRICS_SERVER_VERSION:?}" "${LOCAL_PATH_PROVISIONER_VERSION:?}" "${BIN_DIR:?}"
log() { printf '[build-addons %s] %s\n' "$(date +%T)" "$*"; }
mkdir -p "$BIN_DIR"

build() {  # build NAME VERSION PACKAGE LDFLAGS
  local name=$1 version=$2 package=$3 ldflags=$4
  local stamp="$BIN_DIR/.$name-$version"
  [ -f "$stamp" ] && [ -x "$BIN_DIR/$name" ] && return 0
  log "$name $version"
  GOBIN="$BIN_DIR" CGO_ENABLED=0 nice go install -trimpath -gcflags "${GO_GCFLAGS:-}" -ldflags "-s -w $ldflags" "$package@$version"
  rm -f "$BIN_DIR/.$name-"*
  touch "$stamp"
}

v=k8s.io/client-go/pkg/version  # where metrics-server's own Makefile stamps its version
build metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server \
  "-X $v.gitVersion=$METRICS_SERVER_VERSION -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
build local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" github.com/rancher/local-path-provisioner \
  "-X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
