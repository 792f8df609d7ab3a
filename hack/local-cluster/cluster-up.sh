#!/usr/bin/env bash
# Brings the single-node cluster up, reusing whatever already runs. Idempotent.
# Stage "control-plane" stops after etcd + kube-apiserver + controllers; "all" adds the node.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/config.sh"
STAGE=${1:-all}
mkdir -p "$LOG_DIR" "$RUN_DIR" "$CLUSTER_DIR/etcd" "$CONTAINERD_RUN"
chmod 700 "$CLUSTER_DIR/etcd"

# render TEMPLATE OUT sed-args...: writes OUT only when its content changes, because
# kube-proxy exits and CoreDNS reloads when their configuration file is rewritten.
render() {
  local template=$1 out=$2; shift 2
  sed "$@" "$template" > "$out.new"
  if cmp -s "$out.new" "$out"; then rm -f "$out.new"; return 1; fi
  mv "$out.new" "$out"
}

# restart_if_running NAME [WHY]: a changed configuration takes effect only after a restart.
restart_if_running() {
  running "$1" || return 0
  log "${2:-configuration of $1 changed}: restarting it"
  local pid; pid=$(cat "$RUN_DIR/$1.pid")
  kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
  rm -f "$RUN_DIR/$1.pid"
}

# start NAME CMD...: starts a component in the background unless it is already running.
start() {
  local name=$1; shift
  if running "$name"; then log "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"; return 0; fi
  log "starting $name (log: $LOG_DIR/$name.log)"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN_DIR/$name.pid"
}

