# Benchmarks (tests/bench/). Targets, not tests: they print and record numbers, they assert none.
# `make bench` runs every documented bench-* target of every fragment, so an area adds a benchmark
# just by defining `bench-AREA: ... ## text`.
BENCH_DIR := $(CACHE_DIR)/bench
BENCH_REQUIREMENTS := $(REPO_ROOT)/tests/bench/requirements
BENCH_SERVERS := mlserver kserve
# Extra options for tests/bench/runtime.py, e.g. BENCH_ARGS="--duration 3 --server modelplane".
BENCH_ARGS ?=

# One venv per server under test, from its pinned requirements; rebuilt when those change.
$(BENCH_DIR)/%/.installed: $(BENCH_REQUIREMENTS)/%.txt
	@rm -rf $(BENCH_DIR)/$*
	@mkdir -p $(BENCH_DIR)
	$(HOST_PYTHON) -m venv $(BENCH_DIR)/$*
	nice $(BENCH_DIR)/$*/bin/pip install -q -r $<
	@touch $@

.PHONY: bench-venvs
bench-venvs: $(foreach s,$(BENCH_SERVERS),$(BENCH_DIR)/$(s)/.installed) ## Venvs of the servers we compare against (MLServer, KServe).

.PHONY: bench-tools
bench-tools: ## Install the load generator (wrk, from Debian) if missing.
	@command -v wrk >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
	@command -v taskset >/dev/null || { echo "taskset (util-linux) is missing" >&2; exit 1; }

.PHONY: bench-runtime
bench-runtime: $(VENV_STAMP) bench-venvs bench-tools runtime-venv ## Our runtime vs MLServer, KServe and the uvicorn floor (writes tests/bench/results/runtime.md).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.runtime \
	  --runtime-python $(RUNTIME_VENV)/bin/python \
	  --mlserver-python $(BENCH_DIR)/mlserver/bin/python --kserve-python $(BENCH_DIR)/kserve/bin/python \
	  --work-dir $(BENCH_DIR)/work --results $(REPO_ROOT)/tests/bench/results/runtime.md $(BENCH_ARGS)

# Options for tests/bench/operator_requests.py, e.g. OPERATOR_REQUESTS_ARGS="--label before" (with
# PYTHONPATH pointing at another commit's operator: see the script's docstring).
OPERATOR_REQUESTS_ARGS ?= --label after --count 20

.PHONY: bench-operator-requests
bench-operator-requests: $(VENV_STAMP) images s3 operator-up ## The host operator's API requests (audit log) for 20 ModelDeployments: create, steady, one change, rollout restart, operator start (writes tests/bench/results/operator-requests.md).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.operator_requests $(OPERATOR_REQUESTS_ARGS)

# Options for tests/bench/operator_scale.py, e.g. BENCH_OPERATOR_ARGS="--count 20" (a short run). It starts and
# stops what it needs itself (make cluster-up with raised client rate limits, make kwok, operator-up).
BENCH_OPERATOR_ARGS ?=

.PHONY: bench-operator
bench-operator: $(VENV_STAMP) kwok-binaries ## 1000 ModelDeployments x 2 replicas on KWOK's fake nodes: operator and Ready times, requests per MD, RSS, CPU, quiet and restart writes (writes tests/bench/results/operator.md).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.operator_scale --operator-pid-file $(OPERATOR_PID) \
	  --operator-metrics-port $(OPERATOR_METRICS_PORT) --operator-resync-seconds $(OPERATOR_RESYNC_SECONDS) \
	  --kwok-bin $(KWOK_BIN_DIR)/kwok $(BENCH_OPERATOR_ARGS)

# Extra options for tests/bench/pull.py, e.g. PULL_BENCH_ARGS="--rounds 5".
PULL_BENCH_ARGS ?=

