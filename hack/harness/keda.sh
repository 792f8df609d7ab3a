#!/usr/bin/env bash
# keda.sh up | down | status | prometheus-url
# KEDA on the local cluster, as host processes next to the kubelet (like addons.sh's):
#   cluster-prometheus      scrapes the pods that ask to be (the chart's scrape job), every 5 s
#   keda-operator           KEDA's operator: ScaledObjects -> HPAs; its scalers query that Prometheus
#   keda-metrics-apiserver  KEDA's metrics API server -> APIService v1beta1.external.metrics.k8s.io,
#                           which the HPA controller reads; it asks the operator over mTLS gRPC
# The binaries come from `make keda-binaries` ($KEDA_BIN_DIR), the CRDs and RBAC from KEDA's own Go
# module. `up` is idempotent: a process whose command line, certificates and binary are unchanged
# is left alone.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../local-cluster/config.sh"
source "$HERE/../local-cluster/lib-pki.sh"
source "$HERE/lib-addons.sh"
: "${KEDA_VERSION:?}" "${KEDA_BIN_DIR:?}"
KEDA_PROMETHEUS_PORT=${KEDA_PROMETHEUS_PORT:-19090}
KEDA_ADAPTER_PORT=${KEDA_ADAPTER_PORT:-4444}
KEDA_GRPC_ADDRESS=127.0.0.1:19666
KEDA_OPERATOR_USER=modelplane:keda-operator
KEDA_ADAPTER_USER=modelplane:keda-metrics-apiserver
PROMETHEUS_USER=modelplane:prometheus
PROMETHEUS_DIR=$ADDONS_DIR/cluster-prometheus
PROCESSES=(cluster-prometheus keda-operator keda-metrics-apiserver)
CHART_SCRAPE_CONFIG=$HERE/../../charts/modelplane/files/scrape-config.yaml

module_dir() {
  local json dir
  json=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION")
  dir=$(jq -r '.Dir // empty' <<<"$json")
  [ -n "$dir" ] || { echo "go mod download keda $KEDA_VERSION failed: $(jq -r .Error <<<"$json")" >&2; exit 1; }
  echo "$dir"
}

# cert_dir NAME CERT: the directory KEDA's gRPC reads (ca.crt, tls.crt, tls.key), pointing at CERT.
cert_dir() {
  local dir=$ADDON_PKI/$1
  mkdir -p "$dir"
  ln -sf "$PKI_DIR/ca.crt" "$dir/ca.crt"
  ln -sf "$ADDON_PKI/$2.crt" "$dir/tls.crt"
  ln -sf "$ADDON_PKI/$2.key" "$dir/tls.key"
  echo "$dir"
}

# --- Prometheus ----------------------------------------------------------------------------------
prometheus_up() {
  cert prometheus-client "/CN=$PROMETHEUS_USER" clientAuth
  kubeconfig_for prometheus-client
  mkdir -p "$PROMETHEUS_DIR"
  local config=$PROMETHEUS_DIR/prometheus.yml kubeconfig=$ADDON_PKI/prometheus-client.kubeconfig
  # The chart's own scrape job, pointed at the cluster from outside it (as the file's header says).
  { printf 'global: {scrape_interval: 5s, evaluation_interval: 5s}\nscrape_configs:\n'
    sed -E "s|^( *)- role: pod$|&\n\1  kubeconfig_file: $kubeconfig|" "$CHART_SCRAPE_CONFIG"
  } > "$config.tmp"
  grep -q kubeconfig_file "$config.tmp" || { log "no '- role: pod' in $CHART_SCRAPE_CONFIG"; exit 1; }
  "$BIN_DIR/promtool" check config "$config.tmp" >/dev/null
  mv "$config.tmp" "$config"
  start cluster-prometheus "$config $ADDON_PKI/prometheus-client.crt" -- \
    "$BIN_DIR/prometheus" --config.file "$config" --storage.tsdb.path "$PROMETHEUS_DIR/data" \
    --storage.tsdb.retention.time 6h --web.listen-address "127.0.0.1:$KEDA_PROMETHEUS_PORT"
  wait_for cluster-prometheus "Prometheus is ready at $(prometheus_url)" 60 \
    curl -sf "$(prometheus_url)/-/ready"
}

prometheus_url() { echo "http://127.0.0.1:$KEDA_PROMETHEUS_PORT"; }

# --- KEDA ----------------------------------------------------------------------------------------
# keda_env CMD...: runs CMD with what KEDA reads from a pod's environment (every namespace watched,
# its own objects in namespace keda) and the caller's KUBECONFIG exported.
keda_env() { WATCH_NAMESPACE="" POD_NAMESPACE=keda KEDA_CLUSTER_OBJECT_NAMESPACE=keda "$@"; }

