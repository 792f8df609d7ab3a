#!/usr/bin/env bash
# network-policy.sh up | down | status
# NetworkPolicy enforcement on the local cluster, whose bridge CNI enforces none: kube-router's
# network-policy controller alone (--run-firewall; no routing, no service proxy: kube-proxy stays),
# a host process next to the kubelet, as addons.sh's are. It keeps iptables chains (KUBE-ROUTER-*,
# KUBE-NWPLCY-*, KUBE-POD-FW-*) and ipsets (KUBE-SRC-*, KUBE-DST-*) in step with the NetworkPolicies;
# bridged pod-to-pod traffic reaches them through br_netfilter. Traffic from the node itself is
# always admitted (the NetworkPolicy API's rule), so host processes (tests' clients, the kubelet's
# probes, metrics-server, a host Prometheus) are never cut off.
# `up` is idempotent, and copes with leftovers of a run that is gone (kube-router rebuilds every
# chain and set it owns when it starts); `down` stops it and removes its chains and sets, so that a
# later cluster without it has no stale rule for a reused pod address.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../local-cluster/config.sh"
source "$HERE/../local-cluster/lib-pki.sh"
source "$HERE/lib-addons.sh"
: "${KUBE_ROUTER_DIR:?}"
KUBE_ROUTER=$KUBE_ROUTER_DIR/kube-router
KUBE_ROUTER_USER=modelplane:kube-router
KUBE_ROUTER_HEALTH_PORT=${KUBE_ROUTER_HEALTH_PORT:-20244}
NAME=kube-router

synced() {  # its top-level chain is in place and it reports healthy
  iptables -w -S KUBE-ROUTER-FORWARD >/dev/null 2>&1 &&
    curl -sf "http://127.0.0.1:$KUBE_ROUTER_HEALTH_PORT/healthz" >/dev/null
}

up() {
  command -v ipset >/dev/null || { log "ipset is missing: run make host-packages"; exit 1; }
  [ -x "$KUBE_ROUTER" ] || { log "$KUBE_ROUTER is missing: run make kube-router"; exit 1; }
  cert kube-router-client "/CN=$KUBE_ROUTER_USER" clientAuth
  kubeconfig_for kube-router-client
  apply "$KUBE_ROUTER_USER" kube-router.yaml.in
  start "$NAME" "$ADDON_PKI/kube-router-client.crt $PKI_DIR/ca.crt" -- \
    "$KUBE_ROUTER" --run-firewall=true --run-router=false --run-service-proxy=false \
    --kubeconfig "$ADDON_PKI/kube-router-client.kubeconfig" --hostname-override "$NODE_NAME" \
    --service-cluster-ip-range "$SERVICE_CIDR" --health-port "$KUBE_ROUTER_HEALTH_PORT" \
    --metrics-port 0 --v 1
  wait_for "$NAME" "kube-router enforces NetworkPolicies (health on 127.0.0.1:$KUBE_ROUTER_HEALTH_PORT)" 90 synced
}

# Its own chains and sets only (kube-router --cleanup-config would also flush IPVS and destroy
# every ipset on the machine, not just its own).
cleanup() {
  local chain builtin number sets=""
  for builtin in INPUT FORWARD OUTPUT; do
    # Its jumps carry a comment with a per-rule suffix: delete them by number, highest first.
    for number in $(iptables -w -L "$builtin" -n --line-numbers |
                      awk -v chain="KUBE-ROUTER-$builtin" '$2 == chain {print $1}' | sort -rn); do
      iptables -w -D "$builtin" "$number"
    done
  done
  local chains
  chains=$(iptables -w -S | awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER-|NWPLCY-|POD-FW-)/ {print $2}')
  for chain in $chains; do iptables -w -F "$chain"; done
  for chain in $chains; do iptables -w -X "$chain"; done
  if command -v ipset >/dev/null; then
    sets=$(ipset list -n | grep -E '^KUBE-(SRC|DST)-' || true)
    for chain in $sets; do ipset destroy "$chain"; done
  fi
  [ -z "$chains$sets" ] || log "removed kube-router's iptables chains and ipsets"
}

status() {
  if running "$NAME"; then
    printf '%-24s %-22s %s\n' "$NAME" "running (pid $(pid_of "$NAME"))" "$ADDON_LOGS/$NAME.log"
  else
    printf '%-24s %-22s %s\n' "$NAME" stopped "$ADDON_LOGS/$NAME.log"; return 1
  fi
}

case "${1:-}" in
  up)
    kubectl_ get --raw /readyz >/dev/null 2>&1 || { log "the cluster is not up: run make cluster-up"; exit 1; }
    up
    status ;;
  down)
    stop "$NAME"
    cleanup ;;
  status) status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
