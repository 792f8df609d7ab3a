#!/usr/bin/env bash
# addons.sh up | down | status
# The cluster add-ons, run on the node as host processes next to the kubelet:
#   metrics-server          -> APIService v1beta1.metrics.k8s.io (kubectl top, CPU HPAs)
#   local-path-provisioner  -> the default StorageClass "local-path"
# Each gets a client certificate of its own from the cluster CA. `up` is idempotent: a running
# add-on whose command line, certificates and binary are unchanged is left alone.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../local-cluster/config.sh"
source "$HERE/../local-cluster/lib-pki.sh"
source "$HERE/lib-addons.sh"
VOLUME_DIR=$ADDONS_DIR/local-path-volumes
METRICS_SERVER_PORT=${METRICS_SERVER_PORT:-4443}
METRICS_SERVER_USER=modelplane:metrics-server
PROVISIONER_USER=modelplane:local-path-provisioner
PROVISIONER_NAMESPACE=local-path-storage
ADDONS=(metrics-server local-path-provisioner)

# --- metrics-server ----------------------------------------------------------------------------
metrics_server_up() {
  cert metrics-server-client "/CN=$METRICS_SERVER_USER" clientAuth
  # The apiserver checks the name <service>.<namespace>.svc even when it routes to the endpoint.
  cert metrics-server-serving "/CN=metrics-server" serverAuth \
    "DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.$CLUSTER_DOMAIN,IP:$NODE_IP"
  kubeconfig_for metrics-server-client
  local kc=$ADDON_PKI/metrics-server-client.kubeconfig
  apply "$METRICS_SERVER_USER" metrics-server.yaml.in
  start metrics-server "$ADDON_PKI/metrics-server-client.crt $ADDON_PKI/metrics-server-serving.crt $PKI_DIR/ca.crt" -- \
    "$BIN_DIR/metrics-server" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address "$NODE_IP" --secure-port "$METRICS_SERVER_PORT" \
    --tls-cert-file "$ADDON_PKI/metrics-server-serving.crt" \
    --tls-private-key-file "$ADDON_PKI/metrics-server-serving.key" \
    --kubelet-certificate-authority "$PKI_DIR/ca.crt" \
    --kubelet-preferred-address-types InternalIP --kubelet-use-node-status-port \
    --metric-resolution 10s --kubelet-request-timeout 5s
  wait_for metrics-server "metrics-server is serving on $NODE_IP:$METRICS_SERVER_PORT" 60 \
    curl -sf --cacert "$PKI_DIR/ca.crt" "https://$NODE_IP:$METRICS_SERVER_PORT/livez"
  wait_for metrics-server "APIService v1beta1.metrics.k8s.io is Available" 90 \
    kubectl_ wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=5s
  # CPU usage is a rate: the first node sample appears after two scrapes.
  wait_for metrics-server "node metrics are served" 90 node_metrics
}

node_metrics() { kubectl_ get --raw /apis/metrics.k8s.io/v1beta1/nodes | grep -q '"cpu"'; }

# --- local-path-provisioner --------------------------------------------------------------------
helper_image_up() {
  local ctx=$ADDONS_DIR/local-path-helper version hash
  version=$(cat "$ctx/busybox.version" 2>/dev/null || true)
  if [ ! -x "$ctx/bin/busybox" ]; then
    apt-cache policy busybox-static 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq
    version=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')
    log "busybox-static $version for the local-path helper image"
    local work; work=$(mktemp -d)
    chown _apt "$work" 2>/dev/null || chmod 777 "$work"   # apt downloads as its sandbox user
    (cd "$work" && apt-get download -qq "busybox-static=$version")
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/root"
    rm -rf "$ctx"; mkdir -p "$ctx/bin"
    install -m 0755 "$work/root/bin/busybox" "$ctx/bin/busybox"
    for applet in sh mkdir rm ls cat; do ln -s busybox "$ctx/bin/$applet"; done
    echo "$version" > "$ctx/busybox.version"
    rm -rf "$work"
  fi
  cp "$HERE/local-path-helper/Containerfile" "$ctx/Containerfile"
  hash=$({ echo "$version"; cat "$ctx/Containerfile"; } | sha256sum | cut -c1-12)
  HELPER_IMAGE=localhost/modelplane/local-path-helper:$hash
  if ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qx "$HELPER_IMAGE"; then
    "$CLUSTER_HACK/image-import.sh" "$HELPER_IMAGE" "$ctx" "$ctx/Containerfile"
  fi
}

local_path_up() {
  helper_image_up
  mkdir -p "$VOLUME_DIR"
  cert local-path-provisioner-client "/CN=$PROVISIONER_USER" clientAuth
  kubeconfig_for local-path-provisioner-client
  apply "$PROVISIONER_USER" local-path.yaml.in
  # It reads its config and helper pod template from the ConfigMap once, at start: a changed
  # manifest restarts it.
  local rendered=$ADDONS_DIR/local-path.yaml
  USER_NAME=$PROVISIONER_USER render local-path.yaml.in > "$rendered"
  start local-path-provisioner "$ADDON_PKI/local-path-provisioner-client.crt $rendered" -- \
    "$BIN_DIR/local-path-provisioner" start \
    --kubeconfig "$ADDON_PKI/local-path-provisioner-client.kubeconfig" \
    --namespace "$PROVISIONER_NAMESPACE" --provisioner-name rancher.io/local-path \
    --configmap-name local-path-config --helper-image "$HELPER_IMAGE" \
    --service-account-name local-path-provisioner-helper
  wait_for local-path-provisioner "local-path-provisioner is watching claims" 60 \
    logged_since_start local-path-provisioner "Started provisioner controller"
}

status() {
  local rc=0 name
  for name in "${ADDONS[@]}"; do
    if running "$name"; then
      printf '%-24s %-22s %s\n' "$name" "running (pid $(pid_of "$name"))" "$ADDON_LOGS/$name.log"
    else
      printf '%-24s %-22s %s\n' "$name" stopped "$ADDON_LOGS/$name.log"; rc=1
    fi
  done
  return $rc
}

CLUSTER_HACK=$HERE/../local-cluster
case "${1:-}" in
  up)
    kubectl_ get --raw /readyz >/dev/null 2>&1 || { log "the cluster is not up: run make cluster-up"; exit 1; }
    metrics_server_up
    local_path_up
    status ;;
  down)
    for name in "${ADDONS[@]}"; do stop "$name"; done
    # An APIService without its server breaks discovery (and so namespace deletion): unregister it.
    if kubectl_ get --raw /readyz >/dev/null 2>&1; then
      kubectl_ delete apiservice v1beta1.metrics.k8s.io --ignore-not-found >/dev/null
    fi ;;
  status) status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
