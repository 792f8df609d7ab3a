# The project venv (.venv): operator, runtime (editable) and the development tools.
RUNTIME_EXTRAS ?= sklearn,xgboost,lightgbm,onnx,llm,tensorflow,test
VENV_STAMP := $(VENV)/.installed

$(VENV_STAMP): pyproject.toml runtime-image/pyproject.toml runtime-image/constraints.txt hack/llama-cpp-wheel.sh
	@test -x $(PYTHON) || $(HOST_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	@$(TIMED) llama-cpp-wheel $(LLAMA_CPP_WHEEL_SH) >&2  # the phase time shows; the directory is read below
	$(PYTHON) -m pip install -q -c runtime-image/constraints.txt --find-links $(LLAMA_CPP_WHEEL_DIR) \
	  -e '.[dev]' -e './runtime-image[$(RUNTIME_EXTRAS)]'
	@touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## Create or update the project venv (.venv).

.PHONY: lint
lint: $(VENV_STAMP) ## ruff, mypy (strict) and the import contracts (pyproject.toml) over our packages.
	$(VENV)/bin/ruff check operator runtime-image tests hack
	$(VENV)/bin/ruff format --check operator runtime-image tests hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo
