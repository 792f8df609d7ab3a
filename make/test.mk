PYTEST := $(VENV)/bin/pytest
PYTEST_ARGS ?=

.PHONY: test
test: ## Every test, unit and end-to-end (sets up whatever it needs on a fresh machine).
	@$(TIMED) "make test (total)" $(MAKE) --no-print-directory test-phases

.PHONY: test-phases
test-phases:
	@$(TIMED) venv $(MAKE) --no-print-directory venv-base
	@$(TIMED) builds $(MAKE) --no-print-directory builds venv
	@$(TIMED) lint $(MAKE) --no-print-directory lint
	@$(TIMED) unit-tests $(MAKE) --no-print-directory test-unit
	@$(TIMED) e2e-prerequisites $(MAKE) --no-print-directory e2e-prerequisites
	@$(TIMED) e2e-tests $(MAKE) --no-print-directory test-e2e

.PHONY: test-unit
test-unit: $(VENV_STAMP) ## Unit tests only (no cluster).
	$(PYTEST) -m "not e2e and not heavy" $(PYTEST_ARGS)

# The e2e tests mostly wait on the cluster (pods starting, rollouts, autoscalers), so two run at once,
# each module on one worker (its module fixtures once); the ones marked `exclusive` stop or replace what
# the others share (pyproject's markers) and run after, one at a time. Both sets run whatever the first
# gives; pytest's 5 (no test selected, e.g. PYTEST_ARGS naming one file) is not a failure.
E2E_WORKERS ?= 2

.PHONY: test-e2e
test-e2e: $(VENV_STAMP) ## End-to-end tests on the local cluster: E2E_WORKERS at a time, then the exclusive ones alone.
	@rc=0; \
	$(TIMED) "e2e-tests beside each other ($(E2E_WORKERS) workers)" \
	  $(PYTEST) -m "e2e and not heavy and not exclusive" -n $(E2E_WORKERS) --dist loadfile $(PYTEST_ARGS); \
	r=$$?; [ $$r -eq 0 ] || [ $$r -eq 5 ] || rc=$$r; \
	$(TIMED) "e2e-tests one at a time (exclusive)" $(PYTEST) -m "e2e and not heavy and exclusive" $(PYTEST_ARGS); \
	r=$$?; [ $$r -eq 0 ] || [ $$r -eq 5 ] || rc=$$r; \
	exit $$rc

.PHONY: test-heavy
test-heavy: $(VENV_STAMP) ## Tests that need torch (pytorch, huggingface formats; installs several GB), then test-heavy-e2e.
	$(PYTHON) -m pip install -q -c runtime-image/constraints.txt -e './runtime-image[pytorch,huggingface]'
	$(PYTEST) -m "heavy and not e2e" $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-heavy-e2e

# The vLLM image is several GB (a 2.6 GB wheelhouse, a venv of about 4.9 GB before trimming, and
# buildah's vfs storage copies layers whole), too much for make test's disk and time: built only here.
.PHONY: test-heavy-e2e
test-heavy-e2e: e2e-prerequisites ## End-to-end tests of the heavy images (vLLM): builds runtime-vllm first.
	@$(MAKE) --no-print-directory runtime-vllm-image
	$(PYTEST) -m "e2e and heavy" $(PYTEST_ARGS)

# Everything cached that a cold machine must build, two at a time: the base image's debootstrap and
# the wheel downloads wait on the network, and the image builds on the disk, while the Go builds and
# llama.cpp's compile use the CPU.
# Warm, each is a no-op. Before the unit tests, which use helm and promtool, and before lint and the
# project venv's `llm` extra, which need the llama-cpp-python wheel (`make test` runs `venv` after).
.PHONY: builds
builds: ## Build (or find cached) the cluster, harness and image inputs, two jobs at a time.
	@$(MAKE) --no-print-directory -j2 -Oline llama-cpp-wheel-cached image-inputs cluster-binaries helm prometheus \
	  crds addon-binaries keda-binaries image-archives fake-gcs-server gateway-binaries kube-router

# Areas append what their e2e tests need built and started (cluster, images, s3, ...).
.PHONY: e2e-prerequisites
e2e-prerequisites:
