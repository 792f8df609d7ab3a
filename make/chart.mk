# The Helm chart (charts/modelplane): its CRD copy is generated from crds/ (tests/chart checks they match).
CHART_DIR := $(REPO_ROOT)/charts/modelplane

.PHONY: chart-crds
chart-crds: ## Copy crds/*.yaml into the chart (charts/modelplane/files/crds), the chart's only CRD source.
	@rm -f $(CHART_DIR)/files/crds/*.yaml
	@cp $(REPO_ROOT)/crds/*.yaml $(CHART_DIR)/files/crds/
	@echo "chart CRDs updated from crds/: $$(cd $(CHART_DIR)/files/crds && ls *.yaml | tr '\n' ' ')"

.PHONY: chart-lint
chart-lint: helm ## helm lint the chart.
	@$(BIN_DIR)/helm lint --strict $(CHART_DIR)

# The CRD's other generated copy: the field reference (tests/docs checks it matches the CRD).
.PHONY: crd-reference
crd-reference: $(VENV_STAMP) ## Write docs/crd-reference.md from crds/ and hack/crd-reference-examples.yaml.
	@$(PYTHON) $(REPO_ROOT)/hack/crd-reference.py
