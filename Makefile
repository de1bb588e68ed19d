# Two commands matter: `make demo` and `make test` (both run setup first, idempotently).
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test test-slow test-unit test-compiled compiled pure lint format bench bench-perf clean dashboards

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/arb-exporter demo

# Everything but the tests marked slow (pyproject addopts), slowest 15 printed.
test: setup
	$(PY) -m pytest -q --durations=15

# The tests marked slow (minutes each); pytest exits 5 when none is selected: a failure.
test-slow: setup
	$(PY) -m pytest -q --durations=15 -m slow

test-unit: setup
	$(PY) -m pytest -q tests/unit

# Optional build: the analytics compiled with mypyc, in place (`make pure` undoes it).
compiled: setup
	$(PY) scripts/compile_analytics.py

pure: setup
	$(PY) scripts/compile_analytics.py --clean

# The unit tests on the compiled analytics, then back to pure Python (the full suite runs on
# pure Python in `make test`).
test-compiled: setup
	$(PY) scripts/compile_analytics.py
	EXPECT_ANALYTICS_BUILD=compiled $(PY) -m pytest -q tests/unit; rc=$$?; \
		$(PY) scripts/compile_analytics.py --clean; exit $$rc

lint: setup
	$(VENV)/bin/ruff check exporter tests bench grafana prometheus deploy
	$(VENV)/bin/ruff format --check exporter tests bench grafana prometheus deploy
	$(VENV)/bin/mypy --strict exporter

format: setup
	$(VENV)/bin/ruff format exporter tests bench grafana prometheus deploy
	$(VENV)/bin/ruff check --fix exporter tests bench grafana prometheus deploy

dashboards: setup
	$(PY) -W ignore grafana/generate.py

bench: setup
	$(PY) bench/bench_analytics.py

bench-perf: setup  # the performance benchmarks; each prints a table and writes bench/results/*.json
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/bench_scrape.py
	$(PY) bench/bench_latency.py
	$(PY) bench/bench_throughput.py
	$(PY) bench/bench_shards.py --symbols 50 --rate 1200
	$(PY) bench/bench_scale.py
	$(PY) bench/bench_scale.py --raw
	$(PY) bench/profile.py --mode raw
	$(PY) bench/profile.py --mode exporter
	$(PY) bench/profile.py --mode exporter --symbols 200 --rate 10
	$(PY) bench/profile.py --mode exporter --symbols 50 --rate 10 --seconds 20
	$(PY) bench/bench_latency.py --uvloop
	$(PY) bench/bench_throughput.py --uvloop --no-search --reps 3

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
