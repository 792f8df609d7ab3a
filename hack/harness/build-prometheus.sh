#!/usr/bin/env bash
# Builds prometheus and promtool from the Prometheus Go module into $BIN_DIR. Debian's package is
# built without Kubernetes service discovery ("field kubernetes_sd_configs not found"), and that is
# how users' Prometheus finds model pods. Only the Kubernetes discovery is compiled in (the
# remove_all_sd build tag drops the cloud ones), which keeps the build smaller.
set -euo pipefail
: "${PROMETHEUS_VERSION:?}" "${BIN_DIR:?}"
stamp="$BIN_DIR/.prometheus-$PROMETHEUS_VERSION"
[ -f "$stamp" ] && [ -x "$BIN_DIR/prometheus" ] && [ -x "$BIN_DIR/promtool" ] && exit 0
# Module v0.MMM.P is Prometheus 3.MM.P (the project's Go module tags lag its release tags).
minor=${PROMETHEUS_VERSION#v0.}; patch=${minor#*.}; minor=${minor%%.*}
release="$((minor / 100)).$((minor % 100)).$patch"
printf '[build-prometheus %s] prometheus %s (Go module %s), kubernetes discovery only\n' \
  "$(date +%T)" "$release" "$PROMETHEUS_VERSION"
mkdir -p "$BIN_DIR"
rm -f "$BIN_DIR/prometheus" "$BIN_DIR/promtool"   # links to an older unpacked Debian build
v=github.com/prometheus/common/version
ld="-s -w -X $v.Version=$release -X $v.Branch=HEAD -X $v.BuildUser=modelplane -X $v.BuildDate=19700101-00:00:00"
GOBIN="$BIN_DIR" CGO_ENABLED=0 nice go install -trimpath -gcflags "${GO_GCFLAGS:-}" -tags remove_all_sd,enable_kubernetes_sd \
  -ldflags "$ld" "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
rm -f "$BIN_DIR"/.prometheus-*
"$BIN_DIR/prometheus" --version | head -1
touch "$stamp"