.PHONY: bench-pull
bench-pull: $(VENV_STAMP) s3 ## Pull throughput on the local S3 server: raw GET, download_file, modelplane-runtime pull (writes tests/bench/results/pull.md).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.pull --work-dir $(BENCH_DIR)/pull \
	  --weed-pid-file $(CACHE_DIR)/s3/weed.pid --results $(REPO_ROOT)/tests/bench/results/pull.md $(PULL_BENCH_ARGS)

# Where our runtime's time goes under load, e.g.
#   make bench-profile PROFILE_ARGS='--workload "RF 100x20 v2" --concurrency 64'
PROFILE_ARGS ?=
.PHONY: bench-profile
bench-profile: $(VENV_STAMP) $(BENCH_DIR)/profile/.installed bench-tools runtime-venv ## py-spy profile of our runtime under wrk (PROFILE_ARGS=...; not part of make bench).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.runtime_profile --runtime-python $(RUNTIME_VENV)/bin/python \
	  --py-spy $(BENCH_DIR)/profile/bin/py-spy --work-dir $(BENCH_DIR)/work $(PROFILE_ARGS)

.PHONY: bench
bench: ## Every benchmark (each documented bench-* target).
	@targets=$$(grep -hoE '^bench-[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | cut -d: -f1 | \
	  grep -vxE 'bench-venvs|bench-tools|bench-profile' | sort -u); \
	for t in $$targets; do echo "== make $$t"; $(MAKE) --no-print-directory $$t; done

# llama-cpp-python's own server, from the same cached wheel our runtime uses (PyPI has only its sdist).
LLAMA_CPP_SERVER_VENV := $(BENCH_DIR)/llama-cpp-server
$(LLAMA_CPP_SERVER_VENV)/.installed: $(BENCH_REQUIREMENTS)/llama-cpp-server.txt hack/llama-cpp-wheel.sh
	@rm -rf $(LLAMA_CPP_SERVER_VENV)
	@mkdir -p $(BENCH_DIR)
	$(HOST_PYTHON) -m venv $(LLAMA_CPP_SERVER_VENV)
	nice $(LLAMA_CPP_SERVER_VENV)/bin/pip install -q --find-links $(LLAMA_CPP_WHEEL_DIR) -r $<
	@touch $@

# Extra options for tests/bench/llm.py, e.g. LLM_BENCH_ARGS="--concurrency 1 4 --server modelplane".
LLM_BENCH_ARGS ?=

.PHONY: bench-llm
bench-llm: $(VENV_STAMP) $(LLAMA_CPP_SERVER_VENV)/.installed bench-tools ## The built-in LLM engine vs llama_cpp.server on SmolLM2: tokens/s, TTFT, ITL (writes tests/bench/results/llm.md).
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.llm --runtime-python $(PYTHON) \
	  --llama-cpp-python $(LLAMA_CPP_SERVER_VENV)/bin/python --work-dir $(BENCH_DIR)/llm \
	  --results $(REPO_ROOT)/tests/bench/results/llm.md $(LLM_BENCH_ARGS)

# Extra options for tests/bench/llm_vllm.py, e.g. LLM_VLLM_BENCH_ARGS="--rounds 1 --concurrency 1 4".
LLM_VLLM_BENCH_ARGS ?=

# Issue 12's row (c), apart from bench-llm so that bench-llm runs without the vLLM image: the cluster,
# the S3 server, the runtime-vllm image (built first if the node lacks it) and the host operator.
.PHONY: bench-llm-vllm
bench-llm-vllm: $(VENV_STAMP) images s3 ## vLLM through a ModelDeployment vs the same vLLM as a plain pod, tiny llama: tokens/s, TTFT, ITL (writes tests/bench/results/llm-vllm.md).
	@$(MAKE) --no-print-directory runtime-vllm-image
	@$(MAKE) --no-print-directory operator-up
	cd $(REPO_ROOT) && $(PYTHON) -m tests.bench.llm_vllm --work-dir $(BENCH_DIR)/llm-vllm \
	  --results $(REPO_ROOT)/tests/bench/results/llm-vllm.md $(LLM_VLLM_BENCH_ARGS)
