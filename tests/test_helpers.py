"""The test helpers that guard the suite itself."""

from __future__ import annotations

import threading

import pytest

from tests.helpers import run_in_threads


def test_a_thread_that_never_ends_fails_the_test_in_time() -> None:
    never = threading.Event()
    with pytest.raises(AssertionError, match=r"still running after 0.2 s: worker-1"):
        run_in_threads(lambda wait: never.wait() if wait else "done", [False, True], within=0.2)


def test_results_in_order_and_errors_raised() -> None:
    assert run_in_threads(lambda x: x * 2, [1, 2, 3], within=5) == [2, 4, 6]
    with pytest.raises(ZeroDivisionError):
        run_in_threads(lambda x: 1 // x, [1, 0], within=5)
