"""The test suite's own rules: what counts as CI (where a missing tool fails, not skips)."""

import pytest

from support import in_ci


@pytest.mark.parametrize("value", ["true", "1", "yes", "True", "on", "github-actions"])
def test_any_set_ci_value_means_ci(value):
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", [None, "", "false", "0", "no", "FALSE", "off", " "])
def test_unset_empty_or_false_ci_is_not_ci(value):
    assert not in_ci({} if value is None else {"CI": value})
