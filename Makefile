# Two commands do all set-up on a fresh machine:
#   make train   install, then train + evaluate the default SASRec on ML-1M (prints the test metrics; at most 85
#                minutes of training, configs/ml-1m-sasrec.yaml's train.time_budget_min)
#   make test    install, then lint, type-check, install redis-server if missing, run the test suite (what CI runs)
# and one short check beside them:
#   make demo    install, then the same pipeline on ML-100k (configs/ml-100k-sasrec-demo.yaml; under a minute)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first and explicitly: a loose `torch` requirement would otherwise
# pull a multi-GB CUDA build. Override for a GPU machine, e.g. TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0
# Datasets resolve from $LONGREC_DATA_DIR, else the cache, else a verified download; ../shared/data if present.
SHARED_DATA := $(abspath ../shared/data)
export LONGREC_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
RUN ?= runs/ml-1m-sasrec-$(shell date +%Y%m%d-%H%M%S)
DEMO_RUN ?= runs/ml-100k-sasrec-demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup train demo test lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

train: setup
	$(BIN)/longrec train configs/ml-1m-sasrec.yaml --run-dir $(RUN)

demo: setup
	$(BIN)/longrec train configs/ml-100k-sasrec-demo.yaml --run-dir $(DEMO_RUN)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# the Redis store's tests need a redis-server binary (they start their own): installed here when missing
test: lint
	bash scripts/ensure-redis.sh
	$(BIN)/python -m pytest
