# The local single-node cluster (hack/local-cluster/). State and binaries live in $(CACHE_DIR).
CLUSTER_HACK := $(REPO_ROOT)/hack/local-cluster
CLUSTER_ENV := CACHE_DIR=$(CACHE_DIR) BIN_DIR=$(BIN_DIR)
# Settings of hack/local-cluster/config.sh can be given to make, e.g. the controller-manager's and
# scheduler's client rate limits: make cluster-up CONTROLLER_MANAGER_QPS=300 SCHEDULER_QPS=300.
# Tests and people run `make cluster-up` concurrently: one at a time builds or starts anything.
CLUSTER_LOCK := mkdir -p $(CACHE_DIR) && flock -o $(CACHE_DIR)/.cluster.lock
KUBECONFIG_PATH := $(CACHE_DIR)/cluster/kubeconfig
KUBECTL := $(BIN_DIR)/kubectl --kubeconfig $(KUBECONFIG_PATH)
K8S_VERSION ?= v1.34.4
ETCD_VERSION ?= v3.6.8
COREDNS_VERSION ?= v1.14.7
HOST_PACKAGES := containerd runc containernetworking-plugins iptables conntrack buildah debootstrap jq socat ipset

.PHONY: host-packages
host-packages: ## Install the Debian packages the local cluster uses (containerd, runc, CNI, buildah, ...).
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

.PHONY: cluster-binaries
cluster-binaries: host-packages ## Build etcd, Kubernetes and CoreDNS from their Go modules (cached).
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) BUILD_DIR=$(CACHE_DIR)/build \
	  $(CLUSTER_HACK)/build-kubernetes.sh all
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) COREDNS_VERSION=$(COREDNS_VERSION) BUILD_DIR=$(CACHE_DIR)/build \
	  $(CLUSTER_HACK)/build-coredns.sh

.PHONY: control-plane-up
control-plane-up: host-packages ## Start etcd, kube-apiserver and the controllers only (no node yet).
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) BUILD_DIR=$(CACHE_DIR)/build \
	  $(CLUSTER_HACK)/build-kubernetes.sh all
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-up.sh control-plane

.PHONY: cluster-up
cluster-up: host-packages ## Start the local cluster (reuses a running one) with a Ready node.
	@# The control plane comes up as soon as its binaries exist; the node's follow.
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) BUILD_DIR=$(CACHE_DIR)/build \
	  $(CLUSTER_HACK)/build-kubernetes.sh all
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-up.sh control-plane
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) COREDNS_VERSION=$(COREDNS_VERSION) BUILD_DIR=$(CACHE_DIR)/build \
	  $(CLUSTER_HACK)/build-coredns.sh
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-up.sh all

.PHONY: apiserver-restart
apiserver-restart: ## Restart kube-apiserver of the running local cluster (same flags; the rest keeps running).
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-up.sh restart-apiserver

.PHONY: cluster-down
cluster-down: ## Stop the local cluster (the cache and etcd's data stay).
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-down.sh

.PHONY: cluster-purge
cluster-purge: ## Stop the local cluster and forget its data (etcd, kubelet state).
	@$(CLUSTER_LOCK) env $(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-down.sh --purge

.PHONY: cluster-status
cluster-status: ## Show each component's state and the log file it writes.
	@$(CLUSTER_ENV) $(CLUSTER_HACK)/cluster-status.sh

.PHONY: kubeconfig
kubeconfig: ## Print the local cluster's kubeconfig path (use with make -s).
	@echo $(KUBECONFIG_PATH)

.PHONY: bin-dir
bin-dir: ## Print the directory of the built binaries (use with make -s).
	@echo $(BIN_DIR)

.PHONY: kind-up
kind-up: ## For users with Docker: a kind cluster (not exercised here: no Docker engine).
	kind create cluster --name modelplane

.PHONY: kind-down
kind-down: ## For users with Docker: delete the kind cluster (not exercised here).
	kind delete cluster --name modelplane
