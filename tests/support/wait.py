"""Polling, the one way tests wait for something another thread or process does."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes; return
    its last value (falsy on timeout), for tests that assert on it themselves."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(cond, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Like ``wait_until``, but a timeout is a failure naming ``what``; returns the value."""
    value = wait_until(cond, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value
