#!/usr/bin/env bash
# Builds etcd and the Kubernetes components from their upstream Go modules into $BIN_DIR.
# k8s.io/kubernetes replaces its staging modules with local paths, so `go install` refuses it;
# a small wrapper module requires it and points each staging module at its published release.
set -euo pipefail
: "${K8S_VERSION:?}" "${ETCD_VERSION:?}" "${BIN_DIR:?}" "${BUILD_DIR:?}"
staging="v0.${K8S_VERSION#v1.}"
mkdir -p "$BIN_DIR" "$BUILD_DIR"
log() { printf '[build-kubernetes %s] %s\n' "$(date +%T)" "$*"; }

build_etcd() {
  # Read the whole output first: `| grep -q` under pipefail fails when grep closes the pipe early.
  local have; have=$("$BIN_DIR/etcd" --version 2>/dev/null || true)
  [[ "$have" == *"etcd Version: ${ETCD_VERSION#v}"* ]] && return 0
  log "etcd $ETCD_VERSION"
  local dir="$BUILD_DIR/etcd-$ETCD_VERSION"
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init local/etcdbuild >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
  CGO_ENABLED=0 go build -trimpath -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
  CGO_ENABLED=0 go build -trimpath -o "$BIN_DIR/etcdctl" go.etcd.io/etcd/etcdctl/v3
}

build_kubernetes() {
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local stamp="$BIN_DIR/.kubernetes-$K8S_VERSION"
  [ -f "$stamp" ] && return 0
  log "kubernetes $K8S_VERSION (staging modules $staging)"
  local dir="$BUILD_DIR/kubernetes-$K8S_VERSION"
  mkdir -p "$dir" && cd "$dir"
  [ -f go.mod ] || go mod init local/k8sbuild >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
  # Every `k8s.io/X => ./staging/src/k8s.io/X` line becomes a replace with the published version.
  grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="$m=$m@$staging"
  done
  local pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  go get "k8s.io/kubernetes@$K8S_VERSION" "${pkgs[@]/%/@$K8S_VERSION}" 2>&1 | tail -3
  local major minor ld=""
  major=$(echo "$K8S_VERSION" | cut -d. -f1 | tr -d v); minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "compiling ${cmds[*]}"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$BIN_DIR/" "${pkgs[@]}"
  touch "$stamp"
}

build_etcd_or_k8s="${1:-all}"
case "$build_etcd_or_k8s" in
  etcd) build_etcd ;;
  kubernetes) build_kubernetes ;;
  all) build_etcd; build_kubernetes ;;
esac
log "done"
