# Set-up is two commands on a fresh machine with Python 3.11 and pip: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test browser page-screenshot bench fuzz clean

install: $(STAMP)

# Reinstall when the dependency list or the pins change; constraints.txt pins every package to the
# versions the tests were run with (jax/jaxlib are pinned in pyproject.toml too).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gradsvc run jobs/*.yaml

test: $(STAMP) $(VENV)/.browser-tried
	$(BIN)/python -m pytest

# Set-up tries the browser once per .venv (the page's test skips, saying why, where it failed).
$(VENV)/.browser-tried: $(STAMP)
	-@$(MAKE) --no-print-directory browser
	@touch $@

# The web page's test (tests/test_service_page.py) drives Debian's chromium through chromedriver,
# and is skipped, saying why, without them. As root, this installs both with apt-get (reading the
# package lists first if apt-get cannot find them); as anyone else it says what to run and fails.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "browser: /usr/bin/chromium and /usr/bin/chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y $(BROWSER_PACKAGES) || \
			{ apt-get update && apt-get install -y $(BROWSER_PACKAGES); }; \
	else \
		echo "browser: run as root (sudo make browser) to apt-get install $(BROWSER_PACKAGES)" >&2; \
		exit 1; \
	fi

# The README's picture of the page: the browser test's screenshot, kept.
page-screenshot: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_service_page.py --keep-page-screenshot

# Peers for the benchmark (torch CPU build) are an extra, not needed to run or test.
$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(VENV)/.bench

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/bench.py

# A long differential-fuzz campaign (random graphs: JAX vs the reference vs finite differences);
# FUZZ_EXAMPLES=N scalar graphs, FUZZ_TENSOR_EXAMPLES=N tensor jobs (each compiles its own
# kernels: a few a second). Prints the campaign's counts (tests/fuzz_report.py).
FUZZ_EXAMPLES ?= 10000
FUZZ_TENSOR_EXAMPLES ?= 2000
fuzz: $(STAMP)
	rm -f .fuzz.jsonl
	GRADSVC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) GRADSVC_FUZZ_TENSOR_EXAMPLES=$(FUZZ_TENSOR_EXAMPLES) \
		GRADSVC_FUZZ_LOG=.fuzz.jsonl $(BIN)/python -m pytest -q tests/test_fuzz.py \
		--hypothesis-show-statistics
	$(BIN)/python tests/fuzz_report.py .fuzz.jsonl

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
