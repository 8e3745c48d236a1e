"""Fixtures and hooks: the ``kernel`` marker's check, a private bpffs, the CI banner.

Helpers for the test files live in ``support.py``; nothing here is imported by a test.
Every test has a time limit (pytest-timeout, ``timeout`` in pyproject.toml, a required
plugin), so a bug that makes a test wait forever is a failure, not a hung run.
"""

import os
import subprocess

import pytest
from hypothesis import settings

from support import bpf_unavailable_reason, in_ci, skip_or_fail

# Under CI the property tests draw their cases from a fixed seed (derandomize), so that a red
# run comes from a change, not from the draw; outside CI each run draws fresh cases, and the
# fuzzers in bench/ search with fresh seeds for 20,000 cases each.
settings.register_profile("ci", derandomize=True)
if in_ci():
    settings.load_profile("ci")


def pytest_report_header(config):
    """Say at the top of the run whether a missing capability or tool fails or skips."""
    ci = os.environ.get("CI")
    if in_ci():
        return (f"CI={ci!r}: kernel and oracle tests must run (missing tools or bpf() fail); "
                "property tests draw from a fixed seed")
    return f"CI={ci!r}: not CI, kernel and oracle tests skip where bpf() or a tool is missing"


@pytest.fixture(autouse=True)
def _kernel_marker(request):
    if request.node.get_closest_marker("kernel") is not None:
        reason = bpf_unavailable_reason()
        if reason:
            skip_or_fail(reason)


@pytest.fixture
def bpffs(tmp_path):
    """A private bpf file system (for pinning) mounted for this test only."""
    path = tmp_path / "bpffs"
    path.mkdir()
    if subprocess.run(["mount", "-t", "bpf", "bpf", str(path)]).returncode != 0:
        skip_or_fail("cannot mount a bpf file system here (needs root)")
    yield path
    subprocess.run(["umount", str(path)], check=True)
