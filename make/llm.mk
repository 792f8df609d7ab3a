# Language models: llama-cpp-python is served by PyPI as an sdist only, and compiling llama.cpp
# takes minutes, so hack/llama-cpp-wheel.sh builds one portable wheel per content key into
# $(CACHE_DIR)/llama-cpp-wheel/ and every install (project venv, runtime venv, image) finds it there.
LLAMA_CPP_WHEEL_SH := env CACHE_DIR=$(CACHE_DIR) HOST_PYTHON=$(HOST_PYTHON) $(REPO_ROOT)/hack/llama-cpp-wheel.sh
# The directory holding the wheel (built first when the cache has none); for pip's --find-links.
LLAMA_CPP_WHEEL_DIR = $$($(LLAMA_CPP_WHEEL_SH))

# The wheel built (or found in the cache), its time printed; `make test` runs it in its builds phase.
.PHONY: llama-cpp-wheel-cached
llama-cpp-wheel-cached:
	@$(TIMED) llama-cpp-wheel bash -c '$(LLAMA_CPP_WHEEL_SH) >/dev/null'

.PHONY: llama-cpp-wheel
llama-cpp-wheel: llama-cpp-wheel-cached ## Build the portable llama-cpp-python wheel once (cached by content) and print its directory.
	@$(LLAMA_CPP_WHEEL_SH)

.PHONY: cache-dir
cache-dir: ## Print the cache directory, where tests keep what they fetch once (use with make -s).
	@echo $(CACHE_DIR)
