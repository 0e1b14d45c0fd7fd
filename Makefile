# Entry points for people and CI. `make run` = set-up + the main job; `make test` = the tests.
TARGET ?= v7.3
PROFILE ?= default
# JOBS=N: N guests side by side (pytest-xdist), one run folder. auto: as many as the host
# runs side by side (one per CPU and one more under TCG, one per guest's vCPU count of CPUs under
# KVM, as memory allows, at most 8; README "Several guests side by side"); JOBS=0: one guest, in
# the pytest process itself.
JOBS ?= auto
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-fresh test-slow unit vm lint clean-results

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/fuse-harness run --target $(TARGET) --profile $(PROFILE) -n $(JOBS)

test: setup
	$(PY) -m pytest tests --target $(TARGET) --profile $(PROFILE) -m "not slow" -n $(JOBS)

# The fresh-machine path: the parts that need no kernel build (the Debian source's apt lookup,
# download and extraction, series application, two workers racing for one source) on an empty
# cache made for the run and removed after it. CI runs it before `make test`.
test-fresh: setup
	@fresh=$$(mktemp -d) && trap 'rm -rf "$$fresh"' EXIT && \
	FUSE_HARNESS_CACHE="$$fresh" $(PY) -m pytest tests/series tests/unit/test_source_concurrency.py -n 2 -p no:cacheprovider

test-slow: setup
	$(PY) -m pytest tests/vm --target $(TARGET) --profile $(PROFILE) -m slow

unit: setup
	$(PY) -m pytest tests/unit

vm: setup
	$(PY) -m pytest tests/vm --target $(TARGET) --profile $(PROFILE) -m "not slow" -n $(JOBS)

# The house style is what `ruff check` enforces (pyproject.toml: pycodestyle, pyflakes, isort,
# bugbear, pyupgrade, simplify at 120 columns). No auto-formatter: the wire tables and
# hanging indents are kept by hand, and `ruff format` would rewrite them.
lint: setup
	$(VENV)/bin/ruff check harness guest tests

clean-results:
	rm -rf results
