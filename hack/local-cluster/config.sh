# Shared settings of the local cluster, sourced by every script in hack/local-cluster/.
# Everything lives under $CACHE_DIR (default ~/.cache/modelplane); nothing in the repo.
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/modelplane}
BIN_DIR=${BIN_DIR:-$CACHE_DIR/bin}
BUILD_DIR=${BUILD_DIR:-$CACHE_DIR/build}
CLUSTER_DIR=${CLUSTER_DIR:-$CACHE_DIR/cluster}
PKI_DIR=$CLUSTER_DIR/pki
LOG_DIR=$CLUSTER_DIR/logs
RUN_DIR=$CLUSTER_DIR/run
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig
# Runtime state that must not outlive a reboot (sockets) goes under /run.
CONTAINERD_RUN=/run/modelplane/containerd
CONTAINERD_SOCK=$CONTAINERD_RUN/containerd.sock

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}

NODE_NAME=modelplane-node
# The node's address lives on a dummy link of its own, so it never depends on the VM's network.
NODE_LINK=modelplane0
NODE_IP=${NODE_IP:-172.28.0.1}
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
POD_GATEWAY=10.244.0.1
POD_BRIDGE=mp-cni0
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT=6443
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
PAUSE_IMAGE=localhost/modelplane/pause:3.10
# The client rate limits of the controller-manager and the scheduler (requests/s and burst; these are
# their own defaults). Large clusters raise them, as the operator's scale benchmark does
# (make bench-operator); a changed value restarts the component at the next cluster-up.
CONTROLLER_MANAGER_QPS=${CONTROLLER_MANAGER_QPS:-20}
CONTROLLER_MANAGER_BURST=${CONTROLLER_MANAGER_BURST:-30}
SCHEDULER_QPS=${SCHEDULER_QPS:-50}
SCHEDULER_BURST=${SCHEDULER_BURST:-100}

log() { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%T)" "$*"; }
kubectl_() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# running NAME: the pid file names a live process that is still that component (after a
# reboot a stale pid file may name some other process).
running() {
  local pid; pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"
}
# Where an image built before the cluster was up waits for its import (images.sh, image-import.sh).
image_archive() { echo "$CACHE_DIR/images/$(echo "$1" | tr '/:' '__').oci.tar"; }
