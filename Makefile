# The two commands: `make run` (the default workflow) and `make test` (the test suite).
VENV ?= .venv
CORES ?= 2
# torch/torchvision are installed first and pinned, so pip never swaps in another multi-GB build.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: run test

run: $(VENV)/.installed
	$(VENV)/bin/snakemake --cores $(CORES)
	$(VENV)/bin/snakemake --cores 1 --report results/report.html

# $(CORES) pytest workers (pytest-xdist), each test file on one worker so its module fixtures are built once.
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -n $(CORES) --dist loadfile --durations=15 $(PYTEST_ARGS)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@
