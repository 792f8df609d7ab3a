# The test harness around the cluster (hack/harness/): helm, Prometheus, third-party CRDs and the
# cluster add-ons (metrics-server, a default StorageClass). Binaries in $(BIN_DIR), state in $(CACHE_DIR).
HARNESS_HACK := $(REPO_ROOT)/hack/harness
# The harness's own tools, off every path a test or benchmark measures (helm, Prometheus, KEDA,
# metrics-server, local-path-provisioner, kube-router, fake-gcs-server), are compiled without the
# compiler's optimizations and inlining: a cold build compiles about 30% faster (fake-gcs-server 124 s
# -> 87 s on 2 cores), and nothing here waits on their CPU. The cluster itself (apiserver, etcd, kubelet,
# CoreDNS), Envoy Gateway and KWOK stay optimized. Not in any cache key: it changes no behaviour.
TOOL_GCFLAGS ?= all=-N -l
TOOL_BUILD_ENV = GO_GCFLAGS='$(TOOL_GCFLAGS)'
HARNESS_ENV := env CACHE_DIR=$(CACHE_DIR) BIN_DIR=$(BIN_DIR) BUILD_DIR=$(CACHE_DIR)/build
HELM_VERSION ?= v3.22.0

.PHONY: helm
helm: ## Build helm from its Go module into the bin dir (cached, stamped with the cluster's Kubernetes version).
	@$(TIMED) helm $(HARNESS_ENV) $(TOOL_BUILD_ENV) HELM_VERSION=$(HELM_VERSION) K8S_VERSION=$(K8S_VERSION) $(HARNESS_HACK)/build-helm.sh

PROMETHEUS_VERSION ?= v0.316.0

.PHONY: prometheus
prometheus: ## Build prometheus (Kubernetes discovery only) and promtool from their Go module; tests start their own.
	@$(TIMED) prometheus $(HARNESS_ENV) $(TOOL_BUILD_ENV) PROMETHEUS_VERSION=$(PROMETHEUS_VERSION) $(HARNESS_HACK)/build-prometheus.sh

KEDA_VERSION ?= v2.21.0
PROMETHEUS_OPERATOR_VERSION ?= v0.85.0
CRD_DIR := $(CACHE_DIR)/crds

.PHONY: crds
crds: ## Copy KEDA's and the Prometheus Operator's CRDs from their Go modules into the cache.
	@$(TIMED) crds $(HARNESS_ENV) CRD_DIR=$(CRD_DIR) KEDA_VERSION=$(KEDA_VERSION) \
	  PROMETHEUS_OPERATOR_VERSION=$(PROMETHEUS_OPERATOR_VERSION) $(HARNESS_HACK)/fetch-crds.sh

.PHONY: crd-dir
crd-dir: ## Print the directory of the third-party CRDs, fetching them first (use with make -s).
	@$(MAKE) --no-print-directory crds >&2
	@echo $(CRD_DIR)

.PHONY: helm-version
helm-version: ## Print the helm version `make helm` builds (use with make -s).
	@echo $(HELM_VERSION)

METRICS_SERVER_VERSION ?= v0.9.0
LOCAL_PATH_PROVISIONER_VERSION ?= v0.0.30
ADDONS_SH := $(HARNESS_ENV) $(HARNESS_HACK)/addons.sh

.PHONY: addon-binaries
addon-binaries: ## Build metrics-server and local-path-provisioner from their Go modules (cached).
	@$(TIMED) addon-binaries $(HARNESS_ENV) $(TOOL_BUILD_ENV) METRICS_SERVER_VERSION=$(METRICS_SERVER_VERSION) \
	  LOCAL_PATH_PROVISIONER_VERSION=$(LOCAL_PATH_PROVISIONER_VERSION) $(HARNESS_HACK)/build-addons.sh

.PHONY: addons
addons: cluster-up addon-binaries ## Start metrics-server and the default StorageClass on the cluster (idempotent).
	@$(TIMED) addons $(ADDONS_SH) up

.PHONY: addons-down
addons-down: ## Stop the cluster add-ons' host processes.
	@$(ADDONS_SH) down

.PHONY: addons-status
addons-status: ## Show each cluster add-on's state and the log file it writes.
	@$(ADDONS_SH) status

# KEDA (hack/harness/keda.sh): its operator and metrics API server built from KEDA's Go module, run
# on the node with a Prometheus of the harness's own that the ScaledObjects query (operator-up
# points the operator at it).
KEDA_BIN_DIR := $(CACHE_DIR)/keda/$(KEDA_VERSION)
KEDA_PROMETHEUS_PORT ?= 19090
KEDA_PROMETHEUS_URL := http://127.0.0.1:$(KEDA_PROMETHEUS_PORT)
KEDA_SH := $(HARNESS_ENV) KEDA_VERSION=$(KEDA_VERSION) KEDA_BIN_DIR=$(KEDA_BIN_DIR) \
  KEDA_PROMETHEUS_PORT=$(KEDA_PROMETHEUS_PORT) $(HARNESS_HACK)/keda.sh

