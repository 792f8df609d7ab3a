# `make demo`: the main job on the local cluster. hack/demo.sh installs the Helm chart (the operator image
# built here), deploys examples/sklearn-s3.yaml against the local S3 server, offers it through the Gateway
# (make gateway) to one consumer and prints its external URL, a prediction made with the consumer's key
# and the 401 without one, then SmolLM2 (GGUF) and its answer to a question.
DEMO_NAMESPACE ?= modelplane-demo
DEMO_RELEASE ?= modelplane
DEMO_RELEASE_NAMESPACE ?= modelplane-system
DEMO_CONSUMER_NAMESPACE ?= modelplane-demo-consumers

.PHONY: demo
demo: ## Bring up the local cluster, helm install the operator, offer a model through the Gateway with an API key and print a prediction, then an LLM and its answer.
	@$(TIMED) venv $(MAKE) --no-print-directory venv
	@$(TIMED) cluster-up $(MAKE) --no-print-directory cluster-up
	@$(TIMED) images $(MAKE) --no-print-directory images
	@$(TIMED) gateway $(MAKE) --no-print-directory gateway
	@$(TIMED) demo env DEMO_NAMESPACE=$(DEMO_NAMESPACE) DEMO_RELEASE=$(DEMO_RELEASE) \
	  DEMO_RELEASE_NAMESPACE=$(DEMO_RELEASE_NAMESPACE) DEMO_CONSUMER_NAMESPACE=$(DEMO_CONSUMER_NAMESPACE) hack/demo.sh

.PHONY: demo-down
demo-down: ## Remove what `make demo` installed: its Helm release and its namespaces (the host operator stays stopped; the Gateway stays).
	@$(BIN_DIR)/helm --kubeconfig $(KUBECONFIG_PATH) uninstall $(DEMO_RELEASE) -n $(DEMO_RELEASE_NAMESPACE) --ignore-not-found --wait
	@$(KUBECTL) delete namespace $(DEMO_NAMESPACE) $(DEMO_CONSUMER_NAMESPACE) --ignore-not-found --wait=false
