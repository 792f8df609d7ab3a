#!/usr/bin/env bash
# kwok.sh up | down | status
# KWOK's controller (kwok, from `make kwok-binaries`) as a host process next to the kubelet, and
# $KWOK_NODES fake nodes beside the real one, for the operator's scale benchmark (tests/bench/operator.py):
#   - the fake nodes carry the annotation kwok.x-k8s.io/node=fake (the controller manages only those),
#     the label type=kwok and the taint kwok.x-k8s.io/node=fake:NoSchedule, so only pods that
#     tolerate it and select type=kwok go there; the real node's pods stay real;
#   - the stages are KWOK's own "fast" ones, read from its module (kustomize/stage): a node is Ready at
#     once and renews its lease; a pod bound to a fake node is Running and Ready at once (its init
#     containers Completed), a Job's pod completes, a deleted pod is removed;
#   - fake pods get addresses from $KWOK_POD_CIDR, which nothing serves: a `prohibit` route makes a
#     connection to one (a Prometheus scrape, kube-proxy's rules, metrics-server) fail at once instead of
#     leaving through the default route and timing out.
# `down` deletes the fake nodes (the pods still bound to them go with them), stops the controller and
# removes its route, RBAC and FlowSchema: the cluster is as before `up`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../local-cluster/config.sh"
source "$HERE/../local-cluster/lib-pki.sh"
source "$HERE/lib-addons.sh"
: "${KWOK_VERSION:?}" "${KWOK_BIN_DIR:?}"
KWOK_NODES=${KWOK_NODES:-4}
KWOK_POD_CIDR=${KWOK_POD_CIDR:-10.245.0.0/16}
KWOK_NODE_IP=${KWOK_NODE_IP:-10.245.255.254}
KWOK_SERVER_ADDRESS=${KWOK_SERVER_ADDRESS:-127.0.0.1:19247}
KWOK_USER=modelplane:kwok-controller
KWOK_DIR=$ADDONS_DIR/kwok
NODE_SELECTOR=type=kwok

module_dir() {
  local json dir
  json=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION")
  dir=$(jq -r '.Dir // empty' <<<"$json")
  [ -n "$dir" ] || { echo "go mod download kwok $KWOK_VERSION failed: $(jq -r .Error <<<"$json")" >&2; exit 1; }
  echo "$dir"
}

stages() {  # KWOK's fast stages, one file
  local src=$1/kustomize/stage
  local files=("$src/node/fast/node-initialize.yaml" "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"
               "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-complete.yaml" "$src/pod/fast/pod-delete.yaml")
  local f
  for f in "${files[@]}"; do echo "---"; cat "$f"; done
}

fake_nodes() {  # the fake nodes' manifests
  local i name
  for i in $(seq 0 $((KWOK_NODES - 1))); do
    name=kwok-node-$i
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: $name, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
EOF
  done
}

up() {
  kubectl_ get --raw /readyz >/dev/null 2>&1 || { log "the cluster is not up: run make cluster-up"; exit 1; }
  local src; src=$(module_dir)
  mkdir -p "$KWOK_DIR"
  stages "$src" > "$KWOK_DIR/stages.yaml"
  cert kwok-client "/CN=$KWOK_USER" clientAuth
  kubeconfig_for kwok-client
  USER_NAME=$KWOK_USER render kwok.yaml.in | apply_manifest - -f "$src/kustomize/rbac/role.yaml"
  ip route replace prohibit "$KWOK_POD_CIDR"
  start kwok "$KWOK_DIR/stages.yaml $ADDON_PKI/kwok-client.crt" -- \
    "$KWOK_BIN_DIR/kwok" --kubeconfig "$ADDON_PKI/kwok-client.kubeconfig" --config "$KWOK_DIR/stages.yaml" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr "$KWOK_POD_CIDR" --node-ip "$KWOK_NODE_IP" --node-lease-duration-seconds 40 \
    --server-address "$KWOK_SERVER_ADDRESS"
  wait_for kwok "KWOK's controller is serving on $KWOK_SERVER_ADDRESS" 60 curl -sf "http://$KWOK_SERVER_ADDRESS/healthz"
  # Fewer fake nodes than before: the extra ones go (their pods with them).
  local extra
  extra=$(kubectl_ get nodes -l "$NODE_SELECTOR" -o name | sort -V | tail -n +"$((KWOK_NODES + 1))")
  [ -z "$extra" ] || kubectl_ delete $extra --wait=false >/dev/null
  fake_nodes | apply_manifest -
  wait_for kwok "$KWOK_NODES fake nodes are Ready" 60 \
    kubectl_ wait --for=condition=Ready node -l "$NODE_SELECTOR" --timeout=5s
  status
}

down() {
  if kubectl_ get --raw /readyz >/dev/null 2>&1; then
    # While KWOK still runs, so that it completes the deletion of any pod left on a fake node.
    kubectl_ delete nodes -l "$NODE_SELECTOR" --ignore-not-found --wait=true --timeout=120s >/dev/null
    stop kwok
    kubectl_ delete --ignore-not-found flowschema/modelplane-kwok-controller \
      clusterrolebinding/modelplane:kwok-controller clusterrole/kwok-controller >/dev/null
  else
    stop kwok
  fi
  ip route del prohibit "$KWOK_POD_CIDR" 2>/dev/null || true
}

status() {
  local nodes=0
  nodes=$(kubectl_ get nodes -l "$NODE_SELECTOR" -o name 2>/dev/null | wc -l) || true
  if running kwok; then
    printf '%-10s %-22s %s (%s fake nodes)\n' kwok "running (pid $(pid_of kwok))" "$ADDON_LOGS/kwok.log" "$nodes"
  else
    printf '%-10s %-22s %s (%s fake nodes)\n' kwok stopped "$ADDON_LOGS/kwok.log" "$nodes"; return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