# start_current NAME CMD...: as start, but a running NAME whose command line differs from CMD (a
# setting changed) is restarted with CMD. For the components that keep no state of their own.
start_current() {
  local name=$1
  if running "$name" && [ "$(tr '\0' ' ' < "/proc/$(cat "$RUN_DIR/$name.pid")/cmdline")" != "${*:2} " ]; then
    log "settings of $name changed: restarting it"
    restart_if_running "$name"
  fi
  start "$@"
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${limit}s waiting for $what; last lines of the logs:"
      tail -n 20 "$LOG_DIR"/*.log >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "$what is up"
}

host_network() {
  sysctl -qw net.ipv4.ip_forward=1
  # Bridged pod traffic must cross iptables for Services to reach pods on the same bridge.
  if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then modprobe br_netfilter 2>/dev/null || true; fi
  if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  else
    log "warning: br_netfilter is not available; Service hairpin traffic may not work"
  fi
  "$HERE/node-link.sh"
}

control_plane() {
  "$HERE/node-link.sh"
  "$HERE/pki.sh"
  # The API server reads its audit policy only at start: a changed policy restarts it.
  if render "$HERE/audit-policy.yaml" "$CLUSTER_DIR/audit-policy.yaml" -e ''; then
    restart_if_running kube-apiserver
  fi
  start etcd "$BIN_DIR/etcd" --name "$NODE_NAME" --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "http://127.0.0.1:23810" \
    --cert-file "$PKI_DIR/etcd-server.crt" --key-file "$PKI_DIR/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$PKI_DIR/etcd-ca.crt" \
    --quota-backend-bytes 2147483648 --snapshot-count 10000
  wait_for etcd 60 curl -sf "http://127.0.0.1:23810/health"

  start kube-apiserver "$BIN_DIR/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --etcd-servers "https://127.0.0.1:$ETCD_CLIENT_PORT" --etcd-cafile "$PKI_DIR/etcd-ca.crt" \
    --etcd-certfile "$PKI_DIR/apiserver-etcd-client.crt" --etcd-keyfile "$PKI_DIR/apiserver-etcd-client.key" \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI_DIR/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --requestheader-client-ca-file "$PKI_DIR/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
    --requestheader-username-headers X-Remote-User \
    --proxy-client-cert-file "$PKI_DIR/front-proxy-client.crt" --proxy-client-key-file "$PKI_DIR/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --audit-policy-file "$CLUSTER_DIR/audit-policy.yaml" --audit-log-path "$LOG_DIR/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 2 --audit-log-format json \
    --shutdown-watch-termination-grace-period 5s
  # (the last flag: on SIGTERM the watches, which clients re-establish anyway, are closed after 5 s;
  # without it the HTTP server's shutdown waits its whole 60 s for them)
  wait_for kube-apiserver 120 "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz

  start_current kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$PKI_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PKI_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PKI_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$CLUSTER_CIDR" --allocate-node-cidrs=false \
    --controllers '*' --horizontal-pod-autoscaler-sync-period 5s \
    --kube-api-qps "$CONTROLLER_MANAGER_QPS" --kube-api-burst "$CONTROLLER_MANAGER_BURST"
  start_current kube-scheduler "$BIN_DIR/kube-scheduler" --kubeconfig "$PKI_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PKI_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PKI_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --kube-api-qps "$SCHEDULER_QPS" --kube-api-burst "$SCHEDULER_BURST"
  kubectl_ apply --server-side --field-manager modelplane-local-cluster -f "$HERE/manifests/coredns-rbac.yaml" >/dev/null
}

containerd_up() {
  local conf=$CLUSTER_DIR/containerd.toml
  mkdir -p "$CLUSTER_DIR/cni/net.d" "$CLUSTER_DIR/containerd/root"
  render "$HERE/containerd.toml.in" "$conf" \
      -e "s|@ROOT@|$CLUSTER_DIR/containerd/root|; s|@STATE@|$CONTAINERD_RUN/state|" \
      -e "s|@SOCK@|$CONTAINERD_SOCK|; s|@PAUSE@|$PAUSE_IMAGE|; s|@CNI_CONF@|$CLUSTER_DIR/cni/net.d|" &&
    restart_if_running containerd
  render "$HERE/cni.conflist.in" "$CLUSTER_DIR/cni/net.d/10-modelplane.conflist" \
      -e "s|@BRIDGE@|$POD_BRIDGE|; s|@POD_CIDR@|$POD_CIDR|; s|@GATEWAY@|$POD_GATEWAY|" \
      -e "s|@IPAM_DIR@|$CLUSTER_DIR/cni/ipam|" || true
  if ! running containerd; then
    # Left over from a session that ended: the pods' processes are gone, so their shims,
    # socket and IP allocations are stale. containerd cleans its own tasks up when it starts.
    pkill -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
    rm -rf "$CONTAINERD_SOCK" "$CLUSTER_DIR/cni/ipam"
  fi
  start containerd containerd --config "$conf"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
  "$HERE/pause-image.sh"
}

node() {
  host_network
  containerd_up
  local conf=$CLUSTER_DIR/kubelet.yaml
  render "$HERE/kubelet.yaml.in" "$conf" \
      -e "s|@PKI@|$PKI_DIR|g; s|@SOCK@|$CONTAINERD_SOCK|; s|@DNS@|$DNS_SVC_IP|; s|@DOMAIN@|$CLUSTER_DOMAIN|" \
      -e "s|@NODE_IP@|$NODE_IP|; s|@POD_CIDR@|$POD_CIDR|; s|@RESOLV@|$CLUSTER_DIR/resolv.conf|" &&
    restart_if_running kubelet
  # Pods with dnsPolicy Default get this; there is no upstream resolver on this machine.
  echo "nameserver $NODE_IP" > "$CLUSTER_DIR/resolv.conf"
  mkdir -p "$CLUSTER_DIR/kubelet"
  start kubelet "$BIN_DIR/kubelet" --config "$conf" --kubeconfig "$PKI_DIR/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$CLUSTER_DIR/kubelet" \
    --v 1
  render "$HERE/kube-proxy.yaml.in" "$CLUSTER_DIR/kube-proxy.yaml" \
      -e "s|@KUBECONFIG@|$PKI_DIR/kube-proxy.kubeconfig|; s|@CLUSTER_CIDR@|$CLUSTER_CIDR|; s|@NODE@|$NODE_NAME|" &&
    restart_if_running kube-proxy
  start kube-proxy "$BIN_DIR/kube-proxy" --config "$CLUSTER_DIR/kube-proxy.yaml"
  render "$HERE/Corefile.in" "$CLUSTER_DIR/Corefile" \
      -e "s|@NODE_IP@|$NODE_IP|; s|@KUBECONFIG@|$PKI_DIR/coredns.kubeconfig|; s|@DOMAIN@|$CLUSTER_DOMAIN|" || true
  start coredns "$BIN_DIR/coredns" -conf "$CLUSTER_DIR/Corefile"
  sed -e "s|@NODE_IP@|$NODE_IP|; s|@DNS_SVC_IP@|$DNS_SVC_IP|" "$HERE/manifests/kube-dns.yaml.in" |
    kubectl_ apply --server-side --field-manager modelplane-local-cluster -f - >/dev/null
  wait_for "node $NODE_NAME Ready" 180 kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  # The default ServiceAccount appears asynchronously; pods in `default` need it.
  wait_for "default service account" 60 kubectl_ get serviceaccount default -n default
}

case "$STAGE" in
  control-plane) control_plane ;;
  all) control_plane; node ;;
  # Stops kube-apiserver (SIGTERM, as a rolling control-plane upgrade does) and starts it again with
  # the same flags; everything else keeps running. The fault tests use it.
  restart-apiserver) restart_if_running kube-apiserver "asked to restart kube-apiserver"; control_plane ;;
  *) echo "usage: $0 [control-plane|all|restart-apiserver]" >&2; exit 2 ;;
esac
log "cluster ready; KUBECONFIG=$KUBECONFIG_PATH"
