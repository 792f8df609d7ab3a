#!/usr/bin/env bash
# Stops every component, removes the pods' containers and the network rules we made.
# Keeps the cache (binaries, certificates, images); `cluster-down.sh --purge` also forgets etcd's data.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
stop() {
  local name=$1 pid
  pid=$(cat "$RUN_DIR/$name.pid" 2>/dev/null) || return 0
  if running "$name"; then
    log "stopping $name"
    kill "$pid"; for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$RUN_DIR/$name.pid"
}
# The kubelet first, so it does not restart what we take down.
stop kubelet
if [ -S "$CONTAINERD_SOCK" ]; then
  # Remove the pods' tasks and containers so their mounts and network namespaces go too.
  for c in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1
  done
  sleep 1
  for c in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1
    ctr --address "$CONTAINERD_SOCK" -n k8s.io containers delete "$c" >/dev/null 2>&1
  done
fi
for name in coredns kube-proxy containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
pkill -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null
# kube-proxy's chains, and the pod bridge with its addresses.
"$BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true
ip link del "$POD_BRIDGE" 2>/dev/null
rm -rf "$CLUSTER_DIR/cni/ipam"
if [ "${1:-}" = "--purge" ]; then
  log "purging etcd data and kubelet state"
  rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/kubelet"
fi
log "cluster stopped"
