# Modelplane. `make help` lists the targets; each area keeps its own fragment in make/*.mk.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
# Everything built or downloaded lives outside the repo, so a fresh clone reuses a warm cache.
CACHE_DIR ?= $(HOME)/.cache/modelplane
BIN_DIR := $(CACHE_DIR)/bin
VENV := $(REPO_ROOT)/.venv
PYTHON := $(VENV)/bin/python
HOST_PYTHON ?= python3
# `hack/timed` prints how long each phase took; CI reads these lines.
TIMED := $(REPO_ROOT)/hack/timed

include $(sort $(wildcard $(REPO_ROOT)/make/*.mk))

.PHONY: help
help: ## List the targets with what they do.
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort -u | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'
