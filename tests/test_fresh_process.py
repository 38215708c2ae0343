"""The benchmarks' one way to run a row in a clean process."""

import os

import pytest

from grape_instances.core.fresh_process import in_fresh_process


def test_runs_in_another_process_and_returns_its_result():
    assert in_fresh_process(os.getpid) != os.getpid()
    assert in_fresh_process(divmod, 7, 2) == (3, 1)


def test_the_child_exception_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="not a number"):
        in_fresh_process(int, "not a number")
