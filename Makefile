# Two commands for a fresh machine: `make demo` (set up, build vgg16, build the site) and `make test`
# (set up, lint, test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test bench lint format clean site-assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when the project's metadata changes; torch and torchvision come from the machine's wheels.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-site: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[site]'
	touch $@

# The site's JavaScript (mermaid, tablesort) from the npm registry, pinned by site/package-lock.json;
# `papers site build` copies it into the site, which then needs no network.
site/node_modules/.package-lock.json: site/package.json site/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm)
	cd site && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

site-assets: site/node_modules/.package-lock.json

# The browser tests drive Debian's chromium (playwright's own browser downloads are not used).
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

demo: $(VENV)/.installed-site site-assets
	$(BIN)/papers list
	$(BIN)/papers build vgg16
	$(BIN)/papers check vgg
	$(BIN)/papers check --all > /dev/null  # measures every variant once; the site build reads the cache
	$(BIN)/papers site build

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint site-assets /usr/bin/chromium
	PAPERS_STRICT_PLUGINS=1 $(BIN)/python -m pytest

# run.py's table, then each paper family's own timings (each prints its rows and ratios).
BENCH_SCRIPTS := $(filter-out benchmarks/run.py benchmarks/proxy_sweep.py,$(sort $(wildcard benchmarks/*.py)))

bench: $(VENV)/.installed-bench site-assets
	$(BIN)/python benchmarks/run.py
	for script in $(BENCH_SCRIPTS); do echo "== $$script"; $(BIN)/python $$script || exit 1; done

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
