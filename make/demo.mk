# `make demo`: the main job on the local cluster. hack/demo.sh installs the Helm chart (the operator image
# built here), deploys examples/sklearn-s3.yaml against the local S3 server and prints a prediction,
# then SmolLM2 (GGUF) and its answer to a question.
DEMO_NAMESPACE ?= modelplane-demo
DEMO_RELEASE ?= modelplane
DEMO_RELEASE_NAMESPACE ?= modelplane-system

.PHONY: demo
demo: ## Bring up the local cluster, helm install the operator, deploy a model and print a prediction, then an LLM and its answer.
	@$(TIMED) venv $(MAKE) --no-print-directory venv
	@$(TIMED) cluster-up $(MAKE) --no-print-directory cluster-up
	@$(TIMED) images $(MAKE) --no-print-directory images
	@$(TIMED) demo env DEMO_NAMESPACE=$(DEMO_NAMESPACE) DEMO_RELEASE=$(DEMO_RELEASE) \
	  DEMO_RELEASE_NAMESPACE=$(DEMO_RELEASE_NAMESPACE) hack/demo.sh

.PHONY: demo-down
demo-down: ## Remove what `make demo` installed: its Helm release and its namespace (the host operator stays stopped).
	@$(BIN_DIR)/helm --kubeconfig $(KUBECONFIG_PATH) uninstall $(DEMO_RELEASE) -n $(DEMO_RELEASE_NAMESPACE) --ignore-not-found --wait
	@$(KUBECTL) delete namespace $(DEMO_NAMESPACE) --ignore-not-found --wait=false
