# Two commands, on a fresh Debian host, as root:
#   make run    set up and start the execve tracker (ARGS="-interval 5" to pass options)
#   make test   set up and run every test (kernel tests load real programs)
#   make bench  run the benchmarks and rewrite bench/README.md from what they print
#   make mutate mutation testing: which planted bugs do the tests miss?
PYTHON ?= python3
ARGS ?=

.PHONY: run test bench mutate setup setup-test generate lint

setup:
	PYTHON=$(PYTHON) sh tools/setup.sh

setup-test:
	PYTHON=$(PYTHON) sh tools/setup.sh --test

run: setup
	$(PYTHON) -m programs.execve $(ARGS)

test: setup-test
	$(PYTHON) -m pytest -rsxX $(ARGS)

bench: setup-test
	$(PYTHON) bench/run_all.py

# Rebuild every generated file: the struct layouts (from pybpf/attrs.py) and the helper ids
# (from the running kernel's BTF). The tests fail when either is stale.
generate:
	$(PYTHON) tools/gen_layouts.py > pybpf/layouts.py.tmp && mv pybpf/layouts.py.tmp pybpf/layouts.py
	$(PYTHON) tools/gen_helpers.py > pybpf/helpers.py.tmp && mv pybpf/helpers.py.tmp pybpf/helpers.py

lint: setup-test
	if $(PYTHON) -m ruff --version >/dev/null 2>&1; then $(PYTHON) -m ruff check .; else ruff check .; fi

# mutation testing of the core modules, a time budget per module (ARGS="--budget 300 pybpf/maps.py")
mutate: setup-test
	$(PYTHON) tools/mutate.py $(ARGS)
