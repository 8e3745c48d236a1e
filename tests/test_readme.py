"""The README's example runs and prints what it says it prints."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.kernel
def test_readme_python_example_counts_three_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    assert out.getvalue() == "3\n"


@pytest.mark.kernel
def test_readme_ring_buffer_example_prints_its_records_and_no_drops():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    # skb->len of a 64-byte test run is 50: the kernel pulls the 14-byte Ethernet header
    assert out.getvalue() == "50\n50\n50\n0\n"
