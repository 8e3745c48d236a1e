"""The test suite's own rules: what counts as CI (where a missing tool fails, not skips), and
that a background process does not outlive its test."""

import subprocess

import pytest

from support import Background, in_ci


@pytest.mark.parametrize("value", ["true", "1", "yes", "True", "on", "github-actions"])
def test_any_set_ci_value_means_ci(value):
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", [None, "", "false", "0", "no", "FALSE", "off", " "])
def test_unset_empty_or_false_ci_is_not_ci(value):
    assert not in_ci({} if value is None else {"CI": value})


class Sleeper(Background):
    def __init__(self):
        self.proc = subprocess.Popen(["sleep", "600"])


def test_leaving_a_background_block_kills_its_process_even_on_an_error():
    with pytest.raises(RuntimeError):
        with Sleeper() as sleeper:
            raise RuntimeError("the test failed here")
    assert sleeper.proc.returncode == -9  # SIGKILL, and reaped
    with Sleeper() as finished:
        finished.proc.kill()
        finished.proc.wait()
    assert finished.proc.returncode == -9
