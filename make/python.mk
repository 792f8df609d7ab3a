# The project venv (.venv): operator, runtime (editable) and the development tools, in two steps.
# The base has everything PyPI serves as wheels; the second step adds the `llm` extra, whose
# llama-cpp-python wheel is compiled here (hack/llama-cpp-wheel.sh, minutes cold, cached by content).
# `make test` makes the base in its venv phase and the wheel beside the other builds (make/test.mk).
RUNTIME_EXTRAS ?= sklearn,xgboost,lightgbm,onnx,optimize,tensorflow,test
VENV_BASE_STAMP := $(VENV)/.installed-base
VENV_STAMP := $(VENV)/.installed

$(VENV_BASE_STAMP): pyproject.toml runtime-image/pyproject.toml runtime-image/constraints.txt
	@test -x $(PYTHON) || $(HOST_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -c runtime-image/constraints.txt -e '.[dev]' -e './runtime-image[$(RUNTIME_EXTRAS)]'
	@touch $@

$(VENV_STAMP): $(VENV_BASE_STAMP) hack/llama-cpp-wheel.sh
	@$(MAKE) --no-print-directory llama-cpp-wheel-cached
	$(PYTHON) -m pip install -q -c runtime-image/constraints.txt --find-links $(LLAMA_CPP_WHEEL_DIR) \
	  -e './runtime-image[$(RUNTIME_EXTRAS),llm]'
	@touch $@

.PHONY: venv-base
venv-base: $(VENV_BASE_STAMP) ## The project venv without the llm extra (no compiled wheel needed).

.PHONY: venv
venv: $(VENV_STAMP) ## Create or update the project venv (.venv).

.PHONY: lint
lint: $(VENV_STAMP) ## ruff, mypy (strict) and the import contracts (pyproject.toml) over our packages.
	$(VENV)/bin/ruff check operator runtime-image runtime-vllm tests hack
	$(VENV)/bin/ruff format --check operator runtime-image runtime-vllm tests hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo
