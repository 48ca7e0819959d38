# Two commands: `make run` starts the whole stack, `make test` runs lint and the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format clean browser bench screenshots

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_stack.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Debian's Chromium for the browser tests (tests/test_browser.py), installed once when missing,
# with a Korean font (the search page's screenshots show Korean titles). Playwright's own browser
# download is not used. Without root the browser tests are skipped.
CHROMIUM ?= /usr/bin/chromium
BROWSER_PACKAGES := chromium fonts-nanum
browser:
	@if [ -x "$(CHROMIUM)" ] && [ -d /usr/share/fonts/truetype/nanum ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "==> installing $(BROWSER_PACKAGES) for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		echo "==> installing $(BROWSER_PACKAGES) for the browser tests"; \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	elif [ -x "$(CHROMIUM)" ]; then \
		echo "==> no Korean font and no root to install fonts-nanum: screenshots show boxes for it"; \
	else \
		echo "==> no chromium and no root to install it: the browser tests will be skipped"; \
	fi

# The tests of the rush, settlement, expiry, rebuild, seats, waiting room and buckets again, with
# the inventory on a Redis Cluster of three primaries the suite starts (CLUSTER_TESTS= skips them);
# test_failover.py starts its own, each primary with a replica, and kills primaries.
CLUSTER_TESTS ?= tests/test_rush.py tests/test_pipeline.py tests/test_safety_net.py \
	tests/test_invariants.py tests/test_seats.py tests/test_seat_rush.py tests/test_waiting_room.py \
	tests/test_waiting_room_rush.py tests/test_hot_path.py tests/test_metrics.py \
	tests/test_scheduler.py tests/test_payment_paths.py tests/test_buckets.py \
	tests/test_bucket_properties.py tests/test_cluster.py tests/test_room_passes.py \
	tests/test_failover.py
test: lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(if $(strip $(CLUSTER_TESTS)),TEST_INVENTORY_REDIS=cluster $(BIN)/python -m pytest $(PYTEST_ARGS) $(CLUSTER_TESTS))

# The pages' pictures in docs/screenshots/, taken by the browser tests (which `make test` runs too,
# leaving them in build/screenshots/ without touching the tracked copies).
screenshots: $(STAMP) browser
	$(BIN)/python -m pytest -q tests/test_browser.py
	cp build/screenshots/*.png docs/screenshots/

# The benchmark (BENCHMARKS.md): wrk from Debian, matplotlib and tqdm from PyPI.
bench: $(STAMP)
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends wrk; fi; }
	$(BIN)/pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.rush $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache flashsale.db* build
