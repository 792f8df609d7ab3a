#!/usr/bin/env bash
# Copies third-party CRDs (KEDA, Prometheus Operator) out of the projects' own Go modules into
# $CRD_DIR, so the chart and operator can be validated against them without running their controllers.
set -euo pipefail
: "${CRD_DIR:?}" "${KEDA_VERSION:?}" "${PROMETHEUS_OPERATOR_VERSION:?}"
stamp="$CRD_DIR/.keda-$KEDA_VERSION.prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
[ -f "$stamp" ] && exit 0
log() { printf '[fetch-crds %s] %s\n' "$(date +%T)" "$*"; }

module_dir() {  # the module's unpacked source in the Go module cache (downloaded, never built)
  local json dir
  json=$(go mod download -json "$1")
  dir=$(jq -r '.Dir // empty' <<<"$json")
  [ -n "$dir" ] || { echo "go mod download $1 failed: $(jq -r .Error <<<"$json")" >&2; exit 1; }
  echo "$dir"
}

copy() {  # copy SRC_DIR FILE...: the module cache is read-only, so give the copies normal modes
  local src=$1; shift
  for f in "$@"; do install -m 0644 "$src/$f" "$tmp/$f"; done
}

log "KEDA $KEDA_VERSION, Prometheus Operator $PROMETHEUS_OPERATOR_VERSION"
tmp=$(mktemp -d "${CRD_DIR%/}.tmp.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
keda=$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
copy "$keda/config/crd/bases" keda.sh_scaledobjects.yaml keda.sh_scaledjobs.yaml \
  keda.sh_triggerauthentications.yaml keda.sh_clustertriggerauthentications.yaml
promop=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
copy "$promop/example/prometheus-operator-crd" monitoring.coreos.com_servicemonitors.yaml \
  monitoring.coreos.com_podmonitors.yaml monitoring.coreos.com_prometheusrules.yaml
rm -rf "$CRD_DIR"; mv "$tmp" "$CRD_DIR"; chmod 755 "$CRD_DIR"
touch "$stamp"
log "$(ls "$CRD_DIR" | wc -l) CRDs in $CRD_DIR"