keda_resources_up() {
  local src; src=$(module_dir)
  # One apply (each kubectl run costs its own discovery): our Namespace and bindings first (KEDA's
  # Role lives in namespace keda), every CRD the operator watches (its CloudEventSource controllers
  # too), and KEDA's own roles.
  render keda.yaml.in | apply_manifest - -f "$src/config/crd/bases" \
    -f "$src/config/rbac/role.yaml" -f "$src/config/metrics-server/role.yaml"
  # (`kubectl wait --for=condition=` fails at once on a CRD whose status has no conditions yet.)
  local deadline=$(( $(date +%s) + 60 ))
  until [ "$(kubectl_ get crd scaledobjects.keda.sh \
      -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "crd/scaledobjects.keda.sh not Established after 60s"; exit 1; }
    sleep 1
  done
}

keda_operator_up() {
  cert keda-operator-client "/CN=$KEDA_OPERATOR_USER" clientAuth
  cert keda-operator-grpc "/CN=keda-operator" serverAuth "IP:127.0.0.1,DNS:keda-operator.keda.svc"
  kubeconfig_for keda-operator-client
  local certs; certs=$(cert_dir keda-operator-certs keda-operator-grpc)
  KUBECONFIG=$ADDON_PKI/keda-operator-client.kubeconfig keda_env \
    start keda-operator "$ADDON_PKI/keda-operator-client.crt $ADDON_PKI/keda-operator-grpc.crt $PKI_DIR/ca.crt" -- \
    "$KEDA_BIN_DIR/keda" --leader-elect=false \
    --metrics-bind-address 127.0.0.1:19180 --health-probe-bind-address 127.0.0.1:19181 \
    --metrics-service-bind-address "$KEDA_GRPC_ADDRESS" --cert-dir "$certs" --enable-cert-rotation=false \
    --zap-log-level info --zap-encoder console --zap-time-encoding iso8601
  wait_for keda-operator "KEDA's operator is ready" 90 curl -sf http://127.0.0.1:19181/readyz
}

keda_adapter_up() {
  cert keda-metrics-apiserver-client "/CN=$KEDA_ADAPTER_USER" clientAuth
  # The apiserver checks the name <service>.<namespace>.svc even when it routes to the endpoint.
  cert keda-metrics-apiserver-serving "/CN=keda-metrics-apiserver" serverAuth \
    "DNS:keda-metrics-apiserver.keda.svc,DNS:keda-metrics-apiserver.keda.svc.$CLUSTER_DOMAIN,IP:$NODE_IP"
  kubeconfig_for keda-metrics-apiserver-client
  local kc=$ADDON_PKI/keda-metrics-apiserver-client.kubeconfig certs
  # Its gRPC client to the operator presents its client certificate (the operator trusts the cluster CA).
  certs=$(cert_dir keda-metrics-apiserver-certs keda-metrics-apiserver-client)
  KUBECONFIG=$kc keda_env \
    start keda-metrics-apiserver "$ADDON_PKI/keda-metrics-apiserver-client.crt $ADDON_PKI/keda-metrics-apiserver-serving.crt $PKI_DIR/ca.crt" -- \
    "$KEDA_BIN_DIR/keda-adapter" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --lister-kubeconfig "$kc" --bind-address "$NODE_IP" --secure-port "$KEDA_ADAPTER_PORT" \
    --tls-cert-file "$ADDON_PKI/keda-metrics-apiserver-serving.crt" \
    --tls-private-key-file "$ADDON_PKI/keda-metrics-apiserver-serving.key" --cert-dir "$certs" \
    --metrics-service-address "$KEDA_GRPC_ADDRESS" --port 19182 --zap-log-level info --zap-encoder console --zap-time-encoding iso8601
  wait_for keda-metrics-apiserver "KEDA's metrics API server is serving on $NODE_IP:$KEDA_ADAPTER_PORT" 60 \
    curl -sf --cacert "$PKI_DIR/ca.crt" "https://$NODE_IP:$KEDA_ADAPTER_PORT/livez"
  wait_for keda-metrics-apiserver "APIService v1beta1.external.metrics.k8s.io is Available" 90 \
    kubectl_ wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=5s
}

status() {
  local rc=0 name
  for name in "${PROCESSES[@]}"; do
    if running "$name"; then
      printf '%-24s %-22s %s\n' "$name" "running (pid $(pid_of "$name"))" "$ADDON_LOGS/$name.log"
    else
      printf '%-24s %-22s %s\n' "$name" stopped "$ADDON_LOGS/$name.log"; rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
  up)
    kubectl_ get --raw /readyz >/dev/null 2>&1 || { log "the cluster is not up: run make cluster-up"; exit 1; }
    prometheus_up
    keda_resources_up
    keda_operator_up
    keda_adapter_up
    status ;;
  down)
    for name in keda-metrics-apiserver keda-operator cluster-prometheus; do stop "$name"; done
    # An APIService without its server breaks discovery (and so namespace deletion): unregister it.
    if kubectl_ get --raw /readyz >/dev/null 2>&1; then
      kubectl_ delete apiservice v1beta1.external.metrics.k8s.io --ignore-not-found >/dev/null
    fi ;;
  status) status ;;
  prometheus-url) prometheus_url ;;
  *) echo "usage: $0 up | down | status | prometheus-url" >&2; exit 2 ;;
esac
