# `make demo`: the main job on the local cluster. The operator area's hack/demo.sh deploys a model
# and prints a prediction; until it exists, the demo shows the cluster running real pods.
.PHONY: demo
demo: ## Bring up the local cluster, deploy a model and print a prediction.
	@$(TIMED) venv $(MAKE) --no-print-directory venv
	@$(TIMED) cluster-up $(MAKE) --no-print-directory cluster-up
	@$(TIMED) images $(MAKE) --no-print-directory images
	@if [ -x hack/demo.sh ]; then $(TIMED) demo hack/demo.sh; \
	else $(KUBECTL) get nodes -o wide; $(KUBECTL) get pods -A -o wide; fi
