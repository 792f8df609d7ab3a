# The test harness around the cluster (hack/harness/): helm, Prometheus, third-party CRDs and the
# cluster add-ons (metrics-server, a default StorageClass). Binaries in $(BIN_DIR), state in $(CACHE_DIR).
HARNESS_HACK := $(REPO_ROOT)/hack/harness
HARNESS_ENV := env CACHE_DIR=$(CACHE_DIR) BIN_DIR=$(BIN_DIR) BUILD_DIR=$(CACHE_DIR)/build
HELM_VERSION ?= v3.22.0

.PHONY: helm
helm: ## Build helm from its Go module into the bin dir (cached, stamped with the cluster's Kubernetes version).
	@$(TIMED) helm $(HARNESS_ENV) HELM_VERSION=$(HELM_VERSION) K8S_VERSION=$(K8S_VERSION) $(HARNESS_HACK)/build-helm.sh

.PHONY: prometheus
prometheus: ## Unpack Debian's prometheus and promtool into the cache (no system service); tests start their own.
	@$(TIMED) prometheus $(HARNESS_ENV) $(HARNESS_HACK)/fetch-prometheus.sh
