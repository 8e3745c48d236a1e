# Two commands, on a fresh Debian host, as root:
#   make run    set up and start the execve tracker (ARGS="-interval 5" to pass options)
#   make test   set up and run every test (kernel tests load real programs)
PYTHON ?= python3
ARGS ?=

.PHONY: run test bench setup setup-test

setup:
	PYTHON=$(PYTHON) sh tools/setup.sh

setup-test:
	PYTHON=$(PYTHON) sh tools/setup.sh --test

run: setup
	$(PYTHON) -m programs.execve $(ARGS)

test: setup-test
	$(PYTHON) -m pytest -rs $(ARGS)

bench: setup-test
	$(PYTHON) bench/run_all.py