.PHONY: keda-binaries
keda-binaries: ## Build KEDA's operator and metrics API server from its Go module (cached by version).
	@$(TIMED) keda-binaries env $(TOOL_BUILD_ENV) KEDA_VERSION=$(KEDA_VERSION) KEDA_BIN_DIR=$(KEDA_BIN_DIR) $(HARNESS_HACK)/build-keda.sh

.PHONY: keda
keda: cluster-up keda-binaries prometheus ## Run KEDA and the Prometheus it reads on the cluster, register the external metrics API (idempotent).
	@$(TIMED) keda $(KEDA_SH) up

.PHONY: keda-down
keda-down: ## Stop KEDA's host processes and its Prometheus (and unregister the external metrics API).
	@$(KEDA_SH) down

.PHONY: keda-status
keda-status: ## Show KEDA's host processes and the log file each writes.
	@$(KEDA_SH) status

.PHONY: keda-prometheus-url
keda-prometheus-url: ## Print the address of the Prometheus that `make keda` runs (use with make -s).
	@echo $(KEDA_PROMETHEUS_URL)

# KWOK (hack/harness/kwok.sh): its controller, built from KWOK's Go module, and KWOK_NODES fake nodes
# (tainted: only pods that tolerate them go there) beside the real one, for `make bench-operator`.
# Not part of make test.
KWOK_VERSION ?= v0.8.0
KWOK_BIN_DIR := $(CACHE_DIR)/kwok/$(KWOK_VERSION)
KWOK_NODES ?= 4
KWOK_SH := $(HARNESS_ENV) KWOK_VERSION=$(KWOK_VERSION) KWOK_BIN_DIR=$(KWOK_BIN_DIR) KWOK_NODES=$(KWOK_NODES) \
  $(HARNESS_HACK)/kwok.sh

.PHONY: kwok-binaries
kwok-binaries: ## Build KWOK's controller from its Go module (cached by version and Go version).
	@$(TIMED) kwok-binaries env KWOK_VERSION=$(KWOK_VERSION) KWOK_BIN_DIR=$(KWOK_BIN_DIR) $(HARNESS_HACK)/build-kwok.sh

.PHONY: kwok
kwok: cluster-up kwok-binaries ## Run KWOK's controller and KWOK_NODES tainted fake nodes beside the real node (idempotent).
	@$(TIMED) kwok $(KWOK_SH) up

.PHONY: kwok-down
kwok-down: ## Delete the fake nodes and stop KWOK's controller (its RBAC and route removed).
	@$(KWOK_SH) down

.PHONY: kwok-status
kwok-status: ## Show KWOK's controller, its log file and the number of fake nodes.
	@$(KWOK_SH) status

e2e-prerequisites: helm prometheus crds addons keda
# The add-ons talk to the cluster: stop them (and unregister their APIs) before it goes.
cluster-down cluster-purge: addons-down keda-down kwok-down

# NetworkPolicy enforcement (hack/harness/network-policy.sh): kube-router's network-policy controller
# alone, built from its Go module into a cache directory keyed by what goes into the build (version,
# Go toolchain, build script), run on the node next to the bridge CNI and kube-proxy.
KUBE_ROUTER_VERSION ?= v2.1.0
# Deferred (=): `go version` runs only when a kube-router target needs the key.
KUBE_ROUTER_KEY = $(shell { echo $(KUBE_ROUTER_VERSION); go version; cat $(HARNESS_HACK)/build-kube-router.sh; } | sha256sum | cut -c1-12)
KUBE_ROUTER_DIR = $(CACHE_DIR)/kube-router/$(KUBE_ROUTER_VERSION)-$(KUBE_ROUTER_KEY)
NETWORK_POLICY_SH = $(HARNESS_ENV) KUBE_ROUTER_DIR=$(KUBE_ROUTER_DIR) $(HARNESS_HACK)/network-policy.sh

.PHONY: kube-router
kube-router: ## Build kube-router (its NetworkPolicy firewall is all the harness runs) from its Go module (cached by its inputs).
	@$(TIMED) kube-router env $(TOOL_BUILD_ENV) KUBE_ROUTER_VERSION=$(KUBE_ROUTER_VERSION) KUBE_ROUTER_DIR=$(KUBE_ROUTER_DIR) \
	  $(HARNESS_HACK)/build-kube-router.sh

.PHONY: network-policy
network-policy: cluster-up kube-router ## Enforce NetworkPolicies on the local cluster (kube-router's firewall as a host process; idempotent).
	@$(TIMED) network-policy $(NETWORK_POLICY_SH) up

.PHONY: network-policy-down
network-policy-down: ## Stop kube-router and remove its iptables chains and ipsets (NetworkPolicies are no longer enforced).
	@$(NETWORK_POLICY_SH) down

.PHONY: network-policy-status
network-policy-status: ## Show whether kube-router runs, and its log file.
	@$(NETWORK_POLICY_SH) status

e2e-prerequisites: network-policy
cluster-down cluster-purge: network-policy-down
