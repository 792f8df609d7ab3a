# The operator (operator/modelplane): CRDs, and running it on the host against the local cluster.
OPERATOR_DIR := $(CACHE_DIR)/operator
OPERATOR_LOG := $(OPERATOR_DIR)/operator.log
OPERATOR_PID := $(OPERATOR_DIR)/operator.pid
# What the running operator was started from (checkout and runtime image): operator-up restarts it when
# either differs, so a run never tests another worktree's operator.
OPERATOR_STARTED := $(OPERATOR_DIR)/operator.started
# The host operator runs as its own ServiceAccount (operator/deploy/host-operator.yaml), not as admin.
OPERATOR_KUBECONFIG := $(OPERATOR_DIR)/kubeconfig
OPERATOR_METRICS_PORT ?= 18480
OPERATOR_HEALTH_PORT ?= 18481
# Far longer than any e2e wait: a test sees what the watches do, not what the safety net repairs.
OPERATOR_RESYNC_SECONDS ?= 3600
# The runtime image the operator defaults to: the one `make images` builds (override to pin another).
OPERATOR_RUNTIME_IMAGE ?=

.PHONY: install-crds
install-crds: ## Install the ModelDeployment CRD and kopf's peering CRDs into the local cluster.
	@$(KUBECTL) apply --server-side --force-conflicts -f $(REPO_ROOT)/crds/ >/dev/null
	@$(KUBECTL) wait --for=condition=Established --timeout=60s \
	  crd/modeldeployments.modelplane.io crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev >/dev/null
	@echo "CRDs installed: modeldeployments.modelplane.io, kopf peering"

.PHONY: operator-kubeconfig
operator-kubeconfig: install-crds
	@mkdir -p $(OPERATOR_DIR)
	@$(KUBECTL) apply --server-side --force-conflicts -f $(REPO_ROOT)/operator/deploy/host-operator.yaml >/dev/null
	@server=$$($(KUBECTL) config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}'); \
	ca=$$($(KUBECTL) config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}'); \
	[ -n "$$ca" ] || ca=$$(base64 -w0 < "$$($(KUBECTL) config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"); \
	token=$$($(KUBECTL) -n modelplane-system create token modelplane-operator --duration=48h); \
	umask 077; printf '%s\n' \
	  "apiVersion: v1" "kind: Config" "current-context: modelplane-operator" \
	  "clusters: [{name: local, cluster: {server: '$$server', certificate-authority-data: '$$ca'}}]" \
	  "users: [{name: modelplane-operator, user: {token: '$$token'}}]" \
	  "contexts: [{name: modelplane-operator, context: {cluster: local, user: modelplane-operator}}]" \
	  > $(OPERATOR_KUBECONFIG)

.PHONY: operator-up
operator-up: operator-kubeconfig ## Run the operator on the host, in the background, against the local cluster (idempotent).
	@runtime_image=$(or $(OPERATOR_RUNTIME_IMAGE),$$($(IMAGES_SH) ref runtime)); \
	started="$(REPO_ROOT) $$runtime_image"; \
	if [ -f $(OPERATOR_PID) ] && kill -0 $$(cat $(OPERATOR_PID)) 2>/dev/null; then \
	  if [ "$$(cat $(OPERATOR_STARTED) 2>/dev/null)" = "$$started" ]; then \
	    echo "operator already running (pid $$(cat $(OPERATOR_PID))), log: $(OPERATOR_LOG)"; exit 0; fi; \
	  echo "the running operator is another checkout's or runs another runtime image: restarting it"; \
	  $(MAKE) --no-print-directory operator-down; fi; \
	KUBECONFIG=$(OPERATOR_KUBECONFIG) MODELPLANE_RUNTIME_IMAGE=$$runtime_image \
	  MODELPLANE_PROMETHEUS_URL=$(KEDA_PROMETHEUS_URL) \
	  MODELPLANE_TENSORFLOW_RUNTIME_IMAGE=$$($(IMAGES_SH) ref runtime-tensorflow) \
	  MODELPLANE_VLLM_IMAGE=$$($(IMAGES_SH) ref runtime-vllm) \
	  MODELPLANE_METRICS_PORT=$(OPERATOR_METRICS_PORT) MODELPLANE_HEALTH_PORT=$(OPERATOR_HEALTH_PORT) \
	  MODELPLANE_RESYNC_SECONDS=$(OPERATOR_RESYNC_SECONDS) \
	  setsid nohup $(VENV)/bin/modelplane run >> $(OPERATOR_LOG) 2>&1 < /dev/null & echo $$! > $(OPERATOR_PID); \
	echo "$$started" > $(OPERATOR_STARTED); \
	for i in $$(seq 60); do \
	  curl -fsS http://127.0.0.1:$(OPERATOR_HEALTH_PORT)/healthz >/dev/null 2>&1 && break; \
	  kill -0 $$(cat $(OPERATOR_PID)) 2>/dev/null || { tail -20 $(OPERATOR_LOG); echo "operator exited" >&2; exit 1; }; \
	  sleep 1; done; \
	curl -fsS http://127.0.0.1:$(OPERATOR_HEALTH_PORT)/healthz >/dev/null || { echo "operator not healthy" >&2; exit 1; }; \
	echo "operator running (pid $$(cat $(OPERATOR_PID)), runtime image $$runtime_image), log: $(OPERATOR_LOG)"

.PHONY: operator-down
operator-down: ## Stop the host operator started by operator-up (idempotent).
	@if [ -f $(OPERATOR_PID) ] && kill -0 $$(cat $(OPERATOR_PID)) 2>/dev/null; then \
	  pid=$$(cat $(OPERATOR_PID)); kill -TERM $$pid; \
	  for i in $$(seq 30); do kill -0 $$pid 2>/dev/null || break; sleep 1; done; \
	  kill -0 $$pid 2>/dev/null && kill -KILL $$pid; echo "operator stopped (pid $$pid)"; \
	else echo "operator not running"; fi; rm -f $(OPERATOR_PID) $(OPERATOR_STARTED)

.PHONY: operator-log
operator-log: ## Print the host operator's log path (use with make -s).
	@echo $(OPERATOR_LOG)

e2e-prerequisites: operator-up
