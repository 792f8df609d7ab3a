# Container images, built with buildah from a locally made base and imported into the node.
IMAGES_SH := $(CLUSTER_ENV) $(CLUSTER_HACK)/images.sh
IMAGES_LOCK := flock -o $(CACHE_DIR)/.images.lock

.PHONY: images
images: cluster-up ## Build every image of the repo (tagged by content hash) into the node's containerd.
	@$(IMAGES_LOCK) env $(IMAGES_SH) build

.PHONY: image
image: cluster-up ## Build one image: make image NAME=runtime
	@$(IMAGES_LOCK) env $(IMAGES_SH) build $(NAME)

# The vLLM image (several GB: see docs/formats.md), built only by the targets that run it
# (make test-heavy-e2e, make bench-llm-vllm), never by make images.
.PHONY: runtime-vllm-image
runtime-vllm-image: cluster-up ## Build the runtime-vllm image into the node (its build time printed).
	@$(TIMED) runtime-vllm-image $(IMAGES_LOCK) env $(IMAGES_SH) build runtime-vllm

.PHONY: image-inputs
# After the llama-cpp-python wheel (the runtime's wheelhouse includes it), so that in `make builds`
# it never holds a job slot waiting for that compile.
image-inputs: host-packages llama-cpp-wheel-cached ## Make the base image and the wheelhouses (no cluster needed; cached).
	@$(TIMED) image-inputs $(IMAGES_LOCK) env $(IMAGES_SH) inputs

.PHONY: image-archives
# In `make builds`, beside the Go compiles: the image builds mostly copy files (buildah's vfs store) and
# unpack wheels, so they overlap the CPU-bound compiles well; the cluster then only imports them.
image-archives: image-inputs ## Build every image into an OCI archive before the cluster is up (skips what the node has; make images imports them).
	@$(TIMED) image-archives $(IMAGES_LOCK) env $(IMAGES_SH) archives

.PHONY: image-ref
image-ref: ## Print the current reference of an image: make -s image-ref NAME=runtime
	@$(IMAGES_SH) ref $(NAME)

e2e-prerequisites: images
