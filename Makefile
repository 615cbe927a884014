# The two commands in README.md:  `make demo`  and  `make test`.
# Both create ./.venv on first use (Python 3.11, pinned torch/torchvision) and need no GPU.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cxraug-installed

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@# umap-learn's import compiles pynndescent's numba kernels (about 20 s on 2 cores) into numba's cache
	@# in the venv: done once here, at install, instead of in the first test or demo that draws a UMAP
	$(BIN)/python -c "import umap"
	@touch $(STAMP)

.PHONY: install demo test lint bench
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cxraug demo

# pytest exits 5 when it collected no tests (e.g. `make test PYTEST_ARGS="-k nothing"`): not a failure.
test: $(STAMP)
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): treated as success"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/time_to_fid.py
