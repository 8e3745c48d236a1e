"""Shared fixtures: the ``kernel`` and ``oracle`` markers and how they skip (or fail in CI)."""

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI") == "true"


def _skip_or_fail(reason):
    """Skip with ``reason``; under CI=true a missing capability or tool fails the test instead."""
    if IN_CI:
        pytest.fail(f"CI=true, so this must run: {reason}", pytrace=False)
    pytest.skip(reason)


_bpf_state = {}


def bpf_unavailable_reason():
    """None if bpf() works here (a tiny array map can be created), else why not."""
    if "reason" not in _bpf_state:
        reason = None
        try:
            from pybpf import syscalls
            from pybpf.abi import MapType

            fd = syscalls.map_create(MapType.ARRAY, 4, 4, 1)
            os.close(fd)
        except Exception as exc:  # any failure means: no usable bpf() here
            reason = f"bpf() is not usable here: {exc}"
        _bpf_state["reason"] = reason
    return _bpf_state["reason"]


def require_tool(name):
    """The path of an oracle tool (llvm-mc, llvm-objdump, clang, bpftool, bpftrace) or skip."""
    path = shutil.which(name)
    if path is None:
        _skip_or_fail(f"{name} is not installed (apt-get install llvm clang bpftool bpftrace)")
    return path


@pytest.fixture(autouse=True)
def _kernel_marker(request):
    if request.node.get_closest_marker("kernel") is not None:
        reason = bpf_unavailable_reason()
        if reason:
            _skip_or_fail(reason)


@pytest.fixture
def bpffs(tmp_path):
    """A private bpf file system (for pinning) mounted for this test only."""
    path = tmp_path / "bpffs"
    path.mkdir()
    if subprocess.run(["mount", "-t", "bpf", "bpf", str(path)]).returncode != 0:
        _skip_or_fail("cannot mount a bpf file system here (needs root)")
    yield path
    subprocess.run(["umount", str(path)], check=True)
