# Quickstart: `make demo` (set up, index the demo corpus, answer a query) and `make test`.
# Both create .venv on first use and skip the install when nothing it depends on changed.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline and quiet (see ../shared/notes/stack.md). The Prefect home is the one the ragops commands use
# from any shell: $PREFECT_HOME, by default Prefect's own ~/.prefect; the test suite keeps one of its own.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export RAGAS_DO_NOT_TRACK := true
export SCARF_NO_ANALYTICS := true
export UNSTRUCTURED_DISABLE_NOTICE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo lint test test-fast test-long deploy server worker corpus lock clean bench-deps

install: $(STAMP)

# torch first and exactly: anything looser pulls CUDA wheels. unstructured-inference without its
# dependencies: they drag timm -> torchvision, which breaks sentence-transformers (stack.md).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps unstructured-inference==1.6.14
	touch $(STAMP)

demo: install
	$(BIN)/ragops reindex --config demo/ragops.yaml
	$(BIN)/ragops query --config demo/ragops.yaml -k 3 "How do I undo a bad promotion?"

# ruff with the rules in pyproject.toml ([tool.ruff]); .ci/run runs it before the tests.
lint: install
	$(BIN)/ruff check .

# Two pytest workers (pytest-xdist), one test file per worker at a time: most of the suite's time is
# process starts and waits, so two workers on 2 cores take ~10 min instead of ~16. PYTEST_WORKERS=0: serial.
# The fault scenarios (marker `long`: kills at every stage, a full disk, S3 faults) take ~4 more minutes:
# `make test-long` runs them, and CI runs both.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
test test-fast test-long: export PREFECT_HOME = $(CURDIR)/.ragops/prefect-test
test: install
	$(BIN)/python -m pytest $(XDIST) -m "not long"

test-long: install
	$(BIN)/python -m pytest $(XDIST) -m long

# The quick loop: the tests with neither marker, so no real model, no Prefect flow and no fault scenario.
test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not long"

# Register the work pool and every deployment of prefect.yaml against $PREFECT_API_URL. Starts nothing:
# run a worker yourself (`make worker`, docs/operations.md).
deploy: install
	@test -n "$$PREFECT_API_URL" || { echo "set PREFECT_API_URL to your Prefect server (e.g. http://127.0.0.1:4200/api)"; exit 2; }
	$(BIN)/prefect work-pool inspect ragops-process >/dev/null 2>&1 || $(BIN)/prefect work-pool create ragops-process --type process
	cd $(CURDIR) && PWD=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all

# A local Prefect server and a worker for the deployments, with the offline environment above (no
# telemetry from the server, the CLI or the flow runs the worker starts).
server: install
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

worker: install
	@test -n "$$PREFECT_API_URL" || { echo "set PREFECT_API_URL to your Prefect server (e.g. http://127.0.0.1:4200/api)"; exit 2; }
	$(BIN)/prefect worker start --pool ragops-process

# Regenerate demo/corpus from demo/make_corpus.py (the files are committed).
corpus: install
	$(BIN)/python demo/make_corpus.py

# bench/ingest.py's LlamaIndex comparison only (the bench extra); the project itself never needs it.
bench-deps: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'

# Re-lock every transitive version after changing pyproject.toml dependencies.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -vE '^(torch|unstructured-inference)==' > constraints.txt

clean:
	rm -rf $(VENV) .ragops .pytest_cache .ruff_cache
