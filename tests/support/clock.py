"""A clock the tests move by hand, for the queue, the engine and the standby drainer: due
times, leases, settle periods and backoff are tested without sleeping."""

from __future__ import annotations

import time


class Clock:
    """Callable like `time.time`; holds still until a test moves it."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
